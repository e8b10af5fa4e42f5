"""A source fed by other code: ROS topic callbacks, a GUI, a test harness.

``push`` never blocks (bounded drop-oldest queue, like a capture thread), so a
subscriber callback can hand samples over and return at once.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator

from emo_stream.stream.samples import Sample
from emo_stream.stream.sources.base import DropOldestQueue, Source


class PushSource(Source):
    """Samples arrive through :meth:`push` from any thread; :meth:`end` finishes the stream.

    Args:
        streams: what will be pushed (``{"video", "audio"}`` or a subset).
        clock: what the pushed timestamps are measured on ("monotonic", "ros", "media").
        live: True when pushes happen in real time (the pipeline then runs in
            realtime mode with drop-oldest windows).
    """

    def __init__(self, streams: Iterable[str], *, clock: str = "monotonic", live: bool = True, queue_size: int = 256, name: str = "push") -> None:
        super().__init__()
        self._streams = frozenset(streams)
        self.clock = clock
        self.live = live
        self.name = name
        self._queue: DropOldestQueue[Sample] = DropOldestQueue(queue_size)
        self._ended = threading.Event()

    @property
    def streams(self) -> frozenset[str]:
        return self._streams

    def open(self) -> None:
        self._ended.clear()

    def push(self, sample: Sample) -> None:
        if not self._queue.put(sample):
            self.stats.dropped_samples += 1

    def end(self) -> None:
        self._ended.set()

    close = end

    def samples(self) -> Iterator[Sample]:
        while True:
            item = self._queue.get(timeout=0.02)
            if item is not None:
                yield item
            elif self._ended.is_set():
                return
