"""Streaming Silero VAD on real recordings (LibriVox read speech, ALSA voice clips)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from emo_stream.errors import ConfigError
from emo_stream.perception.vad import FRAME_S, SAMPLE_RATE, AudioCursor, VadConfig, VoiceActivityDetector
from emo_stream.stream.sources.media_file import read_audio

MEDIA = Path(__file__).resolve().parents[2] / ".cache" / "media"
LIBRIVOX = sorted(MEDIA.glob("librivox_*.wav"))
ALSA = Path("/usr/share/sounds/alsa")


def load_wav(path: Path) -> np.ndarray:
    """Mono float32 at 16 kHz through the stream's own decoder + resampler (missing file: a clear failure)."""
    return read_audio(path, SAMPLE_RATE)


def need(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"{path} missing (scripts/fetch_test_media.sh / apt alsa-utils)")
    return path


def stream(vad: VoiceActivityDetector, x: np.ndarray, window_s: float = 2.0, hop_s: float = 0.5) -> None:
    """Feed ``x`` the way the engine does: every hop, the window [t - W, t]."""
    dur = x.shape[0] / SAMPLE_RATE
    end = hop_s
    while end < dur + hop_s:
        end = min(end, dur)
        start = max(0.0, end - window_s)
        vad.update(start, x[int(round(start * SAMPLE_RATE)) : int(round(end * SAMPLE_RATE))])
        if end >= dur:
            break
        end += hop_s


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SAMPLE_RATE), np.float32)


@pytest.fixture(scope="module")
def speech_pair() -> np.ndarray:
    """0.5 s silence, an utterance, 1 s silence, another utterance, 1 s silence."""
    a = load_wav(need(MEDIA / "librivox_0880.wav"))
    b = load_wav(need(MEDIA / "librivox_0930.wav"))
    return np.concatenate([silence(0.5), a, silence(1.0), b, silence(1.0)])


@pytest.mark.parametrize("path", LIBRIVOX, ids=lambda p: p.stem)
def test_librivox_is_mostly_one_speech_span(path: Path) -> None:
    x = load_wav(path)
    dur = x.shape[0] / SAMPLE_RATE
    vad = VoiceActivityDetector()
    vad.update(0.0, x)
    vad.flush()
    spans = vad.speech_spans(0.0, dur)
    assert len(spans) == 1, spans  # one read sentence, no pause >= min_silence_s
    assert vad.speech_ratio(0.0, dur) > 0.85


def test_silence_and_white_noise_have_no_speech() -> None:
    rng = np.random.default_rng(7)
    for x in (silence(5.0), (0.05 * rng.standard_normal(5 * SAMPLE_RATE)).astype(np.float32), (0.4 * rng.standard_normal(5 * SAMPLE_RATE)).astype(np.float32)):
        vad = VoiceActivityDetector()
        vad.update(0.0, x)
        vad.flush()
        assert vad.speech_spans(0.0, 5.0) == []
        assert vad.speech_ratio(0.0, 5.0) == 0.0
        assert vad.probabilities(0.0, 5.0)[1].max() < 0.3


def test_alsa_voice_clips_are_speech_and_noise_clip_is_not() -> None:
    for name in ("Front_Center", "Rear_Left", "Side_Right"):
        x = load_wav(need(ALSA / f"{name}.wav"))
        vad = VoiceActivityDetector()
        vad.update(0.0, x)
        vad.flush()
        assert vad.speech_ratio(0.0, x.shape[0] / SAMPLE_RATE) > 0.8, name
    noise = load_wav(need(ALSA / "Noise.wav"))
    vad = VoiceActivityDetector()
    vad.update(0.0, noise)
    vad.flush()
    assert vad.speech_spans(0.0, 10.0) == []


def test_streaming_windows_equal_one_shot(speech_pair: np.ndarray) -> None:
    dur = speech_pair.shape[0] / SAMPLE_RATE
    one = VoiceActivityDetector()
    one.update(0.0, speech_pair)
    streamed = VoiceActivityDetector()
    stream(streamed, speech_pair)
    # Every sample ran through the model exactly once despite 4x overlap.
    assert streamed.frames_processed == one.frames_processed == speech_pair.shape[0] // 512
    t1, p1 = one.probabilities(0.0, dur)
    t2, p2 = streamed.probabilities(0.0, dur)
    np.testing.assert_allclose(t1, t2)
    np.testing.assert_allclose(p1, p2, atol=1e-5)
    s1, s2 = one.speech_spans(0.0, dur), streamed.speech_spans(0.0, dur)
    assert len(s1) == len(s2) == 2
    for (a1, b1), (a2, b2) in zip(s1, s2):
        assert abs(a1 - a2) <= 2 * FRAME_S and abs(b1 - b2) <= 2 * FRAME_S
    # The two utterances are where they were put.
    a_end = 0.5 + load_wav(MEDIA / "librivox_0880.wav").shape[0] / SAMPLE_RATE
    assert s2[0][0] < 0.9 and abs(s2[0][1] - a_end) < 0.4
    assert s2[1][0] > a_end + 0.5


def test_closed_spans_are_final_and_windows_see_open_span(speech_pair: np.ndarray) -> None:
    vad = VoiceActivityDetector()
    closed_seen: list[tuple[float, float]] = []
    dur = speech_pair.shape[0] / SAMPLE_RATE
    end = 0.5
    while end <= dur:
        start = max(0.0, end - 2.0)
        vad.update(start, speech_pair[int(start * SAMPLE_RATE) : int(end * SAMPLE_RATE)])
        closed = vad.closed_spans()
        assert closed[: len(closed_seen)] == closed_seen  # never rewritten
        closed_seen = closed
        if 1.5 <= end <= 3.0:  # inside the first utterance: the open span counts
            assert vad.is_speaking and vad.speech_ratio(start, end) > 0.5
        end += 0.5
    assert len(closed_seen) == 2


def test_overlapping_input_is_skipped_and_gap_resets() -> None:
    x = load_wav(need(MEDIA / "librivox_0870.wav"))
    vad = VoiceActivityDetector()
    first = vad.update(0.0, x[: 2 * SAMPLE_RATE])
    again = vad.update(0.0, x[: 2 * SAMPLE_RATE])
    assert first.new_frames > 0 and again.new_frames == 0 and not again.gap
    assert vad.is_speaking
    later = vad.update(10.0, x[2 * SAMPLE_RATE : 4 * SAMPLE_RATE])  # 8 s of audio never arrived
    assert later.gap and vad.gaps == 1
    spans = vad.closed_spans()
    assert len(spans) == 1 and spans[0][1] == pytest.approx(2.0, abs=FRAME_S)  # closed at the gap
    t, _ = vad.probabilities(9.0, 13.0)
    assert t[0] == pytest.approx(10.0)  # grid re-anchored at the new audio


def test_flush_closes_speech_at_end_and_stream_can_go_on() -> None:
    x = load_wav(need(MEDIA / "librivox_0880.wav"))[: 2 * SAMPLE_RATE + 100]  # ends mid-speech
    vad = VoiceActivityDetector()
    vad.update(0.0, x)
    assert vad.is_speaking and vad.closed_spans() == []
    vad.flush()
    (span,) = vad.closed_spans()
    assert span[1] == pytest.approx(x.shape[0] / SAMPLE_RATE, abs=1e-6)  # includes the partial last frame
    res = vad.update(x.shape[0] / SAMPLE_RATE, x)  # more audio after the flush: a fresh segment
    assert res.new_frames == x.shape[0] // 512 and not res.gap and vad.gaps == 0


def test_long_speech_is_cut_at_max_length() -> None:
    x = load_wav(need(MEDIA / "librivox_0870.wav"))
    dur = x.shape[0] / SAMPLE_RATE
    vad = VoiceActivityDetector(VadConfig(max_speech_s=2.5))
    vad.update(0.0, np.concatenate([x, silence(1.0)]))
    spans = vad.closed_spans()
    assert len(spans) >= 3
    assert all(b - a <= 2.5 + 1e-6 for a, b in spans), spans
    covered = sum(b - a for a, b in spans)
    assert covered > 0.8 * dur  # cutting loses no speech


def test_invalid_input_is_rejected_and_nan_is_flagged() -> None:
    vad = VoiceActivityDetector()
    with pytest.raises(ValueError, match="16000"):
        vad.update(0.0, np.zeros(4800, np.float32), sample_rate=48000)
    with pytest.raises(ValueError, match="float"):
        vad.update(0.0, np.zeros(1600, np.int16))
    with pytest.raises(ValueError, match="1-D"):
        vad.update(0.0, np.zeros((2, 1600), np.float32))
    x = load_wav(need(MEDIA / "librivox_0870.wav"))[: 3 * SAMPLE_RATE].copy()
    x[16000:16100] = np.nan
    x[20000] = np.inf
    res = vad.update(0.0, x)
    assert res.nonfinite == 101 and vad.nonfinite_samples == 101
    assert np.isfinite(vad.probabilities(0.0, 3.0)[1]).all()
    assert vad.speech_ratio(0.0, 3.0) > 0.5
    vad.update(0.0, x)  # the same window again: its NaNs are not counted twice
    assert vad.nonfinite_samples == 101


def test_history_is_bounded() -> None:
    vad = VoiceActivityDetector(VadConfig(history_s=10.0))
    x = load_wav(need(MEDIA / "librivox_0880.wav"))
    block = np.concatenate([x, silence(2.0)])
    for i in range(6):
        vad.update(i * block.shape[0] / SAMPLE_RATE, block)
    assert len(vad.probabilities(-1.0, 1e9)[0]) <= int(np.ceil(10.0 / FRAME_S)) + 1
    assert all(b > vad.processed_until - 10.0 - 1e-6 for _, b in vad.closed_spans())


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="speech_pad_s"):
        VadConfig(min_silence_s=0.1, speech_pad_s=0.1)
    with pytest.raises(ConfigError, match="threshold"):
        VadConfig(threshold=1.5)
    with pytest.raises(ValueError):
        AudioCursor(gap_tolerance_s=-1.0)


def test_cost_per_second_of_audio() -> None:
    """Report VAD cost; bound it loosely (the budget is a few % of one core)."""
    x = load_wav(need(MEDIA / "librivox_0870.wav"))
    vad = VoiceActivityDetector()
    t = time.perf_counter()
    stream(vad, x)
    ms_per_s = (time.perf_counter() - t) * 1000 / (x.shape[0] / SAMPLE_RATE)
    print(f"VAD streaming cost: {ms_per_s:.1f} ms per second of audio")
    assert ms_per_s < 100
