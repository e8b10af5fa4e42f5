"""The one interface every input implements.

A source is opened, then iterated: ``samples()`` yields :class:`VideoFrame`,
:class:`AudioChunk` and :class:`SourceEvent` objects in capture order per stream
until the input ends or :meth:`Source.close` is called. File sources decode on
the consumer's thread (so an unpaced file streams losslessly, as fast as the
engine goes). Live sources (camera, microphone) capture on their own thread
into a bounded drop-oldest queue, so a slow consumer can never block capture or
grow memory; drops are counted and reported as events.
"""

from __future__ import annotations

import collections
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from emo_stream.config import MIN_HOP_S
from emo_stream.stream.samples import Sample, SourceEvent

#: A condition that lasts (rotation applied, channels cancelling, a DC offset)
#: is reported again at most this often, in capture seconds. Below the smallest
#: window (``MIN_HOP_S``), so every window the condition covers gets its flag,
#: while a 120 fps video adds ~22 events a second, not 120, to the timeline's
#: bounded event buffer (where they would push out rare ones like ``corrupt_input``).
CONDITION_EVERY_S = 0.9 * MIN_HOP_S


@dataclass
class SourceStats:
    """Counters a source keeps; read by diagnostics and benchmarks.

    ``conditions`` counts the input conditions a source repaired or flagged
    (``rotated`` frames, ``audio_overrange`` / ``audio_clipped`` samples,
    ``audio_channels_cancel`` / ``audio_dc_offset`` blocks ...); ``truncated``
    says the input ended before its container said it would.
    """

    frames: int = 0
    audio_chunks: int = 0
    audio_seconds: float = 0.0
    corrupt_packets: int = 0
    dropped_samples: int = 0
    reconnects: int = 0
    reconnect_attempts: int = 0
    truncated: bool = False
    conditions: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def note_condition(self, kind: str, n: int = 1) -> None:
        self.conditions[kind] = self.conditions.get(kind, 0) + n

    def note_error(self, msg: str, keep: int = 20) -> None:
        """Remember the last ``keep`` distinct error messages (bounded)."""
        if msg not in self.errors:
            self.errors.append(msg)
            del self.errors[:-keep]


class ConditionEvents:
    """Turns "this sample had condition X" into :class:`SourceEvent` flags, rate-limited per kind.

    An event flags the windows containing its time, so a condition present in
    every frame or audio block must be reported throughout, but one event per
    :data:`CONDITION_EVERY_S` is enough for every window to carry it.
    """

    def __init__(self, every_s: float = CONDITION_EVERY_S) -> None:
        self.every_s = float(every_s)
        self._last: dict[str, float] = {}

    def event(self, t: float, kind: str, detail: str) -> SourceEvent | None:
        """The event to emit for ``kind`` at capture time ``t``, or None when one was emitted just before."""
        last = self._last.get(kind)
        if last is not None and 0.0 <= t - last < self.every_s:
            return None
        self._last[kind] = t
        return SourceEvent(t, kind, detail)


class Source(ABC):
    """A producer of timestamped samples.

    Attributes:
        name: human-readable description for logs and errors.
        live: True for devices (monotonic clock, may drop); False for files.
        clock: what timestamps mean: ``"media"`` or ``"monotonic"``.
        paced: True when a file is released at its media rate (live-like timing
            without being a device); see :class:`~emo_stream.stream.sources.pacing.PacedSource`.
    """

    name: str = "source"
    live: bool = False
    clock: str = "media"
    paced: bool = False

    def __init__(self) -> None:
        self.stats = SourceStats()

    @property
    @abstractmethod
    def streams(self) -> frozenset[str]:
        """Streams this source delivers (``{"video", "audio"}`` or a subset); valid after :meth:`open`."""

    @abstractmethod
    def open(self) -> None:
        """Acquire the input; raise :class:`~emo_stream.errors.SourceError` with a clear message if impossible."""

    @abstractmethod
    def samples(self) -> Iterator[Sample]:
        """Yield samples until the input ends or the source is closed."""

    @abstractmethod
    def close(self) -> None:
        """Release the input; safe to call twice and from another thread."""

    def __enter__(self) -> Source:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_T = TypeVar("_T")


class DropOldestQueue(Generic[_T]):
    """A bounded FIFO where ``put`` never blocks: when full, the oldest item goes.

    This is what keeps capture threads real-time: the camera thread must return
    to ``read()`` immediately whatever the consumer is doing. The item dropped
    is the oldest *sample*: :class:`SourceEvent` items (disconnected, reconnected
    ...) are few and each one changes the meaning of the stream, so they are
    kept while any sample can go instead.
    """

    def __init__(self, maxlen: int) -> None:
        self._items: collections.deque[_T] = collections.deque()
        self._maxlen = maxlen
        self._cond = threading.Condition()
        self.dropped = 0

    def put(self, item: _T) -> bool:
        """Append ``item``; return False if something had to be dropped to make room."""
        with self._cond:
            dropped = len(self._items) >= self._maxlen
            if dropped:
                self._drop_oldest_sample()
                self.dropped += 1
            self._items.append(item)
            self._cond.notify()
            return not dropped

    def _drop_oldest_sample(self) -> None:
        for i, old in enumerate(self._items):
            if not isinstance(old, SourceEvent):
                del self._items[i]
                return
        self._items.popleft()  # nothing but events: the oldest event goes

    def get(self, timeout: float) -> _T | None:
        """The oldest item, or None after ``timeout`` seconds without one."""
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            return self._items.popleft() if self._items else None

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


class LiveSource(Source):
    """Base for devices: a capture thread feeds a :class:`DropOldestQueue`.

    Subclasses implement :meth:`_capture_loop`, which runs on the capture thread,
    calls :meth:`_emit` for every sample and returns when ``self._stop`` is set.
    """

    live = True
    clock = "monotonic"

    def __init__(self, queue_size: int = 256, clock=time.monotonic) -> None:
        super().__init__()
        self._queue: DropOldestQueue[Sample] = DropOldestQueue(queue_size)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._clock = clock
        self._overflow_reported = 0

    def start_capture(self) -> None:
        """Start the capture thread (called at the end of a subclass's ``open``)."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"capture:{self.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._capture_loop()
        except Exception as exc:  # a capture bug must surface as an event, not kill the stream silently
            self.stats.note_error(f"{type(exc).__name__}: {exc}")
            self._queue.put(SourceEvent(self._clock(), "disconnected", f"capture thread failed: {exc}"))

    @abstractmethod
    def _capture_loop(self) -> None: ...

    def _emit(self, sample: Sample) -> None:
        if not self._queue.put(sample):
            self.stats.dropped_samples += 1

    def samples(self) -> Iterator[Sample]:
        while True:
            item = self._queue.get(timeout=0.05)
            if item is not None:
                yield item
            elif self._stop.is_set() and (self._thread is None or not self._thread.is_alive()):
                return
            if self.stats.dropped_samples > self._overflow_reported:
                yield SourceEvent(self._clock(), "capture_overflow", f"{self.stats.dropped_samples - self._overflow_reported} samples dropped")
                self._overflow_reported = self.stats.dropped_samples

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
