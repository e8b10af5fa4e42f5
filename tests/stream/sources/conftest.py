"""Shared fixtures for the source tests: where the real test media lives, and draining a source."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from emo_stream.stream.samples import AudioChunk, Sample, SourceEvent, VideoFrame

REPO = Path(__file__).resolve().parents[3]

#: files the source tests read; made by scripts/fetch_test_media.sh
MEDIA_FILES = (
    "megamind.avi",
    "astronaut_speech.mp4",
    "astronaut_3s_noaudio.mp4",
    "silence_noface_3s.mp4",
    "speech_stereo_44k.wav",
    "librivox_0870.wav",
)


@pytest.fixture(scope="session")
def media() -> Path:
    """The test media directory ($EMO_STREAM_MEDIA or <repo>/.cache/media).

    Missing media is a failure, not a skip: a green run without media would
    claim the decoders were tested when they were not.
    """
    root = Path(os.environ.get("EMO_STREAM_MEDIA") or REPO / ".cache" / "media")
    missing = [name for name in MEDIA_FILES if not (root / name).is_file()]
    if missing:
        pytest.fail(f"test media missing in {root} ({', '.join(missing)}): run scripts/fetch_test_media.sh", pytrace=False)
    return root


@dataclass
class Collected:
    """Samples of one source, split by type, in the order they came."""

    items: list[Sample] = field(default_factory=list)

    @property
    def frames(self) -> list[VideoFrame]:
        return [s for s in self.items if isinstance(s, VideoFrame)]

    @property
    def chunks(self) -> list[AudioChunk]:
        return [s for s in self.items if isinstance(s, AudioChunk)]

    @property
    def events(self) -> list[SourceEvent]:
        return [s for s in self.items if isinstance(s, SourceEvent)]

    @property
    def audio(self) -> np.ndarray:
        chunks = self.chunks
        return np.concatenate([c.samples for c in chunks]) if chunks else np.zeros(0, np.float32)


def collect(samples: Iterable[Sample], limit: int | None = None) -> Collected:
    out = Collected()
    for s in samples:
        out.items.append(s)
        if limit is not None and len(out.items) >= limit:
            break
    return out


def read_wav_mono(path: Path) -> np.ndarray:
    """A 16-bit PCM mono WAV as float32, read with the stdlib (independent of PyAV)."""
    import wave

    with wave.open(str(path), "rb") as w:
        assert w.getsampwidth() == 2 and w.getnchannels() == 1, path
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768.0


def best_lag_corr(a: np.ndarray, b: np.ndarray, max_lag: int) -> tuple[int, float]:
    """Lag (samples, ``a`` later than ``b`` when positive) and Pearson correlation at that lag.

    The lag is found by FFT cross-correlation within +-``max_lag``; the
    correlation is then computed plainly on the overlapping parts.
    """
    n = min(len(a), len(b))
    x, y = a[:n].astype(np.float64), b[:n].astype(np.float64)
    size = 1 << int(np.ceil(np.log2(2 * n)))
    xc = np.fft.irfft(np.fft.rfft(x, size) * np.conj(np.fft.rfft(y, size)), size)
    lags = np.arange(-max_lag, max_lag + 1)
    lag = int(lags[np.argmax(xc[lags % size])])
    seg_a, seg_b = (x[lag:], y[: n - lag]) if lag >= 0 else (x[: n + lag], y[-lag:])
    return lag, float(np.corrcoef(seg_a, seg_b)[0, 1])


# Helpers as fixtures, so test modules need no import path tricks.
@pytest.fixture(name="collect")
def _collect_fixture():
    return collect


@pytest.fixture(name="read_wav_mono")
def _read_wav_fixture():
    return read_wav_mono


@pytest.fixture(name="best_lag_corr")
def _best_lag_corr_fixture():
    return best_lag_corr
