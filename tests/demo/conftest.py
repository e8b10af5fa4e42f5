"""Fixtures for the demo tests: hand-made states, a CLI harness, real frames."""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest

from emo_stream.errors import EmoStreamError
from emo_stream.labels import get_label_set
from emo_stream.state import EmotionState

#: A stand-alone `emo-stream demo/report` (the sub-commands registered on a bare parser, with
#: emo_stream.cli's error convention), so the tests do not depend on how cli.py wires them in.
HARNESS = """
import argparse, logging, sys
from emo_stream.errors import EmoStreamError
from emo_stream.demo.cli import add_parsers
p = argparse.ArgumentParser(prog="emo-stream")
sub = p.add_subparsers(dest="command", required=True)
add_parsers(sub)
args = p.parse_args(sys.argv[1:])
logging.basicConfig(level="WARNING")
try:
    sys.exit(args.func(args))
except EmoStreamError as exc:
    print(f"emo-stream: error: {exc}", file=sys.stderr)
    sys.exit(2)
"""


@pytest.fixture
def make_state():
    """``make_state(probs=..., **fields)`` -> an EmotionState over mer2023 (all fields overridable)."""

    def build(probs=(0.02, 0.01, 0.9, 0.03, 0.02, 0.02), label_set="mer2023", **kw) -> EmotionState:
        args = dict(
            label_set=get_label_set(label_set),
            probabilities=probs,
            window_start=0.0,
            window_end=2.0,
            sequence=0,
            model_id="test",
            valence=0.7,
            arousal=0.4,
            modalities=("video", "audio", "face", "voice"),
            latency_ms={"engine": 95.0, "pipeline": 100.0},
            signals=dict(face_x=0.35, face_y=0.11, face_w=0.19, face_h=0.24, face_t=1.9),
        )
        args.update(kw)
        return EmotionState.build(**args)

    return build


@pytest.fixture(scope="session")
def astronaut_frame(media) -> np.ndarray:
    """The first frame of the astronaut clip (512 x 512 BGR), a real photo with a face."""
    from emo_stream.demo.video import iter_video_frames

    return next(iter(iter_video_frames(media / "astronaut_speech.mp4"))).bgr()


@pytest.fixture
def cli():
    """In-process ``emo-stream <argv>`` via the harness parser: returns (exit code, stdout, stderr)."""
    from emo_stream.demo.cli import add_parsers

    def run(*argv) -> tuple[int, str, str]:
        parser = argparse.ArgumentParser(prog="emo-stream")
        add_parsers(parser.add_subparsers(dest="command", required=True))
        args = parser.parse_args([str(a) for a in argv])
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            try:
                code = args.func(args)
            except EmoStreamError as exc:
                print(f"emo-stream: error: {exc}", file=sys.stderr)
                code = 2
        return code, out.getvalue(), err.getvalue()

    return run


@pytest.fixture
def cli_subprocess():
    """``emo-stream <argv>`` in a fresh interpreter (exit code and the exact stderr lines)."""

    def run(*argv, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-c", HARNESS, *map(str, argv)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})},
            cwd=Path(__file__).resolve().parents[2],
        )

    return run
