"""Make a file arrive like a live device: each sample when its time has come.

Unpaced, a file source yields samples as fast as the consumer pulls, which
is what offline evaluation wants (lossless, deterministic). A robot's camera
cannot do that: it hands over a picture only once it has been captured, and
if the engine is slow, windows must be dropped rather than the input slowed
down. ``PacedSource`` reproduces that timing so latency, window dropping and
"latest wins" logic can be exercised and benchmarked with a file.

Timestamps are left as media time (the timeline keys on them); only the
moment of release changes. The clock and sleep functions are injected so tests
run with a fake clock and no real waiting.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Iterator

from emo_stream.stream.samples import AudioChunk, Sample
from emo_stream.stream.sources.base import Source
from emo_stream.stream.sources.wrapped import WrappedSource

#: Longest single sleep, so :meth:`PacedSource.close` from another thread takes effect promptly.
MAX_SLEEP_S = 0.1

#: How far (media seconds) the file is read ahead to release samples in due order.
#: Containers interleave streams loosely (Megamind.avi decodes audio ~0.6 s ahead
#: of video); released in decode order, each video frame would wait behind audio
#: due 0.6 s later, and every window would be cut 0.6 s late.
REORDER_S = 1.0


class PacedSource(WrappedSource):
    """Release the samples of ``inner`` at ``speed`` x their media rate on the wall clock.

    The first sample is released at once and fixes the mapping media time ->
    wall time; a video frame is released when its timestamp is reached, an audio
    chunk when its *end* is reached (a microphone cannot deliver a sound before
    it has been recorded). Samples are released in due order across streams
    (the file is read up to :data:`REORDER_S` ahead), as separate devices would
    deliver them. A consumer that falls behind is not caught up with bursts of
    sleep: late samples are released immediately, in order.

    Args:
        inner: a file source (media time stamps, ``live`` False).
        speed: 1.0 = real time, 2.0 = twice as fast.
        clock: monotonic seconds; injected for tests.
        sleep: blocking wait; injected for tests.
    """

    live = False
    paced = True

    def __init__(
        self,
        inner: Source,
        speed: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        super().__init__(inner)  # stats, streams, clock: the inner source's
        self.live, self.paced = False, True
        self.speed = float(speed)
        self._clock = clock
        self._sleep = sleep
        self._closed = False
        self._t0: tuple[float, float] | None = None  # (media time, wall time) of the first sample
        self.name = f"paced({inner.name}, x{self.speed:g})"

    def __getattr__(self, name: str):
        # Pass through source-specific properties (duration, fps, path ...).
        if name == "inner":  # not yet set (during __init__ failure): avoid recursion
            raise AttributeError(name)
        return getattr(self.inner, name)

    def open(self) -> None:
        self._closed = False
        super().open()

    def close(self) -> None:
        self._closed = True
        super().close()

    def media_now(self) -> float | None:
        """The media time being played now (None before the first sample).

        Lets the pipeline report how stale a state is when it is emitted, in the
        same units a live camera's monotonic stamps would give."""
        if self._t0 is None:
            return None
        t0_media, t0_wall = self._t0
        return t0_media + (self._clock() - t0_wall) * self.speed

    def samples(self) -> Iterator[Sample]:
        self._t0 = None
        pending: list[tuple[float, int, Sample]] = []  # (due media time, arrival order, sample)
        inner = iter(self.inner.samples())
        newest_due, exhausted, n = float("-inf"), False, 0
        while True:
            # Read ahead until the earliest pending sample cannot be overtaken any more.
            while not exhausted and (not pending or pending[0][0] > newest_due - REORDER_S):
                try:
                    sample = next(inner)
                except StopIteration:
                    exhausted = True
                    break
                due = sample.end if isinstance(sample, AudioChunk) else sample.t
                newest_due = max(newest_due, due)
                heapq.heappush(pending, (due, n, sample))
                n += 1
            if self._closed or not pending:
                return
            due_media, _, sample = heapq.heappop(pending)
            if self._t0 is None:
                self._t0 = (sample.t, self._clock())
            t0_media, t0_wall = self._t0
            due_wall = t0_wall + (due_media - t0_media) / self.speed
            if self._wait_until(due_wall):
                return
            yield sample

    def _wait_until(self, due: float) -> bool:
        """Sleep until ``due`` on the clock; return True if closed meanwhile."""
        while not self._closed:
            remaining = due - self._clock()
            if remaining <= 0:
                return False
            self._sleep(min(remaining, MAX_SLEEP_S))
        return True
