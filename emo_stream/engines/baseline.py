"""``baseline``: signal statistics, explicitly *not* an emotion model.

It exists so the streaming core can be run, tested and benchmarked end to end
with no model installed, and so a consumer can see what a state looks like.
It measures real, face-independent properties of each window (frame motion
energy, brightness, audio level and an energy/zero-crossing voicing ratio) and
reports them in ``signals``. It does not pretend to know an emotion: the
probabilities are uniform (maximum entropy), valence/arousal are ``None``,
every state carries the flag ``not_an_emotion_model`` and ``model_id`` says so.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from emo_stream.config import StreamConfig, build_dataclass
from emo_stream.engines.base import Engine, EngineOutput, register_engine
from emo_stream.labels import get_label_set
from emo_stream.stream.scheduler import Window

#: Frames are compared at about this size: enough for motion, cheap at any resolution.
_MOTION_SIDE = 64
#: 20 ms analysis frames for the voicing ratio.
_FRAME_S = 0.02
#: A frame counts as voiced above this level and below this zero-crossing rate
#: (voiced speech is periodic and low-ZCR; hiss and fricatives are high-ZCR).
_VOICED_DBFS = -45.0
_VOICED_MAX_ZCR = 0.25


def _grey_small(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    step = max(1, max(h, w) // _MOTION_SIDE)
    return image[::step, ::step].astype(np.float32).mean(axis=2)


def motion_energy(frames: list[np.ndarray]) -> float:
    """Mean absolute grey-level change between consecutive frames, in [0, 1]."""
    if len(frames) < 2:
        return 0.0
    small = [_grey_small(f) for f in frames]
    diffs = [np.abs(a - b).mean() for a, b in zip(small[:-1], small[1:]) if a.shape == b.shape]
    return float(np.mean(diffs) / 255.0) if diffs else 0.0


def audio_level_dbfs(samples: np.ndarray) -> float:
    """RMS level in dBFS (full-scale sine = -3 dBFS), floored at -120."""
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if samples.size else 0.0
    return max(-120.0, 20.0 * np.log10(rms + 1e-12))


def voiced_ratio(samples: np.ndarray, sample_rate: int) -> float:
    """Fraction of 20 ms frames that are loud enough and periodic enough to be voice.

    A heuristic for a window's "is someone vocalising" signal, not a VAD.
    """
    n = int(_FRAME_S * sample_rate)
    frames = samples[: samples.size // n * n].reshape(-1, n) if samples.size >= n else np.empty((0, n))
    if frames.shape[0] == 0:
        return 0.0
    rms_db = 20.0 * np.log10(np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1)) + 1e-12)
    zcr = np.mean(np.abs(np.diff(np.signbit(frames), axis=1)), axis=1)
    return float(np.mean((rms_db > _VOICED_DBFS) & (zcr < _VOICED_MAX_ZCR)))


@dataclass(frozen=True)
class BaselineOptions:
    """``engine.options`` of the baseline: it has none.

    Declared anyway so the options go through the one validated builder like
    every engine's: ``-o x=1`` (a typo, or an option meant for the default
    engine) is refused by name instead of being ignored, so a user never
    believes a setting took effect when it did not.
    """


class SignalStatsEngine(Engine):
    """Uniform probabilities plus measured signal statistics (see module docstring)."""

    def __init__(self, config: StreamConfig) -> None:
        self.options = build_dataclass(BaselineOptions, dict(config.engine.options), "engine.options")
        self.label_set = get_label_set(config.engine.label_set)
        self.model_id = f"baseline-signal-stats/not-an-emotion-model/{self.label_set.id}"

    def process(self, window: Window) -> EngineOutput:
        t0 = time.perf_counter()
        flags = ["not_an_emotion_model"]
        signals: dict[str, float] = {"frames": float(window.n_frames)}
        images = [f.image for f in window.frames if f.image.ndim == 3 and f.image.size]
        if images:
            signals["motion_energy"] = motion_energy(images)
            signals["brightness"] = float(np.mean([_grey_small(im).mean() for im in images]) / 255.0)
        t_video = time.perf_counter()
        if window.audio is not None:
            audio = window.audio.samples
            if not np.all(np.isfinite(audio)):
                flags.append("nan_input")
                audio = np.nan_to_num(audio, nan=0.0, posinf=0.0, neginf=0.0)
            signals["audio_dbfs"] = audio_level_dbfs(audio)
            signals["voiced_ratio"] = voiced_ratio(audio, window.audio.sample_rate)
            signals["audio_coverage"] = window.audio.coverage
        t_audio = time.perf_counter()
        parts = [f"{k}={v:.3g}" for k, v in signals.items() if k != "frames"]
        rationale = "signal statistics only (no emotion model): " + (", ".join(parts) if parts else "no input")
        return EngineOutput(
            probabilities=np.full(len(self.label_set), 1.0 / len(self.label_set)),
            modalities=window.modalities,
            rationale=rationale,
            rationale_stamp=window.end,
            latency_ms={"video_stats": (t_video - t0) * 1e3, "audio_stats": (t_audio - t_video) * 1e3},
            flags=flags,
            signals=signals,
        )


@register_engine("baseline")
def _make(config: StreamConfig) -> Engine:
    return SignalStatsEngine(config)
