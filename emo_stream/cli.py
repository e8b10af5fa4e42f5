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
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from emo_stream import __version__
from emo_stream.cli_args import config_from_args, parse_assignments
from emo_stream.errors import EmoStreamError
from emo_stream.signals import SIGNALS, Interrupted, SignalGuard

Command = Callable[[argparse.Namespace], int]

__all__ = ["SIGNALS", "Interrupted", "SignalGuard", "build_parser", "config_from_args", "main", "parse_assignments"]


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
        "--option",
        "-o",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="engine option (value parsed as YAML), e.g. -o asr=off -o tiny=true; repeatable",
    )
    p.add_argument("--window", type=float, default=None, help="window length W in seconds")
    p.add_argument("--hop", type=float, default=None, help="hop H in seconds (one state per hop)")
    p.add_argument("--realtime", action="store_true", help="pace a file at its media rate, like a live camera")
    p.add_argument("--max-states", type=int, default=None, help="stop after this many states")
    p.add_argument("--quiet", "-q", action="store_true", help="do not print a line per state")
    p.set_defaults(func=_cmd_run)


def _cmd_run(args: argparse.Namespace) -> int:
    from emo_stream.engines import make_engine
    from emo_stream.outputs import check_writable, refuse_alias
    from emo_stream.pipeline import Pipeline
    from emo_stream.stream.sinks import JsonlSink, Sink, StdoutSink
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
    sinks: list[Sink] = [] if args.quiet else [StdoutSink()]
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
    e.add_argument(
        "--encoder",
        action="append",
        default=[],
        metavar="VIEW=PATH",
        help="encoder for a view (global, face, temporal, audio): a local transformers dir, or for the "
        "visual views the original .pth (EVA eva_vit_g.pth, the authors' MAE / VideoMAE checkpoints), "
        "converted on import; repeatable",
    )
    e.add_argument("--eva-checkpoint", type=Path, default=None, help="eva_vit_g.pth for the global view")
    e.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"], help="LLM dtype")
    e.set_defaults(func=_cmd_import_emotion_llama)


def _cmd_import_emotion_llama(args: argparse.Namespace) -> int:
    from emo_stream.model.checkpoint_import import import_emotion_llama

    encoders = parse_assignments(args.encoder, "--encoder", "VIEW")
    out = import_emotion_llama(args.checkpoint, args.llama_dir, args.out, encoder_dirs=encoders or None, eva_checkpoint=args.eva_checkpoint, dtype=args.dtype)
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


def _one_line(message: str) -> int:
    print(f"emo-stream: error: {message}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    # Before anything loads numpy / onnxruntime / llama.cpp / CTranslate2: their thread
    # pools are sized from the environment once, at load (emo_stream.threads).
    from emo_stream.threads import STREAMING_COMMANDS, apply_process_env, command_of

    apply_process_env(pools=command_of(list(sys.argv[1:] if argv is None else argv)) in STREAMING_COMMANDS)
    SIGNALS.install()  # first: building the parser already imports engines, torch for some commands
    try:
        args = build_parser().parse_args(argv)
        logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s")
        rc = args.func(args)
        SIGNALS.check()
        return rc
    except EmoStreamError as exc:
        return _one_line(str(exc))
    except ModuleNotFoundError as exc:
        # An optional extra is not installed (a robot venv without torch): one line naming it.
        from emo_stream.errors import missing_module_error

        missing = missing_module_error(exc)
        if missing is None:
            raise
        logging.getLogger("emo_stream").debug("missing optional module", exc_info=True)
        return _one_line(str(missing))
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
