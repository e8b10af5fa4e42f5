"""Temporal view: VideoMAE over a short clip."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from emo_stream.errors import ConfigError, ModelFileError
from emo_stream.model.encoders.timm_convert import (
    check_complete,
    convert_block,
    missing_block_keys,
    pick,
    read_torch_checkpoint,
    report_conversion,
    strip_prefix,
)
from emo_stream.model.encoders.common import (
    _HOW,
    INTERPOLATIONS,
    NO_MEAN,
    NO_STD,
    check_choice,
    EncoderOutput,
    _check_norm,
    _check_transformer,
    _config_kwargs,
    canonical_mapping,
    check_pretrained_dir,
    images_to_tensor,
)


def _videomae_large_backbone() -> dict[str, Any]:
    # MER2023's VideoMAE (modeling_finetune.vit_large_patch16_224): LayerNorm eps 1e-6
    # (partial(nn.LayerNorm, eps=1e-6)), q/v bias, mean pooling with no final norm.
    return dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                image_size=224, patch_size=16, num_frames=16, tubelet_size=2, qkv_bias=True, use_mean_pooling=True,
                layer_norm_eps=1e-6)


#: How the clip's frames are chosen.
TEMPORAL_SAMPLINGS = ("segments", "uniform")
#: What the temporal view sees.
TEMPORAL_CROPS = ("face", "frame")


@dataclass(frozen=True)
class TemporalViewConfig:
    """VideoMAE over K frames (``transformers.VideoMAEConfig`` keywords).

    Defaults are how MER2023's tools extracted the VideoMAE ("maeV UTT")
    features Emotion-LLaMA's ``feats_llama_proj2`` was trained on: the clip is
    made of the *face crops* (OpenFace's aligned faces), split into
    ``num_frames / segment_length`` = 8 segments with ``segment_length`` = 2
    consecutive frames from the middle of each (the dataset's test-mode
    indices), ``GroupResize(224)`` + ``ToTorchFormatTensor`` (bilinear, pixels
    in [0, 1], no mean/std), and the feature is the mean of all tokens with no
    final norm.

    Attributes:
        backbone: ``VideoMAEConfig`` keywords.
        image_mean, image_std: normalisation of RGB in [0, 1] (default none).
        sampling: ``"segments"`` (the original) or ``"uniform"`` (num_frames
            single frames spread over the window).
        segment_length: consecutive frames per segment (``"segments"`` only).
        crop: ``"face"`` (the original: face crops; no face -> the view is
            absent) or ``"frame"`` (whole frames).
        interpolation: resize filter (torchvision's bilinear default).
    """

    backbone: Mapping[str, Any] = field(default_factory=_videomae_large_backbone)
    image_mean: tuple[float, ...] = NO_MEAN
    image_std: tuple[float, ...] = NO_STD
    sampling: str = "segments"
    segment_length: int = 2
    crop: str = "face"
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        object.__setattr__(self, "backbone", canonical_mapping(self.backbone, "temporal view backbone"))
        object.__setattr__(self, "image_mean", tuple(float(v) for v in self.image_mean))
        object.__setattr__(self, "image_std", tuple(float(v) for v in self.image_std))
        _check_transformer(self.backbone, "temporal view", ("hidden_size", "num_attention_heads", "image_size", "patch_size", "num_frames", "tubelet_size"))
        if self.backbone["num_frames"] % self.backbone["tubelet_size"]:
            raise ConfigError(f"temporal view: num_frames {self.backbone['num_frames']} is not a multiple of tubelet_size {self.backbone['tubelet_size']}")
        _check_norm(self.image_mean, self.image_std, "temporal view")
        check_choice(self.sampling, TEMPORAL_SAMPLINGS, "temporal view: sampling")
        check_choice(self.crop, TEMPORAL_CROPS, "temporal view: crop")
        check_choice(self.interpolation, INTERPOLATIONS, "temporal view: interpolation")
        if not isinstance(self.segment_length, int) or self.segment_length < 1 or self.num_frames % self.segment_length:
            raise ConfigError(f"temporal view: segment_length {self.segment_length!r} must be a positive divisor of num_frames {self.num_frames}")

    @classmethod
    def tiny(cls) -> "TemporalViewConfig":
        return cls(crop="frame", backbone=dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                 image_size=16, patch_size=8, num_frames=4, tubelet_size=2, qkv_bias=True, layer_norm_eps=1e-6))

    @property
    def hidden_size(self) -> int:
        return int(self.backbone["hidden_size"])

    @property
    def image_size(self) -> int:
        return int(self.backbone["image_size"])

    @property
    def num_frames(self) -> int:
        return int(self.backbone["num_frames"])

    def frame_indices(self, n_available: int) -> list[int]:
        """Which of ``n_available`` frames (in time order) make the clip, per ``sampling``."""
        if self.sampling == "uniform":
            return resample_frame_indices(n_available, self.num_frames)
        return segment_frame_indices(n_available, self.num_frames // self.segment_length, self.segment_length)


def resample_frame_indices(n_available: int, n_wanted: int) -> list[int]:
    """``n_wanted`` indices spread uniformly over ``n_available`` frames (repeating when there are fewer)."""
    if n_available < 1:
        raise ValueError("no frames to sample from")
    return [min(n_available - 1, int((i + 0.5) * n_available / n_wanted)) for i in range(n_wanted)]


def segment_frame_indices(n_available: int, num_segments: int, segment_length: int) -> list[int]:
    """MER2023's VideoMAE test-mode sampling: ``num_segments`` x ``segment_length`` consecutive frames.

    With more than ``num_segments + segment_length - 1`` frames, segment ``x``
    starts at ``int(tick / 2 + tick * x)`` with ``tick = (n - L + 1) / S``;
    otherwise every segment starts at frame 0. Within a segment the index
    advances while it is below the last frame (so short clips repeat it).
    """
    if n_available < 1:
        raise ValueError("no frames to sample from")
    if n_available > num_segments + segment_length - 1:
        tick = (n_available - segment_length + 1) / float(num_segments)
        starts = [int(tick / 2.0 + tick * x) for x in range(num_segments)]
    else:
        starts = [0] * num_segments
    out: list[int] = []
    for p in starts:
        for _ in range(segment_length):
            out.append(p)
            if p < n_available - 1:
                p += 1
    return out


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
        """K BGR images (face crops or frames, any K >= 1) -> (num_frames, 3, S, S), sampled per ``config.sampling``."""
        if not images:
            raise ValueError("temporal view needs at least one frame")
        idx = self.config.frame_indices(len(images))
        picked = [images[i] for i in idx]
        picked_boxes = None if boxes is None else [boxes[i] for i in idx]
        return images_to_tensor(picked, self.config.image_size, self.config.image_mean, self.config.image_std, picked_boxes,
                                interpolation=self.config.interpolation)

    def forward(self, pixel_values: Tensor) -> EncoderOutput:
        if pixel_values.ndim != 5 or pixel_values.shape[1] != self.config.num_frames:
            raise ValueError(f"temporal view expects (B, {self.config.num_frames}, 3, S, S), got {tuple(pixel_values.shape)}")
        tokens = self.backbone(pixel_values=pixel_values.to(next(self.parameters()).dtype)).last_hidden_state
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return EncoderOutput(tokens=tokens, mask=mask, pooled=tokens.mean(dim=1))

    @classmethod
    def from_pretrained_dir(cls, path: str | Path, **view_options: Any) -> "TemporalViewEncoder":
        """Load a transformers VideoMAE directory; ``view_options`` override :class:`TemporalViewConfig` preprocessing fields."""
        from transformers import VideoMAEConfig, VideoMAEModel

        p = check_pretrained_dir(path, "temporal-view VideoMAE", _HOW["temporal"])
        enc = cls.__new__(cls)
        nn.Module.__init__(enc)
        enc.config = TemporalViewConfig(backbone=_config_kwargs(VideoMAEConfig.from_pretrained(str(p), local_files_only=True)), **view_options)
        with _fast_videomae_tables():
            enc.backbone = VideoMAEModel.from_pretrained(str(p), local_files_only=True)
        return enc.eval()

    @classmethod
    def from_videomae_checkpoint(cls, source: str | Path | Mapping[str, Tensor], config: TemporalViewConfig | None = None) -> "TemporalViewEncoder":
        """Build the temporal view from the authors' VideoMAE checkpoint (``encoder.``-prefixed, timm-style); prints one progress line."""
        config = config or TemporalViewConfig()
        sd = dict(source) if isinstance(source, Mapping) else read_torch_checkpoint(source, "temporal-view VideoMAE", _HOW["temporal"])
        enc = cls(config)
        ignored: dict[str, str] = {}
        converted = convert_videomae_state_dict(sd, config, enc.backbone.state_dict().keys(), ignored)
        enc.backbone.load_state_dict(converted, strict=True)
        report_conversion("temporal view (VideoMAE)", source, len(converted), ignored)
        return enc.eval()


def convert_videomae_state_dict(
    sd: Mapping[str, Tensor], config: TemporalViewConfig, target_keys: Any, ignored: dict[str, str] | None = None
) -> dict[str, Tensor]:
    """Map a VideoMAE checkpoint (pre-training ``encoder.*`` or fine-tune layout) onto ``transformers.VideoMAEModel``.

    The ``encoder.`` / ``backbone.`` / ``module.`` prefix is removed (MER2023's
    loader does the same). Read: ``patch_embed.proj`` (Conv3d) and the blocks
    (``attn.qkv`` with ``q_bias``/``v_bias``). Skipped, as the original feature
    never uses them: the decoder (``decoder.*``, ``encoder_to_decoder``,
    ``mask_token``), ``pos_embed`` (a fixed sinusoid table both sides compute),
    ``norm``/``fc_norm`` (mean pooling without a final norm) and ``head``.
    """
    sd = strip_prefix(sd, ("module.", "encoder.", "backbone."))
    depth = int(config.backbone["num_hidden_layers"])
    d = config.hidden_size
    need = ["patch_embed.proj.weight", "patch_embed.proj.bias"]
    missing = [k for k in need if k not in sd] + missing_block_keys(sd, depth)
    if missing:
        raise ModelFileError(f"VideoMAE checkpoint lacks {len(missing)} tensor(s): {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
    tk = set(target_keys)
    w = sd["patch_embed.proj.weight"].float()
    t, p = int(config.backbone["tubelet_size"]), int(config.backbone["patch_size"])
    if tuple(w.shape[2:]) != (t, p, p):
        raise ModelFileError(f"VideoMAE checkpoint patch_embed is {tuple(w.shape[2:])} (tubelet, patch, patch); the config says {(t, p, p)}")
    out: dict[str, Tensor] = {
        pick(tk, "embeddings.patch_embeddings.projection.weight"): w,
        pick(tk, "embeddings.patch_embeddings.projection.bias"): sd["patch_embed.proj.bias"].float(),
    }
    for i in range(depth):
        out.update(convert_block(sd, i, tk, d))
    check_complete(out, tk, "VideoMAE")
    if ignored is not None:
        for key in sd:
            if key in need or any(key.startswith(f"blocks.{i}.") for i in range(depth)):
                continue
            if key.startswith(("decoder", "encoder_to_decoder")) or key == "mask_token":
                ignored[key] = "VideoMAE decoder tensors"
            elif key == "pos_embed":
                ignored[key] = "fixed sinusoid position table (recomputed)"
            else:
                ignored[key] = "norm/fc_norm/head (the feature is the plain token mean)"
    return out
