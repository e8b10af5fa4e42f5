"""Temporal view: VideoMAE over a short clip."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from emo_stream.errors import ModelFileError
from emo_stream.model.configs.encoders import (
    TEMPORAL_CROPS as TEMPORAL_CROPS,
)
from emo_stream.model.configs.encoders import (
    TEMPORAL_SAMPLINGS as TEMPORAL_SAMPLINGS,
)
from emo_stream.model.configs.encoders import (
    TemporalViewConfig as TemporalViewConfig,
)

# moved to a torch-free module (emo_stream.model.configs); re-exported here
from emo_stream.model.configs.encoders import (
    _videomae_large_backbone as _videomae_large_backbone,
)
from emo_stream.model.configs.encoders import (
    resample_frame_indices as resample_frame_indices,
)
from emo_stream.model.configs.encoders import (
    segment_frame_indices as segment_frame_indices,
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
    strip_prefix,
)


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
        return images_to_tensor(
            picked, self.config.image_size, self.config.image_mean, self.config.image_std, picked_boxes, interpolation=self.config.interpolation
        )

    def forward(self, pixel_values: Tensor) -> EncoderOutput:
        if pixel_values.ndim != 5 or pixel_values.shape[1] != self.config.num_frames:
            raise ValueError(f"temporal view expects (B, {self.config.num_frames}, 3, S, S), got {tuple(pixel_values.shape)}")
        tokens = self.backbone(pixel_values=pixel_values.to(next(self.parameters()).dtype)).last_hidden_state
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return EncoderOutput(tokens=tokens, mask=mask, pooled=tokens.mean(dim=1))

    @classmethod
    def from_pretrained_dir(cls, path: str | Path, **view_options: Any) -> TemporalViewEncoder:
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
    def from_videomae_checkpoint(cls, source: str | Path | Mapping[str, Tensor], config: TemporalViewConfig | None = None) -> TemporalViewEncoder:
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
