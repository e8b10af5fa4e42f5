"""Global view: an EVA-style ViT over the whole frame (MiniGPT-v2's EVA-CLIP-g)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from emo_stream.errors import ModelFileError
from emo_stream.model.configs.encoders import (
    GlobalViewConfig as GlobalViewConfig,
)

# moved to a torch-free module (emo_stream.model.configs); re-exported here
from emo_stream.model.configs.encoders import (
    _eva_clip_g_backbone as _eva_clip_g_backbone,
)
from emo_stream.model.encoders.common import (
    _HOW,
    EncoderOutput,
    _config_kwargs,
    check_pretrained_dir,
    images_to_tensor,
)
from emo_stream.model.encoders.timm_convert import (
    check_complete,
    convert_block,
    missing_block_keys,
    pick,
    read_torch_checkpoint,
    report_conversion,
    resize_grid_pos_embed,
)


class GlobalViewEncoder(nn.Module):
    """Whole-frame ViT: tokens = [CLS, patch_1 .. patch_N] (B, 1 + N, D); pooled = mean of the patch tokens."""

    def __init__(self, config: GlobalViewConfig):
        super().__init__()
        from transformers import ViTConfig, ViTModel

        self.config = config
        self.backbone = ViTModel(ViTConfig(**config.backbone), add_pooling_layer=False)
        self._drop_final_norm()

    def _drop_final_norm(self) -> None:
        if not self.config.final_norm:
            self.backbone.layernorm = nn.Identity()  # type: ignore[assignment]  # transformers types it LayerNorm; Identity drops it

    def preprocess(self, images: Sequence[np.ndarray], boxes: Sequence[tuple[int, int, int, int] | None] | None = None) -> Tensor:
        """BGR uint8 frames -> (N, 3, S, S) pixel values."""
        return images_to_tensor(images, self.config.image_size, self.config.image_mean, self.config.image_std, boxes, interpolation=self.config.interpolation)

    def forward(self, pixel_values: Tensor) -> EncoderOutput:
        if pixel_values.ndim != 4:
            raise ValueError(f"global view expects (B, 3, S, S), got {tuple(pixel_values.shape)}")
        dtype = next(self.parameters()).dtype
        tokens = self.backbone(pixel_values=pixel_values.to(dtype)).last_hidden_state
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return EncoderOutput(tokens=tokens, mask=mask, pooled=tokens[:, 1:].mean(dim=1))

    @classmethod
    def from_pretrained_dir(cls, path: str | Path, final_norm: bool = False) -> GlobalViewEncoder:
        """Load a transformers ViT directory (config.json + weights)."""
        from transformers import ViTConfig, ViTModel

        p = check_pretrained_dir(path, "global-view ViT", _HOW["global"])
        backbone = ViTModel.from_pretrained(str(p), local_files_only=True, add_pooling_layer=False)
        enc = cls.__new__(cls)
        nn.Module.__init__(enc)
        enc.config = GlobalViewConfig(backbone=_config_kwargs(ViTConfig.from_pretrained(str(p), local_files_only=True)), final_norm=final_norm)
        enc.backbone = backbone
        enc._drop_final_norm()
        return enc.eval()

    @classmethod
    def from_eva_checkpoint(cls, source: str | Path | Mapping[str, Tensor], config: GlobalViewConfig | None = None) -> GlobalViewEncoder:
        """Build the EVA-CLIP-g global view from ``eva_vit_g.pth`` (or its state dict); prints one progress line."""
        config = config or GlobalViewConfig()
        sd = dict(source) if isinstance(source, Mapping) else read_torch_checkpoint(source, "EVA", _HOW["global"])
        enc = cls(config)
        target = enc.backbone.state_dict()
        ignored: dict[str, str] = {}
        converted = convert_eva_vit_state_dict(sd, config, target_keys=target.keys(), ignored=ignored)
        enc.backbone.load_state_dict(converted, strict=True)
        report_conversion("global view (EVA ViT)", source, len(converted), ignored)
        return enc.eval()


def convert_eva_vit_state_dict(
    sd: Mapping[str, Tensor], config: GlobalViewConfig, target_keys: Any, ignored: dict[str, str] | None = None
) -> dict[str, Tensor]:
    """Map an EVA ViT state dict (MiniGPT-v2's ``eva_vit.py`` layout) onto ``transformers.ViTModel``.

    * blocks as :func:`~emo_stream.model.encoders.timm_convert.convert_block`
      maps them (qkv split, q/v bias with a zero k bias, layer scale folded);
    * ``pos_embed`` is resized bicubically to the configured grid the way
      ``interpolate_pos_embed`` does (eva_vit_g.pth is 224 px, MiniGPT-v2 runs 448);
    * skipped, as MiniGPT-v2's ``load_state_dict(strict=False)`` skips them:
      blocks beyond ``num_hidden_layers`` (EVA-g's 40th), the final
      ``norm``/``head``, and relative-position-bias tensors (``rel_pos_bias.*``,
      ``blocks.*.attn.relative_position_*``: ``create_eva_vit_g`` builds the
      model with ``use_rel_pos_bias=False``, so they never take part).
      Each skipped key is recorded in ``ignored`` with the reason.
    """
    depth = int(config.backbone["num_hidden_layers"])
    d = config.hidden_size
    need = ["cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias"]
    missing = [k for k in need if k not in sd] + missing_block_keys(sd, depth)
    if missing:
        raise ModelFileError(f"EVA checkpoint lacks {len(missing)} tensor(s): {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")

    tk = set(target_keys)
    out: dict[str, Tensor] = {}
    out[pick(tk, "embeddings.cls_token")] = sd["cls_token"].float()
    g = int(config.image_size // int(config.backbone["patch_size"]))
    out[pick(tk, "embeddings.position_embeddings")] = resize_grid_pos_embed(sd["pos_embed"].float(), 1, (g, g))
    out[pick(tk, "embeddings.patch_embeddings.projection.weight")] = sd["patch_embed.proj.weight"].float()
    out[pick(tk, "embeddings.patch_embeddings.projection.bias")] = sd["patch_embed.proj.bias"].float()
    for i in range(depth):
        out.update(convert_block(sd, i, tk, d))
    # The model's own final LayerNorm (kept only with final_norm=True) has no EVA counterpart in MiniGPT-v2.
    for key in tk - set(out):
        if key.startswith("layernorm."):
            out[key] = torch.ones(d) if key.endswith("weight") else torch.zeros(d)
    check_complete(out, tk, "EVA")
    if ignored is not None:
        used = {"cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias"}
        used |= {k for k in sd if any(k.startswith(f"blocks.{i}.") for i in range(depth))}
        for key in sd:
            if key in used and ".relative_position" not in key:
                continue
            if key.startswith("rel_pos_bias") or ".relative_position" in key:
                ignored[key] = "relative-position-bias tensors (MiniGPT-v2 runs EVA without them)"
            elif key.startswith("blocks."):
                ignored[key] = f"blocks beyond the {depth} MiniGPT-v2 uses"
            else:
                ignored[key] = "tensors outside the ViT trunk (norm/head/other), unused by MiniGPT-v2"
    return out
