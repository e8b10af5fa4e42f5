"""Temporal view: VideoMAE over a short clip."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from emo_stream.errors import ConfigError
from emo_stream.model.encoders.common import (
    _HOW,
    IMAGENET_MEAN,
    IMAGENET_STD,
    EncoderOutput,
    _check_norm,
    _check_transformer,
    _config_kwargs,
    canonical_mapping,
    check_pretrained_dir,
    images_to_tensor,
)


def _videomae_large_backbone() -> dict[str, Any]:
    return dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                image_size=224, patch_size=16, num_frames=16, tubelet_size=2, qkv_bias=True, use_mean_pooling=True)


@dataclass(frozen=True)
class TemporalViewConfig:
    """VideoMAE over K frames (``transformers.VideoMAEConfig`` keywords)."""

    backbone: Mapping[str, Any] = field(default_factory=_videomae_large_backbone)
    image_mean: tuple[float, ...] = IMAGENET_MEAN
    image_std: tuple[float, ...] = IMAGENET_STD

    def __post_init__(self) -> None:
        object.__setattr__(self, "backbone", canonical_mapping(self.backbone, "temporal view backbone"))
        object.__setattr__(self, "image_mean", tuple(float(v) for v in self.image_mean))
        object.__setattr__(self, "image_std", tuple(float(v) for v in self.image_std))
        _check_transformer(self.backbone, "temporal view", ("hidden_size", "num_attention_heads", "image_size", "patch_size", "num_frames", "tubelet_size"))
        if self.backbone["num_frames"] % self.backbone["tubelet_size"]:
            raise ConfigError(f"temporal view: num_frames {self.backbone['num_frames']} is not a multiple of tubelet_size {self.backbone['tubelet_size']}")
        _check_norm(self.image_mean, self.image_std, "temporal view")

    @classmethod
    def tiny(cls) -> "TemporalViewConfig":
        return cls(backbone=dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                 image_size=16, patch_size=8, num_frames=4, tubelet_size=2, qkv_bias=True))

    @property
    def hidden_size(self) -> int:
        return int(self.backbone["hidden_size"])

    @property
    def image_size(self) -> int:
        return int(self.backbone["image_size"])

    @property
    def num_frames(self) -> int:
        return int(self.backbone["num_frames"])


def resample_frame_indices(n_available: int, n_wanted: int) -> list[int]:
    """``n_wanted`` indices spread uniformly over ``n_available`` frames (repeating when there are fewer)."""
    if n_available < 1:
        raise ValueError("no frames to sample from")
    return [min(n_available - 1, int((i + 0.5) * n_available / n_wanted)) for i in range(n_wanted)]


def sinusoid_table(n_position: int, d_hid: int) -> Tensor:
    """VideoMAE's fixed sinusoidal position table, vectorised.

    Same formula and float64 arithmetic as transformers'
    ``get_sinusoid_encoding_table`` (which loops in Python: ~6 s for ViT-L's
    1568 x 1024 table on a small CPU, at every construction).
    """
    pos = np.arange(n_position, dtype=np.float64)[:, None]
    j = np.arange(d_hid)
    table = pos / np.power(10000, 2 * (j // 2) / d_hid)[None, :]
    table[:, 0::2] = np.sin(table[:, 0::2])
    table[:, 1::2] = np.cos(table[:, 1::2])
    # Explicit CPU like transformers' torch.FloatTensor(...): from_pretrained builds under a meta-device context.
    return torch.tensor(table, dtype=torch.float32, device="cpu").unsqueeze(0)


@contextmanager
def _fast_videomae_tables() -> Iterator[None]:
    import transformers.models.videomae.modeling_videomae as vm

    original = vm.get_sinusoid_encoding_table
    vm.get_sinusoid_encoding_table = sinusoid_table
    try:
        yield
    finally:
        vm.get_sinusoid_encoding_table = original


class TemporalViewEncoder(nn.Module):
    """VideoMAE: tokens = its spatio-temporal tokens (B, T, D); pooled = their mean."""

    def __init__(self, config: TemporalViewConfig):
        super().__init__()
        from transformers import VideoMAEConfig, VideoMAEModel

        self.config = config
        with _fast_videomae_tables():
            self.backbone = VideoMAEModel(VideoMAEConfig(**config.backbone))

    def preprocess(self, images: Sequence[np.ndarray], boxes: Sequence[tuple[int, int, int, int] | None] | None = None) -> Tensor:
        """K BGR frames (any K >= 1) -> (num_frames, 3, S, S), resampled uniformly in time."""
        if not images:
            raise ValueError("temporal view needs at least one frame")
        idx = resample_frame_indices(len(images), self.config.num_frames)
        picked = [images[i] for i in idx]
        picked_boxes = None if boxes is None else [boxes[i] for i in idx]
        return images_to_tensor(picked, self.config.image_size, self.config.image_mean, self.config.image_std, picked_boxes)

    def forward(self, pixel_values: Tensor) -> EncoderOutput:
        if pixel_values.ndim != 5 or pixel_values.shape[1] != self.config.num_frames:
            raise ValueError(f"temporal view expects (B, {self.config.num_frames}, 3, S, S), got {tuple(pixel_values.shape)}")
        tokens = self.backbone(pixel_values=pixel_values.to(next(self.parameters()).dtype)).last_hidden_state
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return EncoderOutput(tokens=tokens, mask=mask, pooled=tokens.mean(dim=1))

    @classmethod
    def from_pretrained_dir(cls, path: str | Path) -> "TemporalViewEncoder":
        from transformers import VideoMAEConfig, VideoMAEModel

        p = check_pretrained_dir(path, "temporal-view VideoMAE", _HOW["temporal"])
        enc = cls.__new__(cls)
        nn.Module.__init__(enc)
        enc.config = TemporalViewConfig(backbone=_config_kwargs(VideoMAEConfig.from_pretrained(str(p), local_files_only=True)))
        with _fast_videomae_tables():
            enc.backbone = VideoMAEModel.from_pretrained(str(p), local_files_only=True)
        return enc.eval()
