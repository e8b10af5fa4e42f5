"""Where states go: JSONL file, a terminal, or a user callback.

Sinks are deliberately dumb: they receive finished :class:`EmotionState` objects
on the pipeline's thread and must return quickly. The ROS publisher and the demo
overlay are sinks too (they live with their own packages).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from emo_stream.errors import OutputError
from emo_stream.outputs import write_error, writing
from emo_stream.state import EmotionState

log = logging.getLogger(__name__)


class Sink(ABC):
    @abstractmethod
    def write(self, state: EmotionState) -> None: ...

    def write_person(self, state: EmotionState) -> None:
        """The state of one more tracked person of the window just written (``state.person_id``).

        ``write`` gets the primary person's stream, one state per window, exactly
        as before people were tracked; these come after it, one per other
        person. Default: ignored, so a sink that knows one person (stdout, the
        demo overlay, callbacks) sees no change.
        """

    def end_window(self) -> None:
        """Every state of the window has been written (per-window outputs, e.g. ROS4HRI id lists)."""

    def close(self) -> None:
        """Flush and release; called once when the stream ends."""


class JsonlSink(Sink):
    """One JSON object per line, written through to the file per state.

    The file is unbuffered and each line goes out in ``write`` calls before the
    next state, so a killed stream leaves every earlier state intact and
    readable, and a failing write (full disk, removed mount) is reported at the
    state that hit it as ``cannot write PATH: <reason>``
    (:class:`~emo_stream.errors.OutputError`) with the complete lines before it
    kept. Check the path against the inputs with
    :func:`emo_stream.outputs.refuse_alias` before constructing the sink: opening
    truncates.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        with writing(self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = self.path.open("wb", buffering=0)
        self.count = 0

    def write(self, state: EmotionState) -> None:
        data = memoryview((state.to_json() + "\n").encode("utf-8"))
        with writing(self.path):
            while data:
                n = self._fh.write(data)
                data = data[n:]
        self.count += 1

    def write_person(self, state: EmotionState) -> None:
        """Every tracked person goes to the file, each line with its ``person_id``."""
        self.write(state)

    def close(self) -> None:
        with contextlib.suppress(OSError):
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
    """Prints :func:`format_state` lines (to any text stream).

    A stream that cannot take the line (closed, a broken pipe after ``| head``,
    ``> /dev/full``) ends the run with one ``cannot write stdout: <reason>``
    line; the process's own stdout is then pointed at ``/dev/null`` so Python's
    exit-time flush cannot print a second error.
    """

    def __init__(self, stream: TextIO | None = None, name: str = "stdout") -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.name = name
        if self.stream is None or getattr(self.stream, "closed", False):
            raise OutputError(f"cannot write {name}: it is closed (add --quiet to print no state lines)")

    def write(self, state: EmotionState) -> None:
        try:
            print(format_state(state), file=self.stream, flush=True)
        except (OSError, ValueError) as exc:  # ValueError: "I/O operation on closed file"
            if self.stream is sys.stdout:
                _detach_stdout()
            raise write_error(self.name, exc) from None


def _detach_stdout() -> None:
    """Point fd 1 at /dev/null so a failed stdout does not fail again at exit."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, sys.stdout.fileno())
        os.close(fd)


class CallbackSink(Sink):
    """Calls ``fn(state)``. A failing callback is logged and counted, never fatal:
    a bug in a consumer must not stop the robot's perception."""

    def __init__(self, fn: Callable[[EmotionState], None]) -> None:
        self.fn = fn
        self.failures = 0

    def write(self, state: EmotionState) -> None:
        try:
            self.fn(state)
        except Exception:
            self.failures += 1
            if self.failures == 1 or self.failures % 100 == 0:
                log.exception("state callback failed (%d failures so far)", self.failures)
