"""Emotion-LLaMA's modality encoders, built from transformers model classes.

Emotion-LLaMA (Cheng et al., 2024) reads a clip through four frozen encoders:

* **global view** -- EVA-CLIP-g (MiniGPT-v2's ViT, 448 px, patch 14) on the
  window's *first* frame (as Emotion-LLaMA's dataset and demo pick it): 1 CLS +
  1024 patch tokens of width 1408, taken *before* any final norm (MiniGPT-v2
  applies its own ``ln_vision``, which lives in the projector here);
* **local view** -- MER2023's face MAE ViT-L on face crops, pixels in [0, 1]
  with no mean/std: one 1024-d vector per frame (the CLS token after the final
  norm, ``global_pool=False``), averaged over the frames ("MAE UTT" features);
* **temporal view** -- MER2023's VideoMAE ViT-L on 8 segments x 2 consecutive
  *face crops*, pixels in [0, 1]: the mean of its tokens, no final norm;
* **audio** -- HuBERT-large on 16 kHz speech: the mean of its final (post
  LayerNorm) frame features. Emotion-LLaMAv2 uses a Whisper encoder instead
  (``kind="whisper"``).

Each of these choices is a config field (``frame``, ``pooling``,
``image_mean``/``image_std``, ``sampling``, ``crop``, ``interpolation``,
``layer``), defaulting to what Emotion-LLaMA's checkpoints were trained on. The
original checkpoints (EVA ``eva_vit_g.pth``, the authors' MAE and VideoMAE
``.pth``) convert with ``from_eva_checkpoint`` / ``from_mae_checkpoint`` /
``from_videomae_checkpoint``.

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

The encoders live one per module (``global_view``, ``face_view``,
``temporal_view``, ``audio``; shared pieces in ``common``, converters from the
original timm-style checkpoints in ``timm_convert``); this package
re-exports them so ``from emo_stream.model.encoders import X`` keeps working.
"""

from __future__ import annotations

from torch import nn

from emo_stream.errors import ConfigError

# Frozen encoders over weights shipped in packages (ONNX Runtime / CTranslate2): the tuple's torch-free home is configs.
from emo_stream.model.configs.encoders import SHIPPED_CONFIGS
from emo_stream.model.encoders.audio import AudioEncoder, AudioEncoderConfig, _clean_wave, _receptive_field
from emo_stream.model.encoders.common import (
    _HOW,
    CLIP_MEAN,
    CLIP_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    EncoderOutput,
    _config_kwargs,
    canonical_mapping,
    center_square_box,
    check_pretrained_dir,
    images_to_tensor,
    load_state_dict_dir,
    masked_mean,
)
from emo_stream.model.encoders.face_view import FaceViewConfig, FaceViewEncoder, convert_mae_vit_state_dict
from emo_stream.model.encoders.global_view import GlobalViewConfig, GlobalViewEncoder, convert_eva_vit_state_dict
from emo_stream.model.encoders.shipped_vit import ShippedViTConfig, ShippedViTEncoder
from emo_stream.model.encoders.shipped_whisper import ShippedWhisperConfig, ShippedWhisperEncoder
from emo_stream.model.encoders.temporal_view import (
    TemporalViewConfig,
    TemporalViewEncoder,
    _fast_videomae_tables,
    convert_videomae_state_dict,
    resample_frame_indices,
    segment_frame_indices,
    sinusoid_table,
)

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "ENCODER_CONFIGS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SHIPPED_CONFIGS",
    "_HOW",
    "AudioEncoder",
    "AudioEncoderConfig",
    "EncoderOutput",
    "FaceViewConfig",
    "FaceViewEncoder",
    "GlobalViewConfig",
    "GlobalViewEncoder",
    "ShippedViTConfig",
    "ShippedViTEncoder",
    "ShippedWhisperConfig",
    "ShippedWhisperEncoder",
    "TemporalViewConfig",
    "TemporalViewEncoder",
    "_clean_wave",
    "_config_kwargs",
    "_fast_videomae_tables",
    "_receptive_field",
    "build_encoder",
    "canonical_mapping",
    "center_square_box",
    "check_pretrained_dir",
    "convert_eva_vit_state_dict",
    "convert_mae_vit_state_dict",
    "convert_videomae_state_dict",
    "images_to_tensor",
    "load_state_dict_dir",
    "masked_mean",
    "resample_frame_indices",
    "segment_frame_indices",
    "sinusoid_table",
]


def build_encoder(config: GlobalViewConfig | FaceViewConfig | TemporalViewConfig | AudioEncoderConfig | ShippedViTConfig | ShippedWhisperConfig) -> nn.Module:
    """Randomly initialised encoder for ``config`` (type decides which); shipped configs load their packaged weights."""
    if isinstance(config, ShippedViTConfig):
        return ShippedViTEncoder(config)
    if isinstance(config, ShippedWhisperConfig):
        return ShippedWhisperEncoder(config)
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
