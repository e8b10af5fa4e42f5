"""Pitch, prosodic features and arousal on tones, real voices and espeak-ng speech."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from emo_stream.errors import ConfigError
from emo_stream.perception.prosody import (
    AROUSAL_WEIGHTS,
    NormalizerConfig,
    PitchConfig,
    ProsodyConfig,
    ProsodyTracker,
    SpeakerNormalizer,
    analyze_clip,
    arousal_from_prosody,
)
from emo_stream.perception.vad import SAMPLE_RATE, VoiceActivityDetector
from emo_stream.stream.sources.media_file import read_audio

MEDIA = Path(__file__).resolve().parents[2] / ".cache" / "media"
ALSA = Path("/usr/share/sounds/alsa")
SENTENCE = "I really cannot believe what happened at the station today, it was completely unexpected."


def load_wav(path: Path) -> np.ndarray:
    """Mono float32 at 16 kHz through the stream's own decoder + resampler (missing file: a clear failure)."""
    return read_audio(path, SAMPLE_RATE)


def espeak(tmp: Path, pitch: int, rate: int, amp: int, text: str = SENTENCE) -> np.ndarray:
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng not installed (apt install espeak-ng; scripts/setup.sh does)")
    out = tmp / f"espeak_p{pitch}_s{rate}_a{amp}.wav"
    subprocess.run(["espeak-ng", "-w", str(out), "-p", str(pitch), "-s", str(rate), "-a", str(amp), text], check=True, capture_output=True)
    return load_wav(out)


def dictionary_syllables(text: str) -> int:
    """Vowel-group syllable count with the silent-e rule (good to ~10% on plain English)."""
    n = 0
    for word in re.findall(r"[a-z']+", text.lower()):
        groups = len(re.findall(r"[aeiouy]+", word))
        if word.endswith("e") and not word.endswith(("le", "ee")) and groups > 1:
            groups -= 1
        n += max(1, groups)
    return n


def tone(freq: float, seconds: float = 1.5, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def spans_of(x: np.ndarray) -> list[tuple[float, float]]:
    vad = VoiceActivityDetector()
    vad.update(0.0, x)
    vad.flush()
    return vad.speech_spans(0.0, x.shape[0] / SAMPLE_RATE)


@pytest.mark.parametrize("freq", [70.0, 110.0, 220.0, 330.0, 450.0])
def test_pure_tone_pitch_within_2_percent(freq: float) -> None:
    feats = analyze_clip(tone(freq))
    assert feats is not None
    assert feats.f0_mean_hz == pytest.approx(freq, rel=0.02)
    assert feats.voiced_ratio > 0.95
    assert feats.f0_std_st < 0.1


def test_silence_and_noise_are_unvoiced() -> None:
    assert analyze_clip(np.zeros(SAMPLE_RATE, np.float32)).voiced_ratio == 0.0
    noise = (0.2 * np.random.default_rng(3).standard_normal(2 * SAMPLE_RATE)).astype(np.float32)
    feats = analyze_clip(noise)
    assert feats.voiced_ratio < 0.1
    tracker = ProsodyTracker()
    tracker.update(0.0, noise)
    result = tracker.analyze(0.0, 2.0, [])  # no speech spans -> nothing to say
    assert result.features is None and result.confidence == 0.0 and result.arousal == 0.0


def test_male_reader_is_lower_than_female_alsa_voice() -> None:
    male = [analyze_clip(load_wav(MEDIA / f"librivox_{n}.wav")).f0_mean_hz for n in ("0870", "0880", "0930")]
    female = [analyze_clip(load_wav(ALSA / f"{n}.wav")).f0_mean_hz for n in ("Front_Center", "Rear_Left", "Side_Right")]
    assert all(70 < f < 140 for f in male), male  # adult male speaking range
    assert all(150 < f < 280 for f in female), female  # adult female speaking range
    assert max(male) * 1.3 < min(female)


def test_streamed_frames_equal_one_shot() -> None:
    x = load_wav(MEDIA / "librivox_0870.wav")
    one = ProsodyTracker()
    one.update(0.0, x)
    streamed = ProsodyTracker()
    dur = x.shape[0] / SAMPLE_RATE
    end = 0.5
    while end < dur + 0.5:
        end = min(end, dur)
        start = max(0.0, end - 2.0)
        streamed.update(start, x[int(round(start * SAMPLE_RATE)) : int(round(end * SAMPLE_RATE))])
        if end >= dur:
            break
        end += 0.5
    assert streamed.frames_processed == one.frames_processed
    a, b = one.frames(0.0, dur), streamed.frames(0.0, dur)
    np.testing.assert_allclose(a.t, b.t)
    np.testing.assert_allclose(a.f0_hz, b.f0_hz, rtol=1e-6)  # NaN positions must match too
    np.testing.assert_allclose(a.rms_db, b.rms_db, rtol=1e-6)


def test_speaking_rate_counts_most_syllables() -> None:
    text = {}
    for line in (MEDIA / "librivox_transcription.txt").read_text().splitlines():
        words, key = line.rsplit("(", 1)
        text[key.strip(")")[-4:]] = words.replace("<s>", "").replace("</s>", "")
    for key, words in text.items():
        x = load_wav(MEDIA / f"librivox_{key}.wav")
        spans = spans_of(x)
        tracker = ProsodyTracker()
        tracker.update(0.0, x)
        feats = tracker.features(0.0, x.shape[0] / SAMPLE_RATE, spans)
        counted = feats.speaking_rate * feats.speech_s
        assert 0.6 * dictionary_syllables(words) <= counted <= 1.15 * dictionary_syllables(words), (key, counted)


def test_espeak_rate_pitch_and_energy_are_measured(tmp_path: Path) -> None:
    slow = analyze_clip(espeak(tmp_path, 30, 110, 60))
    fast = analyze_clip(espeak(tmp_path, 80, 260, 180))
    assert fast.f0_mean_st > slow.f0_mean_st + 3  # espeak -p 30 -> 80 is several semitones
    assert fast.energy_db > slow.energy_db + 3
    assert fast.speech_s < slow.speech_s
    assert fast.speaking_rate > 1.5 * slow.speaking_rate


def test_espeak_aroused_settings_give_higher_arousal(tmp_path: Path) -> None:
    """One simulated speaker talking calmly, neutrally and excitedly, streamed as windows."""
    calm = espeak(tmp_path, 25, 110, 60)
    neutral = espeak(tmp_path, 50, 170, 100)
    excited = espeak(tmp_path, 85, 260, 180)
    gap = np.zeros(SAMPLE_RATE, np.float32)
    x = np.concatenate([neutral, gap, calm, gap, excited, gap])
    bounds = np.cumsum([0, neutral.size, gap.size, calm.size, gap.size, excited.size]) / SAMPLE_RATE
    vad = VoiceActivityDetector()
    tracker = ProsodyTracker()
    per_part: dict[str, list[float]] = {"calm": [], "excited": []}
    confidences = []
    dur = x.shape[0] / SAMPLE_RATE
    end = 0.5
    while end <= dur:
        start = max(0.0, end - 2.0)
        w = x[int(round(start * SAMPLE_RATE)) : int(round(end * SAMPLE_RATE))]
        vad.update(start, w)
        tracker.update(start, w)
        res = tracker.analyze(start, end, vad.speech_spans(start, end))
        if res.features is not None:
            confidences.append(res.confidence)
            if bounds[2] <= start and end <= bounds[3]:
                per_part["calm"].append(res.arousal)
            elif bounds[4] <= start and end <= bounds[5]:
                per_part["excited"].append(res.arousal)
        end += 0.5
    calm_a, excited_a = np.mean(per_part["calm"]), np.mean(per_part["excited"])
    assert per_part["calm"] and per_part["excited"]
    assert excited_a > calm_a + 0.5, (calm_a, excited_a)
    assert excited_a > 0 > calm_a
    assert all(-1 <= a <= 1 for v in per_part.values() for a in v)
    assert confidences[0] < 0.2 and confidences[-1] > confidences[0]  # grows as speech accumulates


def test_normalizer_baseline_confidence_and_horizon() -> None:
    feats = analyze_clip(load_wav(MEDIA / "librivox_0870.wav"))
    norm = SpeakerNormalizer(NormalizerConfig(horizon_s=20.0, confidence_tau_s=10.0))
    assert norm.confidence == 0.0
    for i in range(10):
        norm.update(float(i), feats, 2.0)
    z = norm.zscores(feats)
    assert all(abs(v) < 0.2 for v in z.values())  # the speaker's own baseline reads as neutral
    assert norm.confidence == pytest.approx(1 - math.exp(-2.0), rel=1e-6)
    norm.update(100.0, feats, 1.0)  # 80 s later: old entries leave the horizon
    assert norm.speech_seen_s == pytest.approx(1.0)


def test_arousal_mapping_is_bounded_monotone_and_ignores_missing() -> None:
    assert arousal_from_prosody({}) == 0.0
    low = arousal_from_prosody(dict.fromkeys(AROUSAL_WEIGHTS, -1.0))
    high = arousal_from_prosody(dict.fromkeys(AROUSAL_WEIGHTS, 1.0))
    assert -1 < low < 0 < high < 1 and low == pytest.approx(-high)
    assert arousal_from_prosody(dict.fromkeys(AROUSAL_WEIGHTS, 50.0)) < 1.0
    missing_f0 = dict.fromkeys(AROUSAL_WEIGHTS, 1.0) | {"f0_mean_st": math.nan, "f0_std_st": math.nan, "f0_range_st": math.nan}
    assert arousal_from_prosody(missing_f0) == pytest.approx(high)
    assert sum(AROUSAL_WEIGHTS.values()) == pytest.approx(1.0)


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="fmin_hz"):
        PitchConfig(fmin_hz=600.0)
    with pytest.raises(ConfigError, match="smooth_s"):
        ProsodyConfig(smooth_s=0.001)
    with pytest.raises(ConfigError, match="lacks"):
        NormalizerConfig(prior_mean={"f0_mean_st": 7.0})
    with pytest.raises(ValueError, match="16000"):
        ProsodyTracker().update(0.0, np.zeros(100, np.float32), sample_rate=8000)


def test_cost_per_window() -> None:
    """Report the cost of one 2-s window at a 0.5-s hop (update + analyze)."""
    x = load_wav(MEDIA / "librivox_0870.wav")
    spans = spans_of(x)
    tracker = ProsodyTracker()
    times = []
    end = 2.0
    tracker.update(0.0, x[: 2 * SAMPLE_RATE])
    while end + 0.5 <= x.shape[0] / SAMPLE_RATE:
        end += 0.5
        start = end - 2.0
        t = time.perf_counter()
        tracker.update(start, x[int(start * SAMPLE_RATE) : int(end * SAMPLE_RATE)])
        tracker.analyze(start, end, [(max(a, start), min(b, end)) for a, b in spans])
        times.append(time.perf_counter() - t)
    ms = 1000 * float(np.median(times))
    print(f"prosody cost: {ms:.2f} ms per 2-s window (0.5-s hop)")
    assert ms < 50
