"""Emotion-LLaMA's modality encoders, built from transformers model classes.

Emotion-LLaMA (Cheng et al., 2024) reads a clip through four frozen encoders:

* **global view** -- EVA-CLIP-g (MiniGPT-v2's ViT, 448 px, patch 14): 1 CLS +
  1024 patch tokens of width 1408, taken *before* any final norm (MiniGPT-v2
  applies its own ``ln_vision``, which lives in the projector here);
* **local view** -- an MAE ViT-L on face crops: one 1024-d vector per frame
  (mean of the patch tokens), averaged over the frames ("MAE UTT" features);
* **temporal view** -- VideoMAE ViT-L on 16 frames: the mean of its tokens;
* **audio** -- HuBERT-large on 16 kHz speech: the mean of its frame features.
  Emotion-LLaMAv2 uses a Whisper encoder instead (``kind="whisper"``).

Every encoder returns an :class:`EncoderOutput` holding both the token sequence
(what the v2 conv-attention fusion consumes) and the utterance-level pooled
vector (what the v1 projector consumes, as Emotion-LLaMA feeds 1024-d utterance
features).

Structure per encoder, after openai/whisper and huggingface/lerobot: a frozen
config dataclass validated in ``__post_init__`` (its ``backbone`` mapping is the
keyword set of the transformers config class, so it serialises to JSON), an
``nn.Module``, and the constructors ``Encoder(config)`` (random init),
``Config.tiny()`` (a few-thousand-parameter network for tests) and
``Encoder.from_pretrained_dir(path)`` (a *local* directory only; nothing is ever
downloaded). Preprocessing (BGR uint8 frames -> normalised tensors, raw audio ->
normalised waveform or Whisper log-mel) is a method of each encoder so the
numbers that must match the weights (image size, mean/std, mel settings) live
next to them.
"""

from __future__ import annotations

import json
import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from emo_stream.errors import ConfigError, ModelFileError

#: OpenAI CLIP normalisation (EVA-CLIP / BLIP-2 image processors use it).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
#: ImageNet normalisation (MAE / VideoMAE).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


@dataclass
class EncoderOutput:
    """What an encoder produces for a batch.

    Attributes:
        tokens: (B, T, D) token sequence.
        mask: (B, T) bool, True where a token carries data (padding and absent
            frames are False).
        pooled: (B, D) utterance-level feature: the mean of the valid tokens
            (zeros where a row has none).
    """

    tokens: Tensor
    mask: Tensor
    pooled: Tensor


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``x`` (B, T, D) over the tokens where ``mask`` (B, T) is True; 0 if none."""
    w = mask.to(x.dtype).unsqueeze(-1)
    return (x * w).sum(dim=1) / w.sum(dim=1).clamp_min(1.0)


def _check_norm(mean: Sequence[float], std: Sequence[float], what: str) -> None:
    if len(mean) != 3 or len(std) != 3:
        raise ConfigError(f"{what}: image_mean and image_std need 3 values (RGB), got {mean} / {std}")
    if any(not s > 0 for s in std):
        raise ConfigError(f"{what}: image_std must be positive, got {std}")


def canonical_mapping(obj: Any, what: str) -> Any:
    """``obj`` as JSON would return it (tuples -> lists), so configs compare equal after a save/load.

    Raises ConfigError when ``obj`` is not JSON-serialisable.
    """
    try:
        return json.loads(json.dumps(dict(obj)))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what} must be JSON-serialisable: {exc}") from None


def _check_transformer(bb: Mapping[str, Any], what: str, keys: Sequence[str] = ("hidden_size", "num_attention_heads")) -> None:
    for key in keys:
        if key not in bb:
            raise ConfigError(f"{what}: backbone needs {key!r}")
    if bb["hidden_size"] % bb["num_attention_heads"]:
        raise ConfigError(f"{what}: hidden_size {bb['hidden_size']} is not divisible by num_attention_heads {bb['num_attention_heads']}")


# ---------------------------------------------------------------------------
# image preprocessing
# ---------------------------------------------------------------------------


def center_square_box(height: int, width: int, fraction: float = 1.0) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the centred square whose side is ``fraction`` x the shorter side."""
    if not 0 < fraction <= 1:
        raise ConfigError(f"crop fraction must be in (0, 1], got {fraction}")
    side = max(1, int(round(min(height, width) * fraction)))
    x0 = (width - side) // 2
    y0 = (height - side) // 2
    return x0, y0, x0 + side, y0 + side


def images_to_tensor(
    images: Sequence[np.ndarray],
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    boxes: Sequence[tuple[int, int, int, int] | None] | None = None,
) -> Tensor:
    """BGR uint8 (H, W, 3) frames -> (N, 3, size, size) float32, RGB, normalised.

    Each image is optionally cropped to its box (x0, y0, x1, y1; clipped to the
    image), resized to ``size`` x ``size`` with antialiased bicubic
    interpolation (BLIP-2's eval processor resizes without keeping the aspect
    ratio; so do we), scaled to [0, 1] and normalised with ``mean``/``std``.
    """
    if boxes is not None and len(boxes) != len(images):
        raise ValueError(f"{len(boxes)} boxes for {len(images)} images")
    out = []
    for i, img in enumerate(images):
        if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3 or img.shape[0] < 1 or img.shape[1] < 1:
            raise ValueError(f"image {i} must be a uint8 (H, W, 3) BGR array, got {getattr(img, 'dtype', type(img))} {getattr(img, 'shape', '')}")
        if boxes is not None and boxes[i] is not None:
            x0, y0, x1, y1 = boxes[i]
            h, w = img.shape[:2]
            x0, x1 = max(0, int(x0)), min(w, int(x1))
            y0, y1 = max(0, int(y0)), min(h, int(y1))
            if x1 <= x0 or y1 <= y0:
                raise ValueError(f"crop box {boxes[i]} is empty for an image of {w}x{h}")
            img = img[y0:y1, x0:x1]
        t = torch.from_numpy(np.ascontiguousarray(img[:, :, ::-1])).permute(2, 0, 1).unsqueeze(0).float()
        if t.shape[-2:] != (size, size):
            t = F.interpolate(t, size=(size, size), mode="bicubic", align_corners=False, antialias=True).clamp_(0.0, 255.0)
        out.append(t[0])
    if not out:
        return torch.zeros(0, 3, size, size)
    x = torch.stack(out) / 255.0
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (x - m) / s


# ---------------------------------------------------------------------------
# local weight directories
# ---------------------------------------------------------------------------


def check_pretrained_dir(path: str | Path, what: str, how: str) -> Path:
    """Check ``path`` is a local transformers model dir (config.json + weights).

    Raises one :class:`ModelFileError` naming everything that is missing and how
    to get it.
    """
    p = Path(path)
    missing = []
    if not p.is_dir():
        raise ModelFileError(f"{what}: directory {p} does not exist. {how}")
    if not (p / "config.json").is_file():
        missing.append("config.json")
    if not any((p / f).is_file() for f in _WEIGHT_FILES):
        missing.append("weights (" + " or ".join(_WEIGHT_FILES) + ")")
    if missing:
        raise ModelFileError(f"{what}: {p} lacks {', '.join(missing)}. {how}")
    return p


def _read_config_json(p: Path, what: str) -> dict[str, Any]:
    try:
        return json.loads((p / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{what}: {p / 'config.json'} is not readable JSON ({exc})") from None


def load_state_dict_dir(p: Path) -> dict[str, Tensor]:
    """All tensors of a local model dir (single or sharded safetensors, or a torch .bin read with weights_only)."""
    from safetensors.torch import load_file

    if (p / "model.safetensors").is_file():
        return load_file(str(p / "model.safetensors"))
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (p / index_name).is_file():
            index = json.loads((p / index_name).read_text(encoding="utf-8"))
            sd: dict[str, Tensor] = {}
            for shard in sorted(set(index["weight_map"].values())):
                f = p / shard
                if not f.is_file():
                    raise ModelFileError(f"{p}: shard {shard} named in {index_name} is missing")
                sd.update(load_file(str(f)) if shard.endswith(".safetensors") else torch.load(f, map_location="cpu", weights_only=True))
            return sd
    if (p / "pytorch_model.bin").is_file():
        return torch.load(p / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise ModelFileError(f"{p}: no weights file ({', '.join(_WEIGHT_FILES)})")


def _config_kwargs(cfg: Any) -> dict[str, Any]:
    """A transformers config as the plain kwargs a ``backbone`` mapping holds."""
    d = cfg.to_dict()
    for key in ("architectures", "transformers_version", "dtype", "torch_dtype", "_name_or_path", "model_type", "id2label", "label2id"):
        d.pop(key, None)
    return d


_HOW = {
    "global": (
        "Get EVA-CLIP-g as MiniGPT-v2/Emotion-LLaMA use it (eva_vit_g.pth from the LAVIS BLIP-2 release) and load it "
        "with GlobalViewEncoder.from_eva_checkpoint(path), or point to a transformers ViT directory "
        "(e.g. `huggingface-cli download google/vit-large-patch16-224-in21k --local-dir DIR` on a machine with network)."
    ),
    "face": (
        "Point to a transformers ViTMAE directory (config.json + model.safetensors), e.g. "
        "`huggingface-cli download facebook/vit-mae-large --local-dir DIR` on a machine with network "
        "(Emotion-LLaMA used MER2023's face-trained MAE ViT-L, converted to this format)."
    ),
    "temporal": (
        "Point to a transformers VideoMAE directory, e.g. "
        "`huggingface-cli download MCG-NJU/videomae-large --local-dir DIR` on a machine with network."
    ),
    "hubert": (
        "Point to a transformers HuBERT directory, e.g. `huggingface-cli download TencentGameMate/chinese-hubert-large "
        "--local-dir DIR` (the HuBERT-large Emotion-LLaMA/MER2023 used) or facebook/hubert-large-ll60k, on a machine with network."
    ),
    "whisper": (
        "Point to a transformers Whisper directory, e.g. `huggingface-cli download openai/whisper-large-v3 "
        "--local-dir DIR` on a machine with network (only the encoder weights are read)."
    ),
}


# ---------------------------------------------------------------------------
# global view: EVA-style ViT
# ---------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------
# local view: MAE ViT on face crops
# ---------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------
# temporal view: VideoMAE
# ---------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------
# audio: HuBERT (v1) or Whisper encoder (v2)
# ---------------------------------------------------------------------------


def _hubert_large_backbone() -> dict[str, Any]:
    return dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True,
                hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0, layerdrop=0.0)


def _whisper_large_v3_backbone() -> dict[str, Any]:
    return dict(d_model=1280, encoder_layers=32, encoder_attention_heads=20, encoder_ffn_dim=5120,
                num_mel_bins=128, max_source_positions=1500,
                decoder_layers=1, decoder_attention_heads=20, decoder_ffn_dim=64, vocab_size=51866)


@dataclass(frozen=True)
class AudioEncoderConfig:
    """Speech encoder on 16 kHz mono audio.

    Attributes:
        kind: ``"hubert"`` (Emotion-LLaMA) or ``"whisper"`` (Emotion-LLaMAv2's encoder).
        backbone: ``HubertConfig`` or ``WhisperConfig`` keywords (Whisper: only
            the encoder is built; decoder keys are ignored).
        sample_rate: what the backbone expects (16 kHz for both).
        normalize: zero-mean/unit-variance per utterance (HuBERT-large's
            feature extractor does this; HuBERT-base's does not).
        layer: which hidden state to use (-1: last; MER2023-style features
            sometimes use an earlier layer).
    """

    kind: str = "hubert"
    backbone: Mapping[str, Any] = field(default_factory=_hubert_large_backbone)
    sample_rate: int = 16000
    normalize: bool = True
    layer: int = -1

    def __post_init__(self) -> None:
        object.__setattr__(self, "backbone", canonical_mapping(self.backbone, "audio backbone"))
        if self.kind not in ("hubert", "whisper"):
            raise ConfigError(f"audio encoder kind must be 'hubert' or 'whisper', got {self.kind!r}")
        if self.sample_rate != 16000:
            raise ConfigError(f"audio encoders take 16 kHz audio, got sample_rate {self.sample_rate}")
        if self.kind == "hubert":
            _check_transformer(self.backbone, "hubert")
            n = int(self.backbone.get("num_hidden_layers", 12))
        else:
            for key in ("d_model", "encoder_attention_heads", "num_mel_bins", "max_source_positions"):
                if key not in self.backbone:
                    raise ConfigError(f"whisper: backbone needs {key!r}")
            if self.backbone["d_model"] % self.backbone["encoder_attention_heads"]:
                raise ConfigError("whisper: d_model must be divisible by encoder_attention_heads")
            n = int(self.backbone.get("encoder_layers", 4))
        if not -(n + 1) <= self.layer <= n:
            raise ConfigError(f"audio layer {self.layer} out of range for {n} layers")

    @classmethod
    def hubert_large(cls) -> "AudioEncoderConfig":
        return cls()

    @classmethod
    def whisper_large_v3(cls) -> "AudioEncoderConfig":
        return cls(kind="whisper", backbone=_whisper_large_v3_backbone(), normalize=False)

    @classmethod
    def tiny(cls, kind: str = "hubert") -> "AudioEncoderConfig":
        if kind == "whisper":
            # 40 mel bins, 1 s chunks: 100 mel frames -> 50 encoder frames.
            return cls(kind="whisper", normalize=False, backbone=dict(
                d_model=16, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=32, num_mel_bins=40,
                max_source_positions=50, decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=32, vocab_size=51866))
        return cls(backbone=dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                 conv_dim=(8, 8), conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=8,
                                 num_conv_pos_embedding_groups=2, feat_extract_norm="layer", do_stable_layer_norm=True,
                                 conv_bias=True))

    @property
    def hidden_size(self) -> int:
        return int(self.backbone["hidden_size"] if self.kind == "hubert" else self.backbone["d_model"])

    @property
    def chunk_samples(self) -> int | None:
        """Whisper's fixed input length in samples (None for HuBERT)."""
        if self.kind != "whisper":
            return None
        return int(self.backbone["max_source_positions"]) * 2 * 160


def _receptive_field(kernels: Sequence[int], strides: Sequence[int]) -> int:
    rf, jump = 1, 1
    for k, s in zip(kernels, strides):
        rf += (k - 1) * jump
        jump *= s
    return rf


def _clean_wave(x: np.ndarray) -> np.ndarray:
    a = np.asarray(x, dtype=np.float32).reshape(-1)
    if not np.all(np.isfinite(a)):
        a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
    return a


class AudioEncoder(nn.Module):
    """HuBERT or Whisper encoder: tokens = frame features (B, T, D) (50 Hz), pooled = mean of the valid frames.

    Call ``encoder(encoder.preprocess(waves))``. HuBERT takes the (normalised)
    waveform; Whisper takes an 80/128-bin log-mel spectrogram from a
    ``WhisperFeatureExtractor`` constructed here from the config (never from the
    hub), padded to Whisper's fixed chunk; only the frames that cover real
    audio are marked valid, so a 2 s window is not averaged with 28 s of padding.
    """

    def __init__(self, config: AudioEncoderConfig):
        super().__init__()
        self.config = config
        if config.kind == "hubert":
            from transformers import HubertConfig, HubertModel

            self.backbone = HubertModel(HubertConfig(**config.backbone))
            self.feature_extractor = None
        else:
            from transformers import WhisperConfig
            from transformers.models.whisper.modeling_whisper import WhisperEncoder

            self.backbone = WhisperEncoder(WhisperConfig(**config.backbone))
            self.feature_extractor = self._make_whisper_extractor()

    def _make_whisper_extractor(self) -> Any:
        from transformers import WhisperFeatureExtractor

        chunk = self.config.chunk_samples
        assert chunk is not None
        return WhisperFeatureExtractor(
            feature_size=int(self.config.backbone["num_mel_bins"]), sampling_rate=16000, hop_length=160,
            chunk_length=chunk // 16000 if chunk % 16000 == 0 else chunk / 16000, n_fft=400, padding_value=0.0,
        )

    @property
    def min_samples(self) -> int:
        """Shortest input the backbone accepts (HuBERT's conv receptive field)."""
        if self.config.kind != "hubert":
            return 1
        c = self.backbone.config
        return _receptive_field(c.conv_kernel, c.conv_stride)

    def preprocess(self, waves: Sequence[np.ndarray], sample_rate: int = 16000) -> dict[str, Tensor]:
        """Mono float waveforms at ``sample_rate`` -> backbone inputs (+ ``lengths`` in samples)."""
        if sample_rate != self.config.sample_rate:
            raise ValueError(f"audio must be resampled to {self.config.sample_rate} Hz first (got {sample_rate})")
        clean = [_clean_wave(w) for w in waves]
        if not clean:
            raise ValueError("no audio given")
        if self.config.kind == "hubert":
            out = []
            for a in clean:
                if self.config.normalize and a.size > 1:
                    a = (a - a.mean()) / np.sqrt(a.var() + 1e-7)
                if a.size < self.min_samples:
                    a = np.pad(a, (0, self.min_samples - a.size))
                out.append(a.astype(np.float32))
            lengths = torch.tensor([a.size for a in out])
            values = torch.zeros(len(out), int(lengths.max()))
            for i, a in enumerate(out):
                values[i, : a.size] = torch.from_numpy(a)
            return {"input_values": values, "lengths": lengths}
        chunk = self.config.chunk_samples
        assert chunk is not None and self.feature_extractor is not None
        clipped = [a[:chunk] for a in clean]
        feats = self.feature_extractor(clipped, sampling_rate=16000, return_tensors="np", padding="max_length", max_length=chunk, truncation=True)
        return {"input_features": torch.from_numpy(np.asarray(feats["input_features"], dtype=np.float32)),
                "lengths": torch.tensor([max(1, a.size) for a in clipped])}

    def frame_lengths(self, lengths: Tensor) -> Tensor:
        """Encoder frames covering ``lengths`` samples."""
        if self.config.kind == "hubert":
            return self.backbone._get_feat_extract_output_lengths(lengths).long()
        # log-mel hop 160, then a stride-2 conv: one frame per 320 samples.
        return torch.clamp((lengths + 319) // 320, min=1, max=int(self.config.backbone["max_source_positions"]))

    def _run(self, **kwargs: Tensor) -> Tensor:
        want_hidden = self.config.layer != -1
        out = self.backbone(**kwargs, output_hidden_states=want_hidden)
        return out.hidden_states[self.config.layer] if want_hidden else out.last_hidden_state

    def forward(self, inputs: Mapping[str, Tensor]) -> EncoderOutput:
        lengths = inputs["lengths"]
        dtype = next(self.parameters()).dtype
        if self.config.kind == "hubert":
            values = inputs["input_values"].to(dtype)
            # Each utterance runs alone at its own length: padding would change
            # HuBERT's normalisation and convolution edges.
            rows = [self._run(input_values=values[i : i + 1, : int(lengths[i])])[0] for i in range(values.shape[0])]
        else:
            feats = inputs["input_features"].to(dtype)
            rows = list(self._run(input_features=feats))
        n = self.frame_lengths(lengths)
        t = max(int(n.max()), max(r.shape[0] for r in rows))
        tokens = rows[0].new_zeros(len(rows), t, rows[0].shape[-1])
        mask = torch.zeros(len(rows), t, dtype=torch.bool, device=tokens.device)
        for i, r in enumerate(rows):
            k = min(int(n[i]), r.shape[0])
            tokens[i, : r.shape[0]] = r
            mask[i, :k] = True
        tokens = tokens * mask.unsqueeze(-1).to(tokens.dtype)
        return EncoderOutput(tokens=tokens, mask=mask, pooled=masked_mean(tokens, mask))

    @classmethod
    def from_pretrained_dir(cls, path: str | Path, kind: str | None = None, normalize: bool | None = None, layer: int = -1) -> "AudioEncoder":
        """Load a HuBERT or Whisper directory; ``kind`` is read from config.json when not given."""
        from transformers import HubertConfig, HubertModel, WhisperConfig

        p = Path(path)
        raw = _read_config_json(p, "audio encoder") if (p / "config.json").is_file() else {}
        kind = kind or ("whisper" if raw.get("model_type") == "whisper" else "hubert")
        p = check_pretrained_dir(path, f"{kind} audio encoder", _HOW.get(kind, _HOW["hubert"]))
        if kind == "hubert":
            hf_cfg = HubertConfig.from_pretrained(str(p), local_files_only=True)
            if normalize is None:
                normalize = bool(hf_cfg.feat_extract_norm == "layer")
                pp = p / "preprocessor_config.json"
                if pp.is_file():
                    normalize = bool(json.loads(pp.read_text(encoding="utf-8")).get("do_normalize", normalize))
            enc = cls.__new__(cls)
            nn.Module.__init__(enc)
            enc.config = AudioEncoderConfig(kind="hubert", backbone=_config_kwargs(hf_cfg), normalize=normalize, layer=layer)
            enc.backbone = HubertModel.from_pretrained(str(p), local_files_only=True)
            enc.feature_extractor = None
            return enc.eval()
        hf_cfg = WhisperConfig.from_pretrained(str(p), local_files_only=True)
        enc = cls(AudioEncoderConfig(kind="whisper", backbone=_config_kwargs(hf_cfg), normalize=False, layer=layer))
        sd = load_state_dict_dir(p)
        enc_sd = {}
        for key, value in sd.items():
            for prefix in ("model.encoder.", "encoder."):
                if key.startswith(prefix):
                    enc_sd[key[len(prefix):]] = value
                    break
        target = enc.backbone.state_dict()
        missing = sorted(set(target) - set(enc_sd))
        if missing:
            raise ModelFileError(f"whisper dir {p} lacks encoder tensors: {', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''}. {_HOW['whisper']}")
        enc.backbone.load_state_dict({k: v for k, v in enc_sd.items() if k in target}, strict=True)
        return enc.eval()


# ---------------------------------------------------------------------------
# factories
# ---------------------------------------------------------------------------


def build_encoder(config: GlobalViewConfig | FaceViewConfig | TemporalViewConfig | AudioEncoderConfig) -> nn.Module:
    """Randomly initialised encoder for ``config`` (type decides which)."""
    if isinstance(config, GlobalViewConfig):
        return GlobalViewEncoder(config)
    if isinstance(config, FaceViewConfig):
        return FaceViewEncoder(config)
    if isinstance(config, TemporalViewConfig):
        return TemporalViewEncoder(config)
    if isinstance(config, AudioEncoderConfig):
        return AudioEncoder(config)
    raise ConfigError(f"not an encoder config: {type(config).__name__}")


ENCODER_CONFIGS = {
    "global": GlobalViewConfig,
    "face": FaceViewConfig,
    "temporal": TemporalViewConfig,
    "audio": AudioEncoderConfig,
}
