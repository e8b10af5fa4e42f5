"""SIGINT/SIGTERM handling: the one signal handler of every command (run, demo,
bench, train, export).

Lives below the applications so that any of them (and library code that must
notice a stop, e.g. a training loop) can use it without importing ``emo_stream.cli``.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator


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
