"""A deterministic in-memory source for scheduler/pipeline tests.

Real media is used everywhere else; here exact, known timestamps and contents
are the point (e.g. a frame's brightness encodes its index).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from emo_stream.stream.samples import AudioChunk, Sample, SourceEvent, VideoFrame
from emo_stream.stream.sources.base import Source


class SyntheticSource(Source):
    """``duration`` seconds of frames at ``fps`` and audio chunks of ``chunk_s``, merged in time order."""

    name = "synthetic"

    def __init__(self, duration=3.0, fps=10.0, rate=16000, chunk_s=0.1, video=True, audio=True, t0=0.0, events=(), size=(8, 8), tone_hz=220.0):
        super().__init__()
        self.duration, self.fps, self.rate, self.chunk_s = duration, fps, rate, chunk_s
        self.video, self.audio, self.t0, self.events, self.size, self.tone_hz = video, audio, t0, list(events), size, tone_hz
        self.opened = self.closed = False

    @property
    def streams(self):
        return frozenset(s for s, on in (("video", self.video), ("audio", self.audio)) if on)

    def open(self):
        self.opened = True

    def close(self):
        self.closed = True

    def samples(self) -> Iterator[Sample]:
        items: list[Sample] = []
        if self.video:
            for i in range(int(round(self.duration * self.fps))):
                img = np.full((*self.size, 3), i % 256, dtype=np.uint8)
                items.append(VideoFrame(self.t0 + i / self.fps, img, i))
        if self.audio:
            n = int(round(self.chunk_s * self.rate))
            for j in range(int(round(self.duration / self.chunk_s))):
                t = self.t0 + j * self.chunk_s
                tt = t + np.arange(n) / self.rate
                items.append(AudioChunk(t, (0.5 * np.sin(2 * np.pi * self.tone_hz * tt)).astype(np.float32), self.rate))
        items += [SourceEvent(self.t0 + t, kind) for t, kind in self.events]
        items.sort(key=lambda s: s.t)
        for s in items:
            if isinstance(s, VideoFrame):
                self.stats.frames += 1
            yield s


import pytest


@pytest.fixture
def make_source():
    """Factory for :class:`SyntheticSource` (keyword arguments as its constructor)."""
    return SyntheticSource
