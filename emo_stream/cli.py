"""``emo-stream``: the command-line entry point.

User errors (bad paths, bad configs, missing model packages, outputs that would
overwrite an input, writes the disk refuses) print one line
``emo-stream: error: ...`` and exit 2; Ctrl-C / SIGTERM end the stream cleanly
(exit 130 / 143 after the sinks are closed), and while models load they stop the
command with one line (the handlers are installed before anything loads).
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Callable, Iterator, Sequence

from emo_stream import __version__
from emo_stream.errors import EmoStreamError

Command = Callable[[argparse.Namespace], int]


def _add_run(sub: argparse._SubParsersAction) -> None:
    from emo_stream.engines import engine_names
    from emo_stream.labels import LABEL_SETS

    p = sub.add_parser(
        "run",
        help="stream a file, camera or microphone through an engine and emit emotion states",
        description="Stream an input through the pipeline; print one line per state and optionally write JSONL.",
    )
    p.add_argument("--input", "-i", required=True, help="media file path, 'camera', 'camera:N' or 'camera:URL'")
    p.add_argument("--mic", default=None, help="microphone (device index or name substring) to pair with a camera")
    p.add_argument("--mic-backend", default="pyaudio", choices=["pyaudio", "sounddevice"])
    p.add_argument("--jsonl", type=Path, default=None, help="write states as JSON lines to this file")
    p.add_argument("--config", type=Path, default=None, help="YAML stream config (see configs/default.yaml)")
    p.add_argument("--engine", default=None, choices=engine_names(), help="engine (overrides the config)")
    p.add_argument("--label-set", default=None, choices=sorted(LABEL_SETS), help="label set (overrides the config)")
    p.add_argument("--weights", default=None, help="model directory for engines that take weights (emotion-llama)")
    p.add_argument("--export", default=None, metavar="DIR", help="run an exported model directory (see emo-stream export)")
    p.add_argument(
        "--option", "-o", action="append", default=[], metavar="KEY=VALUE",
        help="engine option (value parsed as YAML), e.g. -o asr=off -o tiny=true; repeatable",
    )
    p.add_argument("--window", type=float, default=None, help="window length W in seconds")
    p.add_argument("--hop", type=float, default=None, help="hop H in seconds (one state per hop)")
    p.add_argument("--realtime", action="store_true", help="pace a file at its media rate, like a live camera")
    p.add_argument("--max-states", type=int, default=None, help="stop after this many states")
    p.add_argument("--quiet", "-q", action="store_true", help="do not print a line per state")
    p.set_defaults(func=_cmd_run)


def parse_assignments(items: Sequence[str], flag: str, key_name: str = "KEY", parse: Callable[[str], object] = str) -> dict:
    """``["a=1", "b=x"]`` -> ``{"a": parse("1"), "b": parse("x")}``; malformed items are a one-line error."""
    from emo_stream.errors import ConfigError

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} expects {key_name}=VALUE, got {item!r}")
        out[key.strip()] = parse(value)
    return out


def config_from_args(args: argparse.Namespace):
    """The stream config from ``--config`` plus command-line overrides (shared by run, demo ...)."""
    import yaml

    from emo_stream.config import StreamConfig

    cfg = StreamConfig.from_yaml(args.config) if args.config else StreamConfig()
    window = {k: v for k, v in (("length_s", args.window), ("hop_s", args.hop)) if v is not None}
    engine = {k: v for k, v in (("name", args.engine), ("label_set", args.label_set)) if v is not None}
    options = {**cfg.engine.options, **parse_assignments(args.option, "--option", parse=yaml.safe_load)}
    if getattr(args, "weights", None):
        options["weights"] = args.weights
    if getattr(args, "export", None):
        # Exported artifacts run on the same engine logic through ONNX Runtime / llama.cpp.
        options["export"] = str(args.export)
        if engine.get("name", cfg.engine.name) in ("default", "emotion-llama"):
            engine["name"] = "emotion-llama-export"
    if options != dict(cfg.engine.options):
        engine["options"] = options
    source = {"realtime": True} if getattr(args, "realtime", False) else {}
    if window:
        # Keep the history long enough for the requested window.
        length = window.get("length_s", cfg.window.length_s) + window.get("hop_s", cfg.window.hop_s)
        cfg = cfg.replace(buffers={"history_s": max(cfg.buffers.history_s, length)})
    return cfg.replace(window=window, engine=engine, source=source)


def _cmd_run(args: argparse.Namespace) -> int:
    from emo_stream.engines import make_engine
    from emo_stream.outputs import check_writable, refuse_alias
    from emo_stream.stream.pipeline import Pipeline
    from emo_stream.stream.sinks import JsonlSink, StdoutSink
    from emo_stream.stream.sources.factory import open_sources

    if args.max_states is not None and args.max_states < 1:
        from emo_stream.errors import ConfigError

        raise ConfigError(f"--max-states must be >= 1, got {args.max_states}")
    # Before anything is opened for writing: --jsonl X must never truncate the input X.
    refuse_alias({"--jsonl": args.jsonl}, {"--input": args.input, "--config": args.config})
    if args.jsonl:
        check_writable(args.jsonl)  # an unwritable path fails now, not after the models load
    cfg = config_from_args(args)
    sources = open_sources(args.input, cfg, mic=args.mic, mic_backend=args.mic_backend)
    engine = make_engine(cfg)
    sinks = [] if args.quiet else [StdoutSink()]
    if args.jsonl:
        sinks.append(JsonlSink(args.jsonl))
    pipeline = Pipeline(sources, engine, sinks, cfg)
    # From here a signal asks the stream to end (sinks flushed); before, it aborted loading.
    with SIGNALS.stopping(pipeline.stop) as stopped_by:
        with engine:
            stats = pipeline.run(max_states=args.max_states)
    print(f"emo-stream: {stats.summary()}" + (f"; states written to {args.jsonl}" if args.jsonl else ""), file=sys.stderr)
    if stopped_by:
        return 128 + stopped_by[0]
    return 0


def _add_import(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import", help="convert published checkpoints into emo_stream model directories")
    kinds = p.add_subparsers(dest="kind", required=True, metavar="KIND")
    e = kinds.add_parser(
        "emotion-llama",
        help="Emotion-LLaMA's public checkpoint (MiniGPT-v2 layout) + a local LLaMA-2 dir -> safetensors",
        description="Map Emotion-LLaMA's checkpoint keys (llama_proj, cls_tk_llama_proj, feats_llama_proj1..3, "
        "LoRA q_proj/v_proj) onto emo_stream's modules and save a model directory (config.json + model.safetensors). "
        "Loads with torch.load(weights_only=True) only.",
    )
    e.add_argument("--checkpoint", required=True, type=Path, help="Emotion-LLaMA .pth checkpoint")
    e.add_argument("--llama-dir", required=True, type=Path, help="local Llama-2-7b-chat-hf directory")
    e.add_argument("--out", required=True, type=Path, help="output model directory")
    e.add_argument("--encoder", action="append", default=[], metavar="VIEW=PATH",
                   help="encoder for a view (global, face, temporal, audio): a local transformers dir, or for the "
                   "visual views the original .pth (EVA eva_vit_g.pth, the authors' MAE / VideoMAE checkpoints), "
                   "converted on import; repeatable")
    e.add_argument("--eva-checkpoint", type=Path, default=None, help="eva_vit_g.pth for the global view")
    e.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"], help="LLM dtype")
    e.set_defaults(func=_cmd_import_emotion_llama)


def _cmd_import_emotion_llama(args: argparse.Namespace) -> int:
    from emo_stream.model.checkpoint_import import import_emotion_llama

    encoders = parse_assignments(args.encoder, "--encoder", "VIEW")
    out = import_emotion_llama(
        args.checkpoint, args.llama_dir, args.out, encoder_dirs=encoders or None, eva_checkpoint=args.eva_checkpoint, dtype=args.dtype
    )
    print(f"emo-stream: imported Emotion-LLaMA into {out} (see {out / 'import_report.json'})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="emo-stream", description="Real-time multimodal emotion perception for robots.")
    parser.add_argument("--version", action="version", version=f"emo-stream {__version__}")
    parser.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run(sub)
    _add_import(sub)
    from emo_stream.bench.cli import add_parser as add_bench
    from emo_stream.demo.cli import add_parsers as add_demo
    from emo_stream.export.cli import add_parser as add_export
    from emo_stream.prompt_cli import add_parser as add_prompt
    from emo_stream.train.cli import add_parsers as add_train

    add_export(sub)
    add_train(sub)
    add_bench(sub)
    add_demo(sub)
    add_prompt(sub)
    return parser


class Interrupted(BaseException):
    """SIGINT/SIGTERM arrived while nothing could be stopped gently (models loading,
    a training step). A BaseException like KeyboardInterrupt, so a broad
    ``except Exception`` in loading code cannot swallow it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class SignalGuard:
    """SIGINT/SIGTERM handling for the whole command, installed before anything loads.

    By default a signal raises :class:`Interrupted` (``main`` prints one line and
    exits 128 + signal number, no traceback). Inside :meth:`stopping` it calls a
    stop function instead (a running stream ends after the current window, sinks
    flushed) and records the signal.

    A signal that lands while Python runs a C library's callback (llama.cpp's log
    callback fires all through model loading) raises inside that callback, where
    ctypes swallows exceptions. The unraisable hook notes it silently as
    ``pending``; :meth:`stopping` and ``main`` honour it as soon as control is back.
    """

    def __init__(self) -> None:
        self._stop: Callable[[], None] | None = None
        self.received: list[int] = []
        self.pending: int | None = None
        self._old: dict[int, object] = {}
        self._old_hook: Callable[..., object] | None = None

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # main() called from a worker thread (tests): signals stay as they are
        self.pending = None
        for s in (signal.SIGINT, signal.SIGTERM):
            self._old[s] = signal.signal(s, self._handle)
        self._old_hook = sys.unraisablehook
        sys.unraisablehook = self._unraisable

    def uninstall(self) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)  # type: ignore[arg-type]
        self._old.clear()
        if self._old_hook is not None:
            sys.unraisablehook = self._old_hook
            self._old_hook = None

    def _unraisable(self, unraisable: object) -> None:
        exc = getattr(unraisable, "exc_value", None)
        if isinstance(exc, Interrupted):
            self.pending = exc.signum  # swallowed by a C callback: honoured at the next check
            return
        assert self._old_hook is not None
        self._old_hook(unraisable)

    def _handle(self, signum: int, _frame: object) -> None:
        self.received.append(signum)
        if self._stop is None:
            raise Interrupted(signum)
        self._stop()

    def check(self) -> None:
        """Raise the :class:`Interrupted` a C callback swallowed, if any."""
        if self.pending is not None:
            raise Interrupted(self.pending)

    @contextlib.contextmanager
    def stopping(self, stop: Callable[[], None]) -> Iterator[list[int]]:
        """While inside, signals call ``stop``; yields the signals received meanwhile."""
        self.check()  # Ctrl-C during model loading that a C callback swallowed: stop before streaming
        got: list[int] = []
        prev, prev_count = self._stop, len(self.received)
        self._stop = stop
        try:
            yield got
        finally:
            self._stop = prev
            got.extend(self.received[prev_count:])


SIGNALS = SignalGuard()


def _one_line(message: str) -> int:
    print(f"emo-stream: error: {message}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    SIGNALS.install()  # first: building the parser already imports engines, torch for some commands
    try:
        args = build_parser().parse_args(argv)
        logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s")
        rc = args.func(args)
        SIGNALS.check()
        return rc
    except EmoStreamError as exc:
        return _one_line(str(exc))
    except BrokenPipeError:  # `emo-stream dataset check ... | head`: stdout went away
        from emo_stream.stream.sinks import _detach_stdout

        _detach_stdout()
        return _one_line("cannot write stdout: Broken pipe")
    except OSError as exc:
        # The environment refused (full disk, permissions, I/O error) somewhere no
        # caller wrapped: still one line; --log-level DEBUG keeps the traceback.
        logging.getLogger("emo_stream").debug("unwrapped OSError", exc_info=True)
        where = f"{exc.filename}: " if exc.filename else ""
        return _one_line(f"{where}{exc.strerror or exc}")
    except (Interrupted, KeyboardInterrupt) as exc:
        signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
        print(f"emo-stream: stopped by {signal.Signals(signum).name}", file=sys.stderr)
        return 128 + int(signum)
    finally:
        SIGNALS.uninstall()


if __name__ == "__main__":
    sys.exit(main())
