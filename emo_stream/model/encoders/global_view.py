"""Global view: an EVA-style ViT over the whole frame (MiniGPT-v2's EVA-CLIP-g)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from emo_stream.errors import ConfigError, ModelFileError
from emo_stream.model.encoders.common import (
    _HOW,
    CLIP_MEAN,
    CLIP_STD,
    EncoderOutput,
    _check_norm,
    _check_transformer,
    _config_kwargs,
    canonical_mapping,
    check_pretrained_dir,
    images_to_tensor,
)


def _eva_clip_g_backbone() -> dict[str, Any]:
    # create_eva_vit_g in MiniGPT-v2: embed 1408, depth 39 (the 40th block of
    # eva_vit_g.pth is dropped), 16 heads, mlp_ratio 4.3637 -> 6144, LayerNorm
    # eps 1e-6, exact GELU, q/v biases (k has none: converted as zeros).
    return dict(
        hidden_size=1408,
        num_hidden_layers=39,
        num_attention_heads=16,
        intermediate_size=6144,
        hidden_act="gelu",
        layer_norm_eps=1e-6,
        image_size=448,
        patch_size=14,
        num_channels=3,
        qkv_bias=True,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )


@dataclass(frozen=True)
class GlobalViewConfig:
    """EVA-style ViT over the whole frame.

    Attributes:
        backbone: ``transformers.ViTConfig`` keywords (default: EVA-CLIP-g at 448 px).
        image_mean, image_std: normalisation of RGB in [0, 1] (CLIP's for EVA).
        final_norm: apply the ViT's final LayerNorm. False for EVA: MiniGPT-v2
            takes the last block's raw output and normalises it with its own
            ``ln_vision`` (in :class:`~emo_stream.model.projectors.EmotionLlamaProjector`).
    """

    backbone: Mapping[str, Any] = field(default_factory=_eva_clip_g_backbone)
    image_mean: tuple[float, ...] = CLIP_MEAN
    image_std: tuple[float, ...] = CLIP_STD
    final_norm: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "backbone", canonical_mapping(self.backbone, "global view backbone"))
        object.__setattr__(self, "image_mean", tuple(float(v) for v in self.image_mean))
        object.__setattr__(self, "image_std", tuple(float(v) for v in self.image_std))
        _check_transformer(self.backbone, "global view", ("hidden_size", "num_attention_heads", "image_size", "patch_size"))
        if self.backbone["image_size"] % self.backbone["patch_size"]:
            raise ConfigError(f"global view: image_size {self.backbone['image_size']} is not a multiple of patch_size {self.backbone['patch_size']}")
        _check_norm(self.image_mean, self.image_std, "global view")

    @classmethod
    def tiny(cls) -> "GlobalViewConfig":
        # 8x8 patches of a 32 px image: 16 patch tokens (groups of 4 -> 4 LLM tokens).
        return cls(backbone=dict(hidden_size=24, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48,
                                 image_size=32, patch_size=8, layer_norm_eps=1e-6, qkv_bias=True))

    @property
    def hidden_size(self) -> int:
        return int(self.backbone["hidden_size"])

    @property
    def image_size(self) -> int:
        return int(self.backbone["image_size"])

    @property
    def num_patches(self) -> int:
        return (self.image_size // int(self.backbone["patch_size"])) ** 2


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
            self.backbone.layernorm = nn.Identity()

    def preprocess(self, images: Sequence[np.ndarray], boxes: Sequence[tuple[int, int, int, int] | None] | None = None) -> Tensor:
        """BGR uint8 frames -> (N, 3, S, S) pixel values."""
        return images_to_tensor(images, self.config.image_size, self.config.image_mean, self.config.image_std, boxes)

    def forward(self, pixel_values: Tensor) -> EncoderOutput:
        if pixel_values.ndim != 4:
            raise ValueError(f"global view expects (B, 3, S, S), got {tuple(pixel_values.shape)}")
        dtype = next(self.parameters()).dtype
        tokens = self.backbone(pixel_values=pixel_values.to(dtype)).last_hidden_state
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return EncoderOutput(tokens=tokens, mask=mask, pooled=tokens[:, 1:].mean(dim=1))

    @classmethod
    def from_pretrained_dir(cls, path: str | Path, final_norm: bool = False) -> "GlobalViewEncoder":
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
    def from_eva_checkpoint(cls, source: str | Path | Mapping[str, Tensor], config: GlobalViewConfig | None = None) -> "GlobalViewEncoder":
        """Build the EVA-CLIP-g global view from ``eva_vit_g.pth`` (or its state dict)."""
        config = config or GlobalViewConfig()
        if isinstance(source, Mapping):
            sd = dict(source)
        else:
            p = Path(source)
            if not p.is_file():
                raise ModelFileError(f"EVA checkpoint {p} not found. {_HOW['global']}")
            try:
                sd = torch.load(p, map_location="cpu", weights_only=True)
            except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not a plain tensor file"
                raise ModelFileError(f"EVA checkpoint {p} cannot be read as plain tensors ({type(exc).__name__}: {exc})") from None
            if isinstance(sd, Mapping) and "model" in sd and isinstance(sd["model"], Mapping):
                sd = dict(sd["model"])
        enc = cls(config)
        target = enc.backbone.state_dict()
        converted = convert_eva_vit_state_dict(sd, config, target_keys=target.keys())
        enc.backbone.load_state_dict(converted, strict=True)
        return enc.eval()


def _pick(target_keys: Any, *candidates: str) -> str:
    for c in candidates:
        if c in target_keys:
            return c
    raise ModelFileError(f"none of {candidates} exists in this transformers ViT (unsupported transformers version?)")


def convert_eva_vit_state_dict(
    sd: Mapping[str, Tensor], config: GlobalViewConfig, target_keys: Any
) -> dict[str, Tensor]:
    """Map an EVA ViT state dict (MiniGPT-v2's ``eva_vit.py`` layout) onto ``transformers.ViTModel``.

    * ``blocks.i.attn.qkv.weight`` is split into q/k/v; EVA has ``q_bias`` and
      ``v_bias`` but no k bias, which is exactly a zero k bias.
    * layer-scale ``gamma_1``/``gamma_2`` (absent in EVA-g) are folded into the
      output projections.
    * ``pos_embed`` is resized bicubically to the configured grid the way
      ``interpolate_pos_embed`` does (eva_vit_g.pth is 224 px, MiniGPT-v2 runs 448).
    * blocks beyond ``num_hidden_layers`` (EVA-g's 40th) and the final
      ``norm``/``head`` are dropped, as MiniGPT-v2's ``strict=False`` load does.
    """
    depth = int(config.backbone["num_hidden_layers"])
    d = config.hidden_size
    out: dict[str, Tensor] = {}
    need = ["cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias"]
    missing = [k for k in need if k not in sd]
    for i in range(depth):
        for part in ("norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.proj.weight", "attn.proj.bias",
                     "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias"):
            if f"blocks.{i}.{part}" not in sd:
                missing.append(f"blocks.{i}.{part}")
    if any(k.startswith("rel_pos_bias") or ".attn.relative_position" in k for k in sd):
        raise ModelFileError("EVA checkpoint uses relative position bias, which transformers' ViT cannot express")
    if missing:
        raise ModelFileError(f"EVA checkpoint lacks {len(missing)} tensor(s): {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")

    tk = set(target_keys)
    out[_pick(tk, "embeddings.cls_token")] = sd["cls_token"].float()
    pos = sd["pos_embed"].float()
    n_new = config.num_patches
    if pos.shape[1] - 1 != n_new:
        g0 = int(round(math.sqrt(pos.shape[1] - 1)))
        g1 = int(round(math.sqrt(n_new)))
        grid = pos[:, 1:].reshape(1, g0, g0, d).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(g1, g1), mode="bicubic", align_corners=False)
        pos = torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, g1 * g1, d)], dim=1)
    out[_pick(tk, "embeddings.position_embeddings")] = pos
    out[_pick(tk, "embeddings.patch_embeddings.projection.weight")] = sd["patch_embed.proj.weight"].float()
    out[_pick(tk, "embeddings.patch_embeddings.projection.bias")] = sd["patch_embed.proj.bias"].float()
    for i in range(depth):
        b = f"blocks.{i}."
        new = f"layers.{i}." if f"layers.{i}.layernorm_before.weight" in tk else f"encoder.layer.{i}."
        q_w, k_w, v_w = sd[b + "attn.qkv.weight"].float().chunk(3, dim=0)
        zeros = torch.zeros(d)
        q_b = sd.get(b + "attn.q_bias", zeros).float()
        v_b = sd.get(b + "attn.v_bias", zeros).float()
        proj_w, proj_b = sd[b + "attn.proj.weight"].float(), sd[b + "attn.proj.bias"].float()
        fc2_w, fc2_b = sd[b + "mlp.fc2.weight"].float(), sd[b + "mlp.fc2.bias"].float()
        if b + "gamma_1" in sd:  # layer scale: gamma * (W x + b) == (gamma W) x + gamma b
            g1 = sd[b + "gamma_1"].float()
            proj_w, proj_b = proj_w * g1[:, None], proj_b * g1
        if b + "gamma_2" in sd:
            g2 = sd[b + "gamma_2"].float()
            fc2_w, fc2_b = fc2_w * g2[:, None], fc2_b * g2
        att = (new + "attention.") if new.startswith("layers") else (new + "attention.attention.")
        names = {
            "q": _pick(tk, att + "q_proj.weight", att + "query.weight"),
            "k": _pick(tk, att + "k_proj.weight", att + "key.weight"),
            "v": _pick(tk, att + "v_proj.weight", att + "value.weight"),
            "o": _pick(tk, new + "attention.o_proj.weight", new + "attention.output.dense.weight"),
            "fc1": _pick(tk, new + "mlp.fc1.weight", new + "intermediate.dense.weight"),
            "fc2": _pick(tk, new + "mlp.fc2.weight", new + "output.dense.weight"),
        }
        out[names["q"]], out[names["q"][:-6] + "bias"] = q_w, q_b
        out[names["k"]], out[names["k"][:-6] + "bias"] = k_w, zeros.clone()
        out[names["v"]], out[names["v"][:-6] + "bias"] = v_w, v_b
        out[names["o"]], out[names["o"][:-6] + "bias"] = proj_w, proj_b
        out[names["fc1"]], out[names["fc1"][:-6] + "bias"] = sd[b + "mlp.fc1.weight"].float(), sd[b + "mlp.fc1.bias"].float()
        out[names["fc2"]], out[names["fc2"][:-6] + "bias"] = fc2_w, fc2_b
        for ours, theirs in (("layernorm_before", "norm1"), ("layernorm_after", "norm2")):
            out[new + ours + ".weight"] = sd[b + theirs + ".weight"].float()
            out[new + ours + ".bias"] = sd[b + theirs + ".bias"].float()
    # The model's own final LayerNorm (kept only with final_norm=True) has no EVA counterpart in MiniGPT-v2.
    for key in tk - set(out):
        if key.startswith("layernorm."):
            out[key] = torch.ones(d) if key.endswith("weight") else torch.zeros(d)
    unknown = sorted(set(out) - tk)
    if unknown:
        raise ModelFileError(f"EVA conversion produced keys this ViT does not have: {unknown[:5]}")
    return out
