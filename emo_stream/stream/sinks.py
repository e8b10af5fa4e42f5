"""Where states go: JSONL file, a terminal, or a user callback.

Sinks are deliberately dumb: they receive finished :class:`EmotionState` objects
on the pipeline's thread and must return quickly. The ROS publisher and the demo
overlay are sinks too (they live with their own packages).
"""

from __future__ import annotations

import logging
import os
import sys
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Callable, TextIO

from emo_stream.errors import EmoStreamError
from emo_stream.state import EmotionState

log = logging.getLogger(__name__)


class Sink(ABC):
    @abstractmethod
    def write(self, state: EmotionState) -> None: ...

    def close(self) -> None:
        """Flush and release; called once when the stream ends."""


class JsonlSink(Sink):
    """One JSON object per line, flushed per state.

    Each line is written with one ``write`` call and flushed, so a killed stream
    leaves every earlier state intact and readable.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = self.path.open("w", encoding="utf-8")
        except OSError as exc:
            raise EmoStreamError(f"cannot write states to {self.path}: {exc.strerror}") from None
        self.count = 0

    def write(self, state: EmotionState) -> None:
        self._fh.write(state.to_json() + "\n")
        self._fh.flush()
        self.count += 1

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()


def format_state(state: EmotionState) -> str:
    """A one-line human summary of a state (what ``emo-stream run`` prints)."""
    va = ""
    if state.valence is not None or state.arousal is not None:
        fmt = lambda x: "  ?  " if x is None else f"{x:+.2f}"  # noqa: E731
        va = f" v={fmt(state.valence)} a={fmt(state.arousal)}"
    lat = state.latency_ms.get("engine")
    lat_s = f" {lat:6.1f} ms" if lat is not None else ""
    flags = f" [{','.join(state.flags)}]" if state.flags else ""
    mods = ",".join(state.modalities) or "-"
    # A flat distribution has no top label worth printing (the baseline engine, no evidence).
    uniform = max(state.probabilities) - min(state.probabilities) < 1e-6
    top = f"{'(uniform)':>9s}     " if uniform else f"{state.top_label:>9s} {state.confidence:.2f}"
    return f"[{state.window_start:7.2f}-{state.window_end:7.2f}s] #{state.sequence:04d} {top}{va} ({mods}){lat_s}{flags}"


class StdoutSink(Sink):
    """Prints :func:`format_state` lines (to any text stream)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout

    def write(self, state: EmotionState) -> None:
        print(format_state(state), file=self.stream, flush=True)


class CallbackSink(Sink):
    """Calls ``fn(state)``. A failing callback is logged and counted, never fatal:
    a bug in a consumer must not stop the robot's perception."""

    def __init__(self, fn: Callable[[EmotionState], None]) -> None:
        self.fn = fn
        self.failures = 0

    def write(self, state: EmotionState) -> None:
        try:
            self.fn(state)
        except Exception:  # noqa: BLE001 - isolation is the point
            self.failures += 1
            if self.failures == 1 or self.failures % 100 == 0:
                log.exception("state callback failed (%d failures so far)", self.failures)
