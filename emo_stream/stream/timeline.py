"""Bounded buffers of recent samples, keyed by capture time.

The timeline is the only place samples are stored between capture and window
cutting. Everything in it is bounded twice: by capture time (``history_s``
behind the newest sample) and by count (``max_frames``, and an audio cap), so a
stream with broken timestamps still cannot grow memory.

Audio is kept as the chunks the source delivered (no copy on push); reading a
span places each overlapping chunk at its timestamp in a zero-filled array, so
gaps (a microphone that hiccuped) show up as missing coverage rather than as
time-shifted audio.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

import numpy as np

from emo_stream.stream.samples import AUDIO, VIDEO, AudioChunk, Sample, SourceEvent, VideoFrame


@dataclass(frozen=True)
class AudioSpan:
    """Audio of [start, start + len/rate), zero where nothing was captured."""

    samples: np.ndarray
    start: float
    sample_rate: int
    coverage: float  # fraction of samples that were actually captured (0..1)


class Timeline:
    """Recent frames, audio and source events, each bounded in time and count.

    Not thread-safe by itself: the pipeline serialises access with its lock.
    """

    def __init__(self, history_s: float, max_frames: int, sample_rate: int, max_events: int = 256) -> None:
        self.history_s = history_s
        self.sample_rate = sample_rate
        self._frames: collections.deque[VideoFrame] = collections.deque(maxlen=max_frames)
        self._audio: collections.deque[AudioChunk] = collections.deque()
        self._audio_samples = 0
        # Hard cap so mis-stamped audio cannot grow memory: 1.5x the history.
        self._max_audio_samples = int(1.5 * history_s * sample_rate) + 1
        self._events: collections.deque[SourceEvent] = collections.deque(maxlen=max_events)
        self.latest: dict[str, float] = {}
        self.first_t: float | None = None
        self.out_of_order = 0
        self.rejected_audio = 0

    # -- writing ----------------------------------------------------------------
    def push(self, sample: Sample) -> None:
        if isinstance(sample, VideoFrame):
            self._push_frame(sample)
        elif isinstance(sample, AudioChunk):
            self._push_audio(sample)
        elif isinstance(sample, SourceEvent):
            self._events.append(sample)
        else:
            raise TypeError(f"not a sample: {type(sample).__name__}")

    def _note_time(self, stream: str, t_end: float, t_start: float) -> None:
        if self.first_t is None or t_start < self.first_t:
            self.first_t = t_start if self.first_t is None else min(self.first_t, t_start)
        self.latest[stream] = max(self.latest.get(stream, t_end), t_end)
        self._trim(self.newest - self.history_s)

    def _push_frame(self, frame: VideoFrame) -> None:
        if self._frames and frame.t < self._frames[-1].t:
            # Out of order (a reordering transport): keep buffers sorted, drop it.
            self.out_of_order += 1
            return
        self._frames.append(frame)
        self._note_time(VIDEO, frame.t, frame.t)

    def _push_audio(self, chunk: AudioChunk) -> None:
        if chunk.sample_rate != self.sample_rate or chunk.samples.ndim != 1:
            # Sources convert to the configured rate; anything else is a bug upstream.
            self.rejected_audio += 1
            return
        if chunk.samples.size == 0:
            return
        if self._audio and chunk.t < self._audio[-1].t:
            self.out_of_order += 1
            return
        self._audio.append(chunk)
        self._audio_samples += chunk.samples.size
        while self._audio_samples > self._max_audio_samples and len(self._audio) > 1:
            self._audio_samples -= self._audio.popleft().samples.size
        self._note_time(AUDIO, chunk.end, chunk.t)

    def _trim(self, before: float) -> None:
        while self._frames and self._frames[0].t < before:
            self._frames.popleft()
        while self._audio and self._audio[0].end < before:
            self._audio_samples -= self._audio.popleft().samples.size
        while self._events and self._events[0].t < before:
            self._events.popleft()

    def forget_before(self, t: float) -> None:
        """Drop everything older than ``t`` (the scheduler will never ask for it again)."""
        self._trim(t)

    # -- reading ----------------------------------------------------------------
    @property
    def newest(self) -> float:
        return max(self.latest.values()) if self.latest else float("-inf")

    def frames_between(self, start: float, end: float) -> list[VideoFrame]:
        """Frames with start <= t < end (a frame stamped exactly at ``end`` belongs to the next window)."""
        return [f for f in self._frames if start <= f.t < end]

    def audio_between(self, start: float, end: float) -> AudioSpan | None:
        """Audio of [start, end), or None when no captured sample falls inside."""
        n = int(round((end - start) * self.sample_rate))
        if n <= 0:
            return None
        out = np.zeros(n, dtype=np.float32)
        covered = 0
        for chunk in self._audio:
            if chunk.end <= start or chunk.t >= end:
                continue
            offset = int(round((chunk.t - start) * self.sample_rate))
            src_lo = max(0, -offset)
            dst_lo = max(0, offset)
            count = min(chunk.samples.size - src_lo, n - dst_lo)
            if count <= 0:
                continue
            out[dst_lo : dst_lo + count] = chunk.samples[src_lo : src_lo + count]
            covered += count
        if covered == 0:
            return None
        return AudioSpan(out, start, self.sample_rate, min(1.0, covered / n))

    def events_between(self, start: float, end: float) -> list[SourceEvent]:
        return [e for e in self._events if start <= e.t < end]

    # -- introspection (tests, diagnostics) ---------------------------------------
    @property
    def n_frames(self) -> int:
        return len(self._frames)

    @property
    def n_audio_samples(self) -> int:
        return self._audio_samples
