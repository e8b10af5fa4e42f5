"""Local view: an MAE ViT over face crops (MER2023's face MAE in Emotion-LLaMA)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

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
    masked_mean,
)


def _mae_large_backbone() -> dict[str, Any]:
    return dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                image_size=224, patch_size=16, layer_norm_eps=1e-6, qkv_bias=True, mask_ratio=0.0)


@dataclass(frozen=True)
class FaceViewConfig:
    """MAE ViT over face crops, one vector per frame (``transformers.ViTMAEConfig`` keywords)."""

    backbone: Mapping[str, Any] = field(default_factory=_mae_large_backbone)
    image_mean: tuple[float, ...] = IMAGENET_MEAN
    image_std: tuple[float, ...] = IMAGENET_STD

    def __post_init__(self) -> None:
        object.__setattr__(self, "backbone", canonical_mapping(self.backbone, "face view backbone"))
        object.__setattr__(self, "image_mean", tuple(float(v) for v in self.image_mean))
        object.__setattr__(self, "image_std", tuple(float(v) for v in self.image_std))
        _check_transformer(self.backbone, "face view", ("hidden_size", "num_attention_heads", "image_size", "patch_size"))
        if float(self.backbone.get("mask_ratio", 0.75)) != 0.0:
            raise ConfigError("face view: backbone mask_ratio must be 0.0 (an encoder sees the whole face)")
        _check_norm(self.image_mean, self.image_std, "face view")

    @classmethod
    def tiny(cls) -> "FaceViewConfig":
        return cls(backbone=dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                 image_size=16, patch_size=8, layer_norm_eps=1e-6, qkv_bias=True, mask_ratio=0.0))

    @property
    def hidden_size(self) -> int:
        return int(self.backbone["hidden_size"])

    @property
    def image_size(self) -> int:
        return int(self.backbone["image_size"])


class FaceViewEncoder(nn.Module):
    """MAE ViT per face crop: tokens = one vector per frame (B, F, D); pooled = mean over valid frames.

    The per-frame vector is the mean of the patch tokens of the final hidden
    state; MAE's random masking is disabled (mask_ratio 0 and an identity
    ``noise`` so the patch order is the image's).
    """

    def __init__(self, config: FaceViewConfig):
        super().__init__()
        from transformers import ViTMAEConfig, ViTMAEModel

        self.config = config
        self.backbone = ViTMAEModel(ViTMAEConfig(**config.backbone))

    def preprocess(self, images: Sequence[np.ndarray], boxes: Sequence[tuple[int, int, int, int] | None] | None = None) -> Tensor:
        """BGR uint8 face crops (or frames + boxes) -> (F, 3, S, S)."""
        return images_to_tensor(images, self.config.image_size, self.config.image_mean, self.config.image_std, boxes)

    def forward(self, pixel_values: Tensor, frame_mask: Tensor | None = None) -> EncoderOutput:
        if pixel_values.ndim == 4:
            pixel_values = pixel_values.unsqueeze(1)
        if pixel_values.ndim != 5:
            raise ValueError(f"face view expects (B, F, 3, S, S), got {tuple(pixel_values.shape)}")
        b, f = pixel_values.shape[:2]
        flat = pixel_values.flatten(0, 1).to(next(self.parameters()).dtype)
        n = (self.config.image_size // int(self.config.backbone["patch_size"])) ** 2
        noise = torch.arange(n, dtype=torch.float32, device=flat.device).expand(flat.shape[0], n)
        hidden = self.backbone(pixel_values=flat, noise=noise).last_hidden_state  # (B*F, 1 + n, D)
        per_frame = hidden[:, 1:].mean(dim=1).view(b, f, -1)
        mask = torch.ones(b, f, dtype=torch.bool, device=flat.device) if frame_mask is None else frame_mask.to(torch.bool)
        return EncoderOutput(tokens=per_frame, mask=mask, pooled=masked_mean(per_frame, mask))

    @classmethod
    def from_pretrained_dir(cls, path: str | Path) -> "FaceViewEncoder":
        from transformers import ViTMAEConfig, ViTMAEModel

        p = check_pretrained_dir(path, "face-view MAE", _HOW["face"])
        hf_cfg = ViTMAEConfig.from_pretrained(str(p), local_files_only=True)
        hf_cfg.mask_ratio = 0.0
        enc = cls.__new__(cls)
        nn.Module.__init__(enc)
        enc.config = FaceViewConfig(backbone=_config_kwargs(hf_cfg))
        enc.backbone = ViTMAEModel.from_pretrained(str(p), config=hf_cfg, local_files_only=True)
        return enc.eval()
