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

The encoders live one per module (``global_view``, ``face_view``,
``temporal_view``, ``audio``; shared pieces in ``common``); this package
re-exports them so ``from emo_stream.model.encoders import X`` keeps working.
"""

from __future__ import annotations

from torch import nn

from emo_stream.errors import ConfigError
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
from emo_stream.model.encoders.face_view import FaceViewConfig, FaceViewEncoder
from emo_stream.model.encoders.global_view import GlobalViewConfig, GlobalViewEncoder, convert_eva_vit_state_dict
from emo_stream.model.encoders.temporal_view import (
    TemporalViewConfig,
    TemporalViewEncoder,
    _fast_videomae_tables,
    resample_frame_indices,
    sinusoid_table,
)

__all__ = [
    "CLIP_MEAN", "CLIP_STD", "ENCODER_CONFIGS", "IMAGENET_MEAN", "IMAGENET_STD", "AudioEncoder", "AudioEncoderConfig",
    "EncoderOutput", "FaceViewConfig", "FaceViewEncoder", "GlobalViewConfig", "GlobalViewEncoder", "TemporalViewConfig",
    "TemporalViewEncoder", "build_encoder", "canonical_mapping", "center_square_box", "check_pretrained_dir",
    "convert_eva_vit_state_dict", "images_to_tensor", "load_state_dict_dir", "masked_mean", "resample_frame_indices",
    "sinusoid_table", "_HOW", "_clean_wave", "_config_kwargs", "_fast_videomae_tables", "_receptive_field",
]


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
