"""PacedSource: a file released on the wall clock like a live device."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest

from emo_stream.stream.samples import AudioChunk, Sample, SourceEvent, VideoFrame
from emo_stream.stream.sources.base import Source
from emo_stream.stream.sources.media_file import MediaFileSource
from emo_stream.stream.sources.pacing import MAX_SLEEP_S, PacedSource


class FakeClock:
    """A monotonic clock that only moves when someone sleeps (or the test advances it)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, dt: float) -> None:
        assert dt > 0
        self.sleeps.append(dt)
        self.now += dt


class ListSource(Source):
    """A source over a fixed list of samples (a real, tiny Source implementation)."""

    name = "list"

    def __init__(self, items: list[Sample]) -> None:
        super().__init__()
        self.items = items
        self.duration = 42.0
        self.closed = False

    @property
    def streams(self) -> frozenset[str]:
        return frozenset({"video", "audio"})

    def open(self) -> None:
        self.closed = False

    def samples(self) -> Iterator[Sample]:
        for item in self.items:
            if self.closed:
                return
            yield item

    def close(self) -> None:
        self.closed = True


def _frame(t: float, i: int) -> VideoFrame:
    return VideoFrame(t=t, image=np.zeros((2, 2, 3), np.uint8), index=i)


def _chunk(t: float, n: int = 1600) -> AudioChunk:
    return AudioChunk(t=t, samples=np.zeros(n, np.float32), sample_rate=16000)


def _released(paced: PacedSource, clock: FakeClock) -> list[tuple[float, Sample]]:
    with paced:
        return [(clock.now, s) for s in paced.samples()]


def test_frames_at_their_time_audio_at_its_end() -> None:
    clock = FakeClock()
    items = [_frame(5.0, 0), _chunk(5.0), _frame(5.04, 1), _frame(5.08, 2), _chunk(5.1), SourceEvent(5.15, "corrupt_input"), _frame(5.5, 3)]
    out = _released(PacedSource(ListSource(items), clock=clock, sleep=clock.sleep), clock)
    start = 1000.0
    due = [start + 0.0, start + 0.04, start + 0.08, start + 0.1, start + 0.15, start + 0.2, start + 0.5]
    # a frame waits for its timestamp, a chunk for its end; nothing is released early,
    # and streams are released in due order (frames do not wait behind a chunk due later)
    assert [s for _, s in out] == [items[i] for i in (0, 2, 3, 1, 5, 4, 6)]
    np.testing.assert_allclose([t for t, _ in out], due, atol=1e-9)
    assert max(clock.sleeps) <= MAX_SLEEP_S + 1e-12


@pytest.mark.parametrize("speed", [1.0, 2.0, 0.5])
def test_real_file_takes_its_duration_over_speed(media, speed) -> None:
    clock = FakeClock()
    inner = MediaFileSource(media / "astronaut_speech.mp4")
    out = _released(PacedSource(inner, speed=speed, clock=clock, sleep=clock.sleep), clock)
    first_t = out[0][1].t
    for wall, s in out:  # no sample before its time, each within a sleep step of it
        due_media = s.end if isinstance(s, AudioChunk) else s.t
        assert wall >= 1000.0 + (due_media - first_t) / speed - 1e-9
    last_due = max((s.end if isinstance(s, AudioChunk) else s.t) for _, s in out)
    assert clock.now - 1000.0 == pytest.approx((last_due - first_t) / speed, abs=1e-6)
    assert clock.now - 1000.0 == pytest.approx(inner.duration / speed, rel=0.02)
    # pacing changes only when samples come out, not what or in which order
    assert sum(isinstance(s, VideoFrame) for _, s in out) == inner.stats.frames


def test_real_clock_paces_a_real_file(media) -> None:
    src = PacedSource(MediaFileSource(media / "silence_noface_3s.mp4"), speed=10.0)
    t0 = time.monotonic()
    with src:
        n = sum(1 for _ in src.samples())
    elapsed = time.monotonic() - t0
    assert n > 100
    assert 0.27 < elapsed < 1.5, elapsed  # 3 s of media at 10x (upper bound loose for busy CI)


def test_properties_pass_through(media) -> None:
    inner = MediaFileSource(media / "astronaut_3s_noaudio.mp4")
    paced = PacedSource(inner, speed=3.0)
    with paced:
        assert paced.streams == {"video"}
        assert paced.stats is inner.stats
        assert paced.duration == inner.duration and paced.fps == inner.fps
        assert paced.live is False and paced.paced is True and paced.clock == "media"
        assert inner.paced is False
        assert "x3" in paced.name
    with pytest.raises(ValueError):
        PacedSource(inner, speed=0)


def test_close_while_waiting_stops_promptly() -> None:
    clock = FakeClock()
    inner = ListSource([_frame(0.0, 0), _frame(100.0, 1), _frame(200.0, 2)])
    paced = PacedSource(inner, clock=clock, sleep=lambda dt: (clock.sleep(dt), paced.close()))
    with paced:
        out = list(paced.samples())
    assert len(out) == 1  # the far-future frames are never released
    assert sum(clock.sleeps) <= MAX_SLEEP_S + 1e-12  # woke within one sleep step
    assert inner.closed
