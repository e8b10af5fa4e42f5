import numpy as np
import pytest

from emo_stream.stream.samples import AudioChunk, SourceEvent, VideoFrame
from emo_stream.stream.timeline import Timeline

RATE = 16000


def frame(t, i=0):
    return VideoFrame(t, np.zeros((4, 4, 3), np.uint8), i)


def chunk(t, n=1600, value=1.0):
    return AudioChunk(t, np.full(n, value, np.float32), RATE)


def test_frames_are_bounded_by_history_and_count():
    tl = Timeline(history_s=1.0, max_frames=5, sample_rate=RATE)
    for i in range(100):
        tl.push(frame(i * 0.1, i))
    assert tl.n_frames == 5  # count cap
    tl2 = Timeline(history_s=1.0, max_frames=1000, sample_rate=RATE)
    for i in range(100):
        tl2.push(frame(i * 0.1, i))
    ts = [f.t for f in tl2.frames_between(0, 100)]
    assert ts[0] >= 9.9 - 1.0 - 1e-9 and len(ts) == 11  # time cap


def test_audio_is_placed_by_timestamp_and_gaps_are_zero():
    tl = Timeline(history_s=10, max_frames=10, sample_rate=RATE)
    tl.push(chunk(0.0, 1600, 1.0))  # [0, 0.1)
    tl.push(chunk(0.2, 1600, 2.0))  # [0.2, 0.3): a 0.1 s gap before it
    span = tl.audio_between(0.05, 0.25)
    assert span.samples.shape == (3200,)
    assert np.all(span.samples[:800] == 1.0)
    assert np.all(span.samples[800:2400] == 0.0)
    assert np.all(span.samples[2400:] == 2.0)
    assert span.coverage == pytest.approx(0.5)
    assert tl.audio_between(5.0, 6.0) is None


def test_audio_memory_is_capped_even_with_bogus_timestamps():
    tl = Timeline(history_s=1.0, max_frames=10, sample_rate=RATE)
    for _ in range(1000):  # all stamped at t=0: time-based trimming cannot help
        tl.push(chunk(0.0))
    assert tl.n_audio_samples <= 1.5 * RATE + 1600


def test_out_of_order_and_wrong_rate_are_rejected_and_counted():
    tl = Timeline(history_s=10, max_frames=10, sample_rate=RATE)
    tl.push(frame(1.0))
    tl.push(frame(0.5))
    tl.push(AudioChunk(0.0, np.zeros(441, np.float32), 44100))
    assert tl.n_frames == 1 and tl.out_of_order == 1 and tl.rejected_audio == 1


def test_events_are_windowed():
    tl = Timeline(history_s=10, max_frames=10, sample_rate=RATE)
    tl.push(SourceEvent(1.0, "corrupt_input"))
    assert [e.kind for e in tl.events_between(0.5, 1.5)] == ["corrupt_input"]
    assert tl.events_between(1.5, 2.0) == []
