"""Progress for long commands, the one helper (issue 15): a tqdm bar for loops
over many items (training steps, feature clips; a no-op when tqdm is missing or
progress is off) and :class:`Progress`, one stderr line per named step (export
stages, bench phases). Imports neither torch nor tqdm until asked.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO


class NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, **_: Any) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int, initial: int = 0, desc: str = "", enabled: bool = True, unit: str = "it") -> Any:
    """A tqdm bar on stderr, or a :class:`NoBar` when disabled or tqdm is missing."""
    if not enabled:
        return NoBar()
    try:
        from tqdm import tqdm
    except ImportError:
        return NoBar()
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, leave=False)


class Progress:
    """One line per step on stderr: ``emo-stream export: [3/12] global fp32: export ... 4.2 s``."""

    def __init__(self, total: int = 0, enabled: bool = True, stream: TextIO | None = None, prefix: str = "emo-stream export") -> None:
        self.total, self.enabled, self.stream, self.prefix = total, enabled, stream, prefix
        self.done = 0
        self.started = time.perf_counter()

    def _out(self) -> TextIO:
        return self.stream or sys.stderr

    def note(self, text: str) -> None:
        if self.enabled:
            print(f"{self.prefix}: {text}", file=self._out(), flush=True)

    @contextmanager
    def step(self, text: str) -> Iterator[None]:
        self.done += 1
        count = f"[{self.done}/{self.total}] " if self.total else ""
        if self.enabled:
            print(f"{self.prefix}: {count}{text} ...", file=self._out(), end="", flush=True)
        t = time.perf_counter()
        ok = False
        try:
            yield
            ok = True
        finally:
            if self.enabled:
                print(f" {'done' if ok else 'FAILED'} ({time.perf_counter() - t:.1f} s)", file=self._out(), flush=True)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started
