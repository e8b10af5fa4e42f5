"""What every modality encoder shares: the output type, config checks, image
preprocessing and reading local weight directories."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from emo_stream.errors import ModelFileError

# moved to a torch-free module (emo_stream.model.configs); re-exported here
from emo_stream.model.configs.encoders import (
    CLIP_MEAN as CLIP_MEAN,
)
from emo_stream.model.configs.encoders import (
    CLIP_STD as CLIP_STD,
)
from emo_stream.model.configs.encoders import (
    FRAME_CHOICES as FRAME_CHOICES,
)
from emo_stream.model.configs.encoders import (
    IMAGENET_MEAN as IMAGENET_MEAN,
)
from emo_stream.model.configs.encoders import (
    IMAGENET_STD as IMAGENET_STD,
)
from emo_stream.model.configs.encoders import (
    NO_MEAN as NO_MEAN,
)
from emo_stream.model.configs.encoders import (
    NO_STD as NO_STD,
)
from emo_stream.model.configs.encoders import (
    _check_norm as _check_norm,
)
from emo_stream.model.configs.encoders import (
    _check_transformer as _check_transformer,
)
from emo_stream.model.configs.encoders import (
    canonical_mapping as canonical_mapping,
)
from emo_stream.model.configs.encoders import (
    check_choice as check_choice,
)

# The pixel work is numpy (shared with the torch-free exported runtime); center_square_box is re-exported.
#: INTERPOLATIONS: resize filters a view may use (the original pipelines: BLIP-2 bicubic, torchvision's bilinear default).
from emo_stream.preprocess import INTERPOLATIONS, center_square_box, images_to_pixels  # noqa: F401

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


# ---------------------------------------------------------------------------
# image preprocessing
# ---------------------------------------------------------------------------


def images_to_tensor(
    images: Sequence[np.ndarray],
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    boxes: Sequence[tuple[int, int, int, int] | None] | None = None,
    interpolation: str = "bicubic",
) -> Tensor:
    """BGR uint8 (H, W, 3) frames -> (N, 3, size, size) float32, RGB, normalised.

    The numpy function :func:`emo_stream.preprocess.images_to_pixels` does the
    work (crop, antialiased PIL-style resize, scale, normalise), so the torch
    encoders and the torch-free exported runtime feed identical pixels.
    """
    check_choice(interpolation, INTERPOLATIONS, "interpolation")
    return torch.from_numpy(images_to_pixels(images, size, mean, std, boxes, interpolation))


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
        "Give the authors' face MAE checkpoint (MER2023's mae_checkpoint-340.pth, a timm-style {'model': ...} file; "
        "FaceViewEncoder.from_mae_checkpoint or `--encoder face=FILE` converts it), or a transformers ViTMAE directory "
        "(config.json + model.safetensors, e.g. `huggingface-cli download facebook/vit-mae-large --local-dir DIR` on a "
        "machine with network)."
    ),
    "temporal": (
        "Give the authors' VideoMAE checkpoint (MER2023's maeVideo .pth, `encoder.`-prefixed; "
        "TemporalViewEncoder.from_videomae_checkpoint or `--encoder temporal=FILE` converts it), or a transformers "
        "VideoMAE directory, e.g. `huggingface-cli download MCG-NJU/videomae-large --local-dir DIR` on a machine with network."
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
