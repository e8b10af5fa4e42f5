"""``emo-stream demo`` and ``emo-stream report`` (registered by :func:`add_parsers`).

``demo`` modes:

================================================  ===========================================
``demo`` / ``demo --camera N [--mic DEV]``        live window (needs a display and OpenCV's
                                                   GUI build); q quits, space pauses
``demo --input FILE``                             the file replayed at its own pace in the window
``demo --input FILE --headless --out A.mp4``      annotated copy of FILE (same frames, timing
                                                   and audio) + states JSONL (A.jsonl)
``demo --camera N --headless --out A.mp4``        record the live overlay until Ctrl-C or
                                                   ``--max-seconds`` (+ microphone audio)
================================================  ===========================================

User errors raise :class:`~emo_stream.errors.EmoStreamError` subclasses, which
``emo_stream.cli`` prints as one line and exits 2. Ctrl-C / SIGTERM end
cleanly (files finished) and exit 130 / 143.
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

from emo_stream.demo.errors import DemoError
from emo_stream.signals import SIGNALS, Interrupted


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``demo`` and ``report`` sub-commands on ``emo-stream``'s sub-parsers."""
    _add_demo(subparsers)
    _add_report(subparsers)


# -- demo ----------------------------------------------------------------------------------------------------
def _add_demo(sub: argparse._SubParsersAction) -> None:
    from emo_stream.engines import engine_names
    from emo_stream.labels import LABEL_SETS

    p = sub.add_parser(
        "demo",
        help="live window (or headless annotated video) with the emotion overlay",
        description="Run a camera (+ microphone) or a video file through an engine and draw the states on the video: "
        "face box, top label, probability bars, valence/arousal, modalities, rationale, state rate and latency. "
        "With a display: a live window (q quits, space pauses). With --headless: an annotated video file (+ JSONL).",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--camera", metavar="N", default=None, help="camera index (default 0), /dev/videoN or a stream URL")
    src.add_argument("--input", "-i", metavar="FILE", default=None, help="a video file instead of the camera")
    p.add_argument("--mic", default=None, metavar="DEVICE", help="microphone (index or name substring) to pair with the camera")
    p.add_argument("--mic-backend", default="pyaudio", choices=["pyaudio", "sounddevice"])
    p.add_argument("--headless", action="store_true", help="no window: write the annotated video to --out")
    p.add_argument("--out", "-O", type=Path, default=None, help="annotated video (.mp4, .mov, .mkv, .avi); needs --headless")
    p.add_argument("--jsonl", type=Path, default=None, help="write the states here (headless default: next to --out, .jsonl)")
    p.add_argument("--lossless", action="store_true",
                   help="lossless H.264 (qp 0): pixels outside the overlay stay bit-identical to the input; large files")  # fmt: skip
    p.add_argument("--max-seconds", type=float, default=None, help="stop a live demo/recording after this many seconds")
    p.add_argument("--config", type=Path, default=None, help="YAML stream config (see configs/default.yaml)")
    p.add_argument("--engine", default=None, choices=engine_names(), help="engine (overrides the config)")
    p.add_argument("--label-set", default=None, choices=sorted(LABEL_SETS), help="label set (overrides the config)")
    p.add_argument("--weights", default=None, help="model directory for engines that take weights (emotion-llama)")
    p.add_argument("--option", "-o", action="append", default=[], metavar="KEY=VALUE",
                   help="engine option (value parsed as YAML, so quote words YAML reads as booleans: "
                        "-o \"rationale='off'\"), e.g. -o llm=false -o tiny=true; repeatable")  # fmt: skip
    p.add_argument("--window", type=float, default=None, help="window length W in seconds")
    p.add_argument("--hop", type=float, default=None, help="hop H in seconds (one state per hop)")
    p.add_argument("--quiet", "-q", action="store_true", help="do not print a line per state")
    p.set_defaults(func=cmd_demo)


def _state_printer(quiet: bool):
    if quiet:
        return None
    from emo_stream.stream.sinks import format_state

    def show(state) -> None:
        print(format_state(state), flush=True)

    return show


def cmd_demo(args: argparse.Namespace) -> int:
    from emo_stream.errors import SourceError

    if args.out is not None and not args.headless:
        raise DemoError("--out writes the annotated video of --headless mode; add --headless (the live window records nothing)")
    if args.headless and args.out is None:
        raise DemoError("--headless needs --out FILE.mp4, the annotated video to write")
    if args.max_seconds is not None and not args.max_seconds > 0:
        raise DemoError(f"--max-seconds must be > 0, got {args.max_seconds}")
    if args.input is not None and args.mic is not None:
        raise SourceError(f"a microphone can only be combined with camera input; {args.input!r} is a file with its own audio")
    if not args.headless:
        # OpenCV's window system must load before PyAV (emo_stream.demo.window explains the
        # livelock): nothing above imports av, and the video module below does. Where no
        # window can open, the window itself refuses later, after the camera/file opened.
        from emo_stream.demo.window import display_problem, prepare_gui

        if display_problem() is None:
            prepare_gui()
    from emo_stream.demo.video import check_output_path

    out = check_output_path(args.out) if args.out is not None else None
    jsonl = args.jsonl if args.jsonl is not None else (out.with_suffix(".jsonl") if out is not None else None)
    from emo_stream.outputs import refuse_alias

    refuse_alias({"--out": out, "--jsonl": jsonl}, {"--input": args.input, "--config": args.config})
    from emo_stream.cli_args import config_from_args

    cfg = config_from_args(args)
    if args.input is not None and args.headless:
        assert out is not None  # --headless without --out was refused above
        return _demo_file_headless(args, cfg, out, jsonl)
    return _demo_live(args, cfg, out, jsonl)


def _demo_file_headless(args: argparse.Namespace, cfg, out: Path, jsonl: Path | None) -> int:
    from emo_stream.demo.headless import FileAnnotator

    annotator = FileAnnotator(args.input, out, cfg, jsonl=jsonl, lossless=args.lossless, on_state=_state_printer(args.quiet))
    with SIGNALS.stopping(annotator.stop) as got:
        result = annotator.run()
    print(f"emo-stream: {result.summary()}", file=sys.stderr)
    return 128 + got[0] if got else 0


def _demo_live(args: argparse.Namespace, cfg, out: Path | None, jsonl: Path | None) -> int:
    from emo_stream.demo.live import LiveDemo
    from emo_stream.demo.window import CvDisplay
    from emo_stream.stream.sources.factory import open_sources

    if args.input is not None:
        spec = args.input
        cfg = cfg.replace(source={"realtime": True})  # replay at the file's own pace, like a camera
    else:
        spec = f"camera:{args.camera if args.camera is not None else 0}"
    sources = open_sources(spec, cfg, mic=args.mic, mic_backend=args.mic_backend)
    streaming = threading.Event()

    def stop() -> None:
        """SIGINT/SIGTERM: while devices open and models load nothing can end gently, so the
        command stops at once (one line, 128 + signal, like ``run``); once streaming, the
        UI loop sees the stop flag within one frame and everything is closed properly."""
        if not streaming.is_set():
            raise Interrupted(SIGNALS.received[-1])
        demo.stop()

    def on_ready() -> None:
        streaming.set()
        SIGNALS.check()  # a signal a C callback swallowed while the models loaded
        if args.headless and args.max_seconds is None:
            print(f"emo-stream: recording {spec} to {out}; press Ctrl-C to stop", file=sys.stderr, flush=True)

    demo = LiveDemo(
        sources,
        cfg,
        display=None if args.headless else CvDisplay,
        record_to=out,
        lossless=args.lossless,
        jsonl=jsonl,
        max_seconds=args.max_seconds,
        on_state=_state_printer(args.quiet),
        on_ready=on_ready,
    )
    with SIGNALS.stopping(stop) as got:
        result = demo.run()
    print(f"emo-stream: {result.summary()}", file=sys.stderr)
    return 128 + got[0] if got else 0


# -- report --------------------------------------------------------------------------------------------------
def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="timeline plot (PNG) and summary (markdown/HTML) of recorded states",
        description="Plot label probabilities and valence/arousal over time with face and speech spans shaded, "
        "and write a summary of the dominant emotions per segment (runs of the same top label).",
    )
    p.add_argument("--jsonl", required=True, type=Path, help="states JSONL (from run/demo --jsonl)")
    p.add_argument("--out", "-O", required=True, type=Path, help="timeline image (.png)")
    p.add_argument("--summary", type=Path, default=None, help="summary file, .md (default: next to --out) or .html")
    p.add_argument("--title", default=None, help="title of the plot and the summary")
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from emo_stream.report import make_report

    rep = make_report(args.jsonl, args.out, summary=args.summary, title=args.title)
    shares = ", ".join(f"{lab} {share * 100:.0f}%" for lab, share in list(rep.overview.label_time_share.items())[:3])
    print(
        f"emo-stream: wrote {rep.png} ({rep.width}x{rep.height}) and {rep.summary}: "
        f"{rep.overview.states} states, {len(rep.segments)} segments; top labels by time: {shares}",
        file=sys.stderr,
    )
    return 0
