"""Local view: an MAE ViT over face crops (MER2023's face MAE in Emotion-LLaMA)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from emo_stream.errors import ModelFileError
from emo_stream.model.configs.encoders import (
    FACE_POOLINGS as FACE_POOLINGS,
)
from emo_stream.model.configs.encoders import (
    FaceViewConfig as FaceViewConfig,
)

# moved to a torch-free module (emo_stream.model.configs); re-exported here
from emo_stream.model.configs.encoders import (
    _mae_large_backbone as _mae_large_backbone,
)
from emo_stream.model.encoders.common import (
    _HOW,
    EncoderOutput,
    _config_kwargs,
    check_pretrained_dir,
    images_to_tensor,
    masked_mean,
)
from emo_stream.model.encoders.timm_convert import (
    check_complete,
    convert_block,
    missing_block_keys,
    pick,
    read_torch_checkpoint,
    report_conversion,
    resize_grid_pos_embed,
    strip_prefix,
)


class FaceViewEncoder(nn.Module):
    """MAE ViT per face crop: tokens = one vector per frame (B, F, D); pooled = mean over valid frames.

    The per-frame vector is :meth:`frame_features` (CLS after the final norm by
    default); MAE's random masking is disabled (mask_ratio 0 and an identity
    ``noise`` so the patch order is the image's).
    """

    def __init__(self, config: FaceViewConfig):
        super().__init__()
        from transformers import ViTMAEConfig, ViTMAEModel

        self.config = config
        self.backbone = ViTMAEModel(ViTMAEConfig(**config.backbone))

    def preprocess(self, images: Sequence[np.ndarray], boxes: Sequence[tuple[int, int, int, int] | None] | None = None) -> Tensor:
        """BGR uint8 face crops (or frames + boxes) -> (F, 3, S, S)."""
        return images_to_tensor(images, self.config.image_size, self.config.image_mean, self.config.image_std, boxes, interpolation=self.config.interpolation)

    def frame_features(self, pixel_values: Tensor) -> Tensor:
        """(N, 3, S, S) face crops -> (N, D) per-frame features (the one definition; ONNX export uses it too)."""
        n = self.config.num_patches
        noise = torch.arange(n, dtype=torch.float32, device=pixel_values.device).expand(pixel_values.shape[0], n)
        hidden = self.backbone(pixel_values=pixel_values, noise=noise).last_hidden_state  # (N, 1 + n, D), final norm applied
        return hidden[:, 0] if self.config.pooling == "cls" else hidden[:, 1:].mean(dim=1)

    def forward(self, pixel_values: Tensor, frame_mask: Tensor | None = None) -> EncoderOutput:
        if pixel_values.ndim == 4:
            pixel_values = pixel_values.unsqueeze(1)
        if pixel_values.ndim != 5:
            raise ValueError(f"face view expects (B, F, 3, S, S), got {tuple(pixel_values.shape)}")
        b, f = pixel_values.shape[:2]
        flat = pixel_values.flatten(0, 1).to(next(self.parameters()).dtype)
        per_frame = self.frame_features(flat).view(b, f, -1)
        mask = torch.ones(b, f, dtype=torch.bool, device=flat.device) if frame_mask is None else frame_mask.to(torch.bool)
        return EncoderOutput(tokens=per_frame, mask=mask, pooled=masked_mean(per_frame, mask))

    @classmethod
    def from_pretrained_dir(cls, path: str | Path, **view_options: Any) -> FaceViewEncoder:
        """Load a transformers ViTMAE directory; ``view_options`` override :class:`FaceViewConfig` preprocessing fields."""
        from transformers import ViTMAEConfig, ViTMAEModel

        p = check_pretrained_dir(path, "face-view MAE", _HOW["face"])
        hf_cfg = ViTMAEConfig.from_pretrained(str(p), local_files_only=True)
        hf_cfg.mask_ratio = 0.0
        enc = cls.__new__(cls)
        nn.Module.__init__(enc)
        enc.config = FaceViewConfig(backbone=_config_kwargs(hf_cfg), **view_options)
        enc.backbone = ViTMAEModel.from_pretrained(str(p), config=hf_cfg, local_files_only=True)
        return enc.eval()

    @classmethod
    def from_mae_checkpoint(cls, source: str | Path | Mapping[str, Tensor], config: FaceViewConfig | None = None) -> FaceViewEncoder:
        """Build the face view from the authors' MAE checkpoint (timm-style ``{'model': ...}``); prints one progress line."""
        config = config or FaceViewConfig()
        sd = dict(source) if isinstance(source, Mapping) else read_torch_checkpoint(source, "face-view MAE", _HOW["face"])
        enc = cls(config)
        ignored: dict[str, str] = {}
        converted = convert_mae_vit_state_dict(sd, config, enc.backbone.state_dict().keys(), ignored)
        enc.backbone.load_state_dict(converted, strict=True)
        report_conversion("face view (MAE ViT)", source, len(converted), ignored)
        return enc.eval()


def convert_mae_vit_state_dict(sd: Mapping[str, Tensor], config: FaceViewConfig, target_keys: Any, ignored: dict[str, str] | None = None) -> dict[str, Tensor]:
    """Map an MAE ViT checkpoint (``models_mae`` pre-training or ``models_vit`` layout) onto ``transformers.ViTMAEModel``.

    Read: ``cls_token``, ``pos_embed`` (resized to the configured grid if it
    differs), ``patch_embed.proj``, the blocks (``attn.qkv`` with its full
    bias) and the final ``norm`` -- what ``vit_large_patch16(global_pool=False)``
    uses. Skipped, as its ``load_state_dict(strict=False)`` leaves them out of
    the feature: MAE's decoder (``decoder_*``, ``mask_token``), ``head``,
    ``fc_norm`` (only used with ``global_pool=True``) and blocks beyond the
    configured depth. A ``module.`` wrapper prefix is removed. Anything missing
    is listed in one ModelFileError.
    """
    sd = strip_prefix(sd, ("module.", "backbone."))
    depth = int(config.backbone["num_hidden_layers"])
    d = config.hidden_size
    need = ["cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias", "norm.weight", "norm.bias"]
    missing = [k for k in need if k not in sd] + missing_block_keys(sd, depth)
    if missing:
        hint = (
            " (a global_pool=True fine-tune has fc_norm instead of norm: the original feature needs norm)"
            if "fc_norm.weight" in sd and "norm.weight" not in sd
            else ""
        )
        raise ModelFileError(f"MAE checkpoint lacks {len(missing)} tensor(s): {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}{hint}")
    tk = set(target_keys)
    g = config.image_size // int(config.backbone["patch_size"])
    out: dict[str, Tensor] = {
        pick(tk, "embeddings.cls_token"): sd["cls_token"].float(),
        pick(tk, "embeddings.position_embeddings"): resize_grid_pos_embed(sd["pos_embed"].float(), 1, (g, g)),
        pick(tk, "embeddings.patch_embeddings.projection.weight"): sd["patch_embed.proj.weight"].float(),
        pick(tk, "embeddings.patch_embeddings.projection.bias"): sd["patch_embed.proj.bias"].float(),
        pick(tk, "layernorm.weight"): sd["norm.weight"].float(),
        pick(tk, "layernorm.bias"): sd["norm.bias"].float(),
    }
    for i in range(depth):
        out.update(convert_block(sd, i, tk, d))
    check_complete(out, tk, "MAE")
    if ignored is not None:
        for key in sd:
            if key in need or any(key.startswith(f"blocks.{i}.") for i in range(depth)):
                continue
            if key.startswith("decoder") or key == "mask_token":
                ignored[key] = "MAE decoder tensors"
            elif key.startswith(("head.", "fc_norm.")):
                ignored[key] = "classifier head / fc_norm (unused with global_pool=False)"
            else:
                ignored[key] = "tensors the original feature does not use"
    return out
