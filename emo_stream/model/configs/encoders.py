"""Encoder config dataclasses and their checks, without torch.

They describe the encoders of :mod:`emo_stream.model.encoders` (which import
torch and re-export these names, so old import paths keep working). They live
here so that the exported runtime on a robot without torch can read an export's
model config (image sizes, normalisation, frame sampling, audio front end).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from emo_stream.errors import ConfigError
from emo_stream.preprocess import INTERPOLATIONS

#: OpenAI CLIP normalisation (EVA-CLIP / BLIP-2 image processors use it).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)


CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


#: ImageNet normalisation (MAE / VideoMAE).
IMAGENET_MEAN = (0.485, 0.456, 0.406)


IMAGENET_STD = (0.229, 0.224, 0.225)


#: Which frame of a window the global view takes.
FRAME_CHOICES = ("first", "middle")


#: No normalisation: pixels stay in [0, 1] (MER2023's face MAE and VideoMAE feature extraction).
NO_MEAN = (0.0, 0.0, 0.0)


NO_STD = (1.0, 1.0, 1.0)


def _check_norm(mean: Sequence[float], std: Sequence[float], what: str) -> None:
    if len(mean) != 3 or len(std) != 3:
        raise ConfigError(f"{what}: image_mean and image_std need 3 values (RGB), got {mean} / {std}")
    if any(not s > 0 for s in std):
        raise ConfigError(f"{what}: image_std must be positive, got {std}")


def check_choice(value: str, choices: Sequence[str], what: str) -> None:
    """Raise ConfigError unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ConfigError(f"{what} must be one of {tuple(choices)}, got {value!r}")


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
        frame: which frame of a window is the global view. ``"first"``:
            Emotion-LLaMA's dataset (``extract_frame`` reads the first frame of
            the clip) and its demo do so; ``"middle"`` is the alternative.
        interpolation: resize filter; bicubic as BLIP-2's ``blip2_image_eval``
            processor (``Resize((448, 448), BICUBIC)``, aspect ratio not kept).
    """

    backbone: Mapping[str, Any] = field(default_factory=_eva_clip_g_backbone)
    image_mean: tuple[float, ...] = CLIP_MEAN
    image_std: tuple[float, ...] = CLIP_STD
    final_norm: bool = False
    frame: str = "first"
    interpolation: str = "bicubic"

    def __post_init__(self) -> None:
        object.__setattr__(self, "backbone", canonical_mapping(self.backbone, "global view backbone"))
        object.__setattr__(self, "image_mean", tuple(float(v) for v in self.image_mean))
        object.__setattr__(self, "image_std", tuple(float(v) for v in self.image_std))
        _check_transformer(self.backbone, "global view", ("hidden_size", "num_attention_heads", "image_size", "patch_size"))
        if self.backbone["image_size"] % self.backbone["patch_size"]:
            raise ConfigError(f"global view: image_size {self.backbone['image_size']} is not a multiple of patch_size {self.backbone['patch_size']}")
        _check_norm(self.image_mean, self.image_std, "global view")
        check_choice(self.frame, FRAME_CHOICES, "global view: frame")
        check_choice(self.interpolation, INTERPOLATIONS, "global view: interpolation")

    def frame_index(self, n_frames: int) -> int:
        """Index of the global-view frame among ``n_frames`` frames in time order."""
        if n_frames < 1:
            raise ValueError("global view needs at least one frame")
        return 0 if self.frame == "first" else n_frames // 2

    @classmethod
    def tiny(cls) -> GlobalViewConfig:
        # 8x8 patches of a 32 px image: 16 patch tokens (groups of 4 -> 4 LLM tokens).
        return cls(
            backbone=dict(
                hidden_size=24,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=48,
                image_size=32,
                patch_size=8,
                layer_norm_eps=1e-6,
                qkv_bias=True,
            )
        )

    @property
    def hidden_size(self) -> int:
        return int(self.backbone["hidden_size"])

    @property
    def image_size(self) -> int:
        return int(self.backbone["image_size"])

    @property
    def num_patches(self) -> int:
        return (self.image_size // int(self.backbone["patch_size"])) ** 2


def _mae_large_backbone() -> dict[str, Any]:
    return dict(
        hidden_size=1024,
        num_hidden_layers=24,
        num_attention_heads=16,
        intermediate_size=4096,
        image_size=224,
        patch_size=16,
        layer_norm_eps=1e-6,
        qkv_bias=True,
        mask_ratio=0.0,
    )


#: Per-frame feature of the face view.
FACE_POOLINGS = ("cls", "mean_patches")


@dataclass(frozen=True)
class FaceViewConfig:
    """MAE ViT over face crops, one vector per frame (``transformers.ViTMAEConfig`` keywords).

    Defaults are how MER2023's tools extracted the "MAE UTT" face features
    Emotion-LLaMA's ``feats_llama_proj1`` was trained on: the face MAE built as
    ``vit_large_patch16(global_pool=False)``, fed ``Resize((224, 224))`` +
    ``ToTensor()`` crops (bilinear, pixels in [0, 1], *no* mean/std), the
    per-frame feature is the CLS token after the final norm, and the utterance
    feature the mean over frames.

    Attributes:
        backbone: ``ViTMAEConfig`` keywords (mask_ratio must be 0).
        image_mean, image_std: normalisation of RGB in [0, 1] (default none).
        pooling: ``"cls"`` (the original, ``global_pool=False``) or
            ``"mean_patches"`` (mean of the normalised patch tokens).
        interpolation: resize filter (torchvision's bilinear default).
    """

    backbone: Mapping[str, Any] = field(default_factory=_mae_large_backbone)
    image_mean: tuple[float, ...] = NO_MEAN
    image_std: tuple[float, ...] = NO_STD
    pooling: str = "cls"
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        object.__setattr__(self, "backbone", canonical_mapping(self.backbone, "face view backbone"))
        object.__setattr__(self, "image_mean", tuple(float(v) for v in self.image_mean))
        object.__setattr__(self, "image_std", tuple(float(v) for v in self.image_std))
        _check_transformer(self.backbone, "face view", ("hidden_size", "num_attention_heads", "image_size", "patch_size"))
        if float(self.backbone.get("mask_ratio", 0.75)) != 0.0:
            raise ConfigError("face view: backbone mask_ratio must be 0.0 (an encoder sees the whole face)")
        if self.backbone["image_size"] % self.backbone["patch_size"]:
            raise ConfigError(f"face view: image_size {self.backbone['image_size']} is not a multiple of patch_size {self.backbone['patch_size']}")
        _check_norm(self.image_mean, self.image_std, "face view")
        check_choice(self.pooling, FACE_POOLINGS, "face view: pooling")
        check_choice(self.interpolation, INTERPOLATIONS, "face view: interpolation")

    @classmethod
    def tiny(cls) -> FaceViewConfig:
        return cls(
            backbone=dict(
                hidden_size=16,
                num_hidden_layers=1,
                num_attention_heads=2,
                intermediate_size=32,
                image_size=16,
                patch_size=8,
                layer_norm_eps=1e-6,
                qkv_bias=True,
                mask_ratio=0.0,
            )
        )

    @property
    def hidden_size(self) -> int:
        return int(self.backbone["hidden_size"])

    @property
    def image_size(self) -> int:
        return int(self.backbone["image_size"])

    @property
    def num_patches(self) -> int:
        return (self.image_size // int(self.backbone["patch_size"])) ** 2


def _videomae_large_backbone() -> dict[str, Any]:
    # MER2023's VideoMAE (modeling_finetune.vit_large_patch16_224): LayerNorm eps 1e-6
    # (partial(nn.LayerNorm, eps=1e-6)), q/v bias, mean pooling with no final norm.
    return dict(
        hidden_size=1024,
        num_hidden_layers=24,
        num_attention_heads=16,
        intermediate_size=4096,
        image_size=224,
        patch_size=16,
        num_frames=16,
        tubelet_size=2,
        qkv_bias=True,
        use_mean_pooling=True,
        layer_norm_eps=1e-6,
    )


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
    def tiny(cls) -> TemporalViewConfig:
        return cls(
            crop="frame",
            backbone=dict(
                hidden_size=16,
                num_hidden_layers=1,
                num_attention_heads=2,
                intermediate_size=32,
                image_size=16,
                patch_size=8,
                num_frames=4,
                tubelet_size=2,
                qkv_bias=True,
                layer_norm_eps=1e-6,
            ),
        )

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


def _hubert_large_backbone() -> dict[str, Any]:
    return dict(
        hidden_size=1024,
        num_hidden_layers=24,
        num_attention_heads=16,
        intermediate_size=4096,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        conv_bias=True,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        feat_proj_dropout=0.0,
        layerdrop=0.0,
    )


def _whisper_large_v3_backbone() -> dict[str, Any]:
    return dict(
        d_model=1280,
        encoder_layers=32,
        encoder_attention_heads=20,
        encoder_ffn_dim=5120,
        num_mel_bins=128,
        max_source_positions=1500,
        decoder_layers=1,
        decoder_attention_heads=20,
        decoder_ffn_dim=64,
        vocab_size=51866,
    )


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
        layer: which hidden state to use, numbered 0..num_layers with
            ``num_layers`` == -1 == the final output after the closing
            LayerNorm, as MER2023 extracted it (see :meth:`AudioEncoder.hidden_state`).
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
    def hubert_large(cls) -> AudioEncoderConfig:
        return cls()

    @classmethod
    def whisper_large_v3(cls) -> AudioEncoderConfig:
        return cls(kind="whisper", backbone=_whisper_large_v3_backbone(), normalize=False)

    @classmethod
    def tiny(cls, kind: str = "hubert") -> AudioEncoderConfig:
        if kind == "whisper":
            # 40 mel bins, 1 s chunks: 100 mel frames -> 50 encoder frames.
            return cls(
                kind="whisper",
                normalize=False,
                backbone=dict(
                    d_model=16,
                    encoder_layers=1,
                    encoder_attention_heads=2,
                    encoder_ffn_dim=32,
                    num_mel_bins=40,
                    max_source_positions=50,
                    decoder_layers=1,
                    decoder_attention_heads=2,
                    decoder_ffn_dim=32,
                    vocab_size=51866,
                ),
            )
        return cls(
            backbone=dict(
                hidden_size=16,
                num_hidden_layers=1,
                num_attention_heads=2,
                intermediate_size=32,
                conv_dim=(8, 8),
                conv_stride=(5, 4),
                conv_kernel=(10, 8),
                num_conv_pos_embeddings=8,
                num_conv_pos_embedding_groups=2,
                feat_extract_norm="layer",
                do_stable_layer_norm=True,
                conv_bias=True,
            )
        )

    @property
    def hidden_size(self) -> int:
        return int(self.backbone["hidden_size"] if self.kind == "hubert" else self.backbone["d_model"])

    @property
    def chunk_samples(self) -> int | None:
        """Whisper's fixed input length in samples (None for HuBERT)."""
        if self.kind != "whisper":
            return None
        return int(self.backbone["max_source_positions"]) * 2 * 160


VIEWS = ("global", "face", "temporal")


CROPS = ("frame", "face")

#: Which frame of a window a shipped-ViT view takes ("last": the newest, what a sliding window adds).
SHIPPED_FRAME_CHOICES = ("first", "middle", "last")


@dataclass(frozen=True)
class ShippedViTConfig:
    """One visual view read by the shipped ViT-S/14 (see module docstring).

    Attributes:
        encoder_type: fixed tag that tells this config apart from the
            transformers-backed view configs when a model config is loaded.
        view: "global", "face" or "temporal" (must match the model slot).
        pool_grid: global view: patch grid side after average pooling (1..16).
        frame: global view: which frame of the window ("first", "middle" or
            "last"); face view: "last" takes the newest ``max_frames`` crops,
            any other value the middle ones (what models before "last" were trained on).
        max_frames: face view: crops encoded per window.
        num_frames: temporal view: frames sampled evenly over the window.
        stride: temporal view: 0 spreads ``num_frames`` from the first to the
            last frame; S > 0 takes the newest frame and every S-th before it
            (clamped at the first). Why: sliding windows shift their K frames
            by K x hop / W indices per hop (2 at W 2 s, hop 0.5 s, K 8), so with
            S a multiple of that shift a window's older temporal frames are
            frames an earlier window already encoded as its newest, and the
            image cache serves them: one new full frame per window, not two.
        crop: temporal view: whole frames ("frame") or face crops ("face").
        threads: ONNX Runtime intra-op threads (0: ORT's default).
        cache_images: recent images whose tokens are kept (0: no cache).
        precision: "fp32" (the shipped graph) or "int8" (its MatMuls dynamically
            quantized by ONNX Runtime when the session opens: ~2x faster on a
            2-core CPU, CLS cosine 0.998 to fp32; train on int8 features to serve int8).
    """

    encoder_type: str = "shipped_vit_s14"
    view: str = "global"
    pool_grid: int = 4
    frame: str = "first"
    max_frames: int = 1
    num_frames: int = 2
    crop: str = "frame"
    threads: int = 0
    cache_images: int = 16
    precision: str = "fp32"
    stride: int = 0

    def __post_init__(self) -> None:
        check_choice(self.precision, ("fp32", "int8"), "shipped ViT precision")
        if self.encoder_type != "shipped_vit_s14":
            raise ConfigError(f"encoder_type must be 'shipped_vit_s14', got {self.encoder_type!r}")
        check_choice(self.view, VIEWS, "shipped ViT view")
        check_choice(self.frame, SHIPPED_FRAME_CHOICES, "shipped ViT frame")
        check_choice(self.crop, CROPS, "shipped ViT crop")
        if not 1 <= self.pool_grid <= 16 or 16 % self.pool_grid:
            raise ConfigError(f"pool_grid must divide the 16 x 16 patch grid (1, 2, 4, 8 or 16), got {self.pool_grid}")
        if self.max_frames < 1 or self.num_frames < 1:
            raise ConfigError(f"max_frames and num_frames must be >= 1, got {self.max_frames} / {self.num_frames}")
        if self.threads < 0 or self.cache_images < 0 or self.stride < 0:
            raise ConfigError("threads, cache_images and stride must be >= 0")

    # what the model config checks and the runtime glue reads
    hidden_size = 384
    image_size = 224
    image_mean = IMAGENET_MEAN
    image_std = IMAGENET_STD
    interpolation = "bicubic"

    @property
    def num_patches(self) -> int:
        return self.pool_grid * self.pool_grid

    def frame_index(self, n_frames: int) -> int:
        if n_frames < 1:
            raise ValueError("global view needs at least one frame")
        return {"first": 0, "middle": n_frames // 2}.get(self.frame, n_frames - 1)

    def face_indices(self, n_available: int) -> list[int]:
        """The face view's crops: the newest ``max_frames`` (``frame="last"``), else the middle ones."""
        n = min(n_available, self.max_frames)
        start = n_available - n if self.frame == "last" else (n_available - n) // 2
        return list(range(start, start + n))

    def frame_indices(self, n_available: int) -> list[int]:
        """``num_frames`` indices in time order: spread evenly from the first to the last frame (repeats when
        fewer exist), or with ``stride`` the newest frame and every ``stride``-th before it (clamped at 0)."""
        if n_available < 1:
            raise ValueError("temporal view needs at least one frame")
        if self.stride:
            return [max(0, n_available - 1 - self.stride * k) for k in reversed(range(self.num_frames))]
        if self.num_frames == 1:
            return [0]
        return [int(round(i * (n_available - 1) / (self.num_frames - 1))) for i in range(self.num_frames)]


@dataclass(frozen=True)
class ShippedWhisperConfig:
    """The audio view on the shipped Whisper tiny.en encoder (see module docstring).

    Attributes:
        encoder_type: fixed tag that tells this config apart from :class:`AudioEncoderConfig`.
        max_seconds: audio beyond this (from the window's start) is dropped (<= 30).
        threads: CTranslate2 intra-op threads (0: its default).
    """

    encoder_type: str = "shipped_whisper_tiny_en"
    max_seconds: float = 4.0
    threads: int = 0

    def __post_init__(self) -> None:
        if self.encoder_type != "shipped_whisper_tiny_en":
            raise ConfigError(f"encoder_type must be 'shipped_whisper_tiny_en', got {self.encoder_type!r}")
        if not 0.1 <= self.max_seconds <= 30.0:
            raise ConfigError(f"max_seconds must be in [0.1, 30], got {self.max_seconds}")
        if self.threads < 0:
            raise ConfigError(f"threads must be >= 0, got {self.threads}")

    hidden_size = 384
    sample_rate = 16000
    kind = "whisper"

    @property
    def max_samples(self) -> int:
        return int(round(self.max_seconds * self.sample_rate))


#: Encoder configs whose weights ship in packages and run there (ONNX Runtime / CTranslate2), not exported.
SHIPPED_CONFIGS = (ShippedViTConfig, ShippedWhisperConfig)
