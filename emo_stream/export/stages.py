"""The exportable stages of an Emotion-LLaMA model, as plain tensor-in/tensor-out graphs.

Each encoder and the projector (v1) or conv-attention fusion (v2) becomes one
*stage*: an ``nn.Module`` whose inputs and outputs are plain tensors with fixed
names, so the same graph can run in torch, ONNX Runtime or TensorRT. The glue
around a stage (turning a window into inputs, masks and pooling of the outputs)
is shared by every backend and lives in :mod:`emo_stream.runtime.exported`.

Stages and their tensors (``batch`` etc. are dynamic axes; the rest is fixed by
the model config):

==========  =============================================================  ==================================================
stage       inputs                                                         outputs
==========  =============================================================  ==================================================
global      pixel_values (batch, 3, S, S)                                  tokens (batch, 1 + N, D)  [CLS, patches]
face        pixel_values (faces, 3, S, S)  one crop per row                frame_features (faces, D)  CLS (or mean patch) token
temporal    pixel_values (batch, K, 3, S, S)                               tokens (batch, T, D)
audio       input_values (batch, samples)  [HuBERT]                        frames (batch, frames, D)
            input_features (batch, mels, 2 P)  [Whisper]                   frames (batch, P, D)
projector   vision_tokens (batch, 1 + N, Dv), face/video/audio_feature     video_tokens (batch, N/g, W), video_mask,
  (v1)      (batch, d), present (batch, 4) bool [global, face, video,      feature_tokens (batch, 4, W), feature_mask
            audio]
fusion      <m>_tokens (batch, <m>_len, D_m), <m>_mask (batch, <m>_len)    tokens (batch, T, W), mask (batch, T),
  (v2)      bool per modality m, present (batch, M) bool                   attention (batch, T, M)
==========  =============================================================  ==================================================

An absent modality is fed as zeros with ``present`` False (a one-token dummy
for the fusion); the graphs then mask it exactly as the torch model masks a
missing input (the projector zeroes it, the fusion gives it weight 0).

:class:`StageSpec` also carries the dynamic-axis ranges (used for
``torch.export`` dims and for TensorRT optimisation profiles), the shapes at
which parity with torch is measured (>= 3 per stage, different batch sizes and
lengths), and a seeded sample-input generator.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from emo_stream.errors import ConfigError

if TYPE_CHECKING:
    from emo_stream.model.encoders import AudioEncoder, FaceViewEncoder, GlobalViewEncoder, TemporalViewEncoder
    from emo_stream.model.projectors import ConvAttentionFusion

#: Canonical stage order (encoders first; the projector/fusion consumes them).
STAGE_ORDER = ("global", "face", "temporal", "audio", "projector", "fusion")
#: v1 ``present`` columns.
V1_PRESENT = ("global", "face", "video", "audio")


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: name, shape (ints, or dynamic-axis names) and numpy dtype name."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str = "float32"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    def concrete(self, dims: Mapping[str, int]) -> tuple[int, ...]:
        return tuple(dims[d] if isinstance(d, str) else int(d) for d in self.shape)


@dataclass(frozen=True)
class DimRange:
    """A dynamic axis: smallest, typical (TensorRT's ``opt``) and largest size, and the size used to trace."""

    min: int
    opt: int
    max: int
    trace: int

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise ConfigError(f"dynamic axis needs 1 <= min <= opt <= max, got {self}")
        if not self.min <= self.trace <= self.max:
            raise ConfigError(f"trace size {self.trace} outside [{self.min}, {self.max}]")

    def to_dict(self) -> dict[str, int]:
        return {"min": self.min, "opt": self.opt, "max": self.max}


Sampler = Callable[[TensorSpec, tuple[int, ...], np.random.Generator], np.ndarray]


@dataclass
class StageSpec:
    """Everything needed to export, profile and check one stage."""

    name: str
    module: nn.Module
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    dims: dict[str, DimRange]
    parity_shapes: tuple[dict[str, int], ...]
    samplers: dict[str, Sampler] = field(default_factory=dict)
    #: extra facts the runtime glue needs (patch counts, frame formulas ...).
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def trace_dims(self) -> dict[str, int]:
        return {k: r.trace for k, r in self.dims.items()}

    def sample(self, dims: Mapping[str, int], seed: int = 0) -> dict[str, np.ndarray]:
        """Seeded inputs at ``dims`` (masks keep at least one valid element per row)."""
        return sample_tensors(self.inputs, dims, seed, self.samplers)

    def torch_dynamic_shapes(self) -> tuple[dict[int, Any], ...] | tuple[tuple[dict[int, Any], ...]]:
        """``torch.export`` dynamic shapes, one dict per input (shared axis names share one ``Dim``);
        for a ``forward(*inputs)`` those dicts are wrapped in the one var-positional slot's tuple."""
        import inspect

        made = {name: torch.export.Dim(f"{self.name}_{name}", min=r.min, max=r.max) for name, r in self.dims.items()}
        per_input = tuple({i: made[d] for i, d in enumerate(t.shape) if isinstance(d, str)} for t in self.inputs)
        params = inspect.signature(self.module.forward).parameters.values()
        if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
            return (per_input,)  # ``forward(*inputs)``: one var-positional slot holding every input
        return per_input

    @torch.no_grad()
    def run_torch(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = [torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in self.input_names]
        outs = self.module(*args)
        if isinstance(outs, Tensor):
            outs = (outs,)
        return {n: o.detach().cpu().numpy() for n, o in zip(self.output_names, outs)}

    def describe(self) -> dict[str, Any]:
        return {
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "dynamic_axes": {k: r.to_dict() for k, r in self.dims.items()},
            "info": self.info,
        }


# --------------------------------------------------------------------------- stage modules


class GlobalViewStage(nn.Module):
    """EVA-style ViT: pixels -> [CLS, patch] tokens (no final norm when the config says so)."""

    def __init__(self, encoder: GlobalViewEncoder) -> None:
        super().__init__()
        self.backbone = encoder.backbone

    def forward(self, pixel_values: Tensor) -> Tensor:
        return self.backbone(pixel_values=pixel_values).last_hidden_state


class FaceViewStage(nn.Module):
    """MAE ViT per face crop -> the encoder's per-frame feature (``FaceViewEncoder.frame_features``)."""

    def __init__(self, encoder: FaceViewEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, pixel_values: Tensor) -> Tensor:
        return self.encoder.frame_features(pixel_values)


class TemporalViewStage(nn.Module):
    def __init__(self, encoder: TemporalViewEncoder) -> None:
        super().__init__()
        self.backbone = encoder.backbone

    def forward(self, pixel_values: Tensor) -> Tensor:
        return self.backbone(pixel_values=pixel_values).last_hidden_state


class AudioStage(nn.Module):
    """HuBERT (waveform) or Whisper encoder (log-mel) -> frame features of the configured layer (``AudioEncoder.hidden_state``)."""

    def __init__(self, encoder: AudioEncoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.kind = encoder.config.kind

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "hubert":
            return self.encoder.hidden_state(input_values=x)
        return self.encoder.hidden_state(input_features=x)


class ProjectorV1Stage(nn.Module):
    """Emotion-LLaMA's projector with every modality as an input and a (batch, 4) presence mask."""

    def __init__(self, projector: nn.Module) -> None:
        super().__init__()
        self.projector = projector

    def forward(
        self, vision_tokens: Tensor, face_feature: Tensor, video_feature: Tensor, audio_feature: Tensor, present: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        from emo_stream.model.prompts import FEATURE_SLOT, VIDEO_SLOT

        pres = {name: present[:, i] for i, name in enumerate(V1_PRESENT)}
        out = self.projector(vision_tokens, {"face": face_feature, "video": video_feature, "audio": audio_feature}, pres)
        v, f = out.slots[VIDEO_SLOT], out.slots[FEATURE_SLOT]
        return v.tokens, v.mask, f.tokens, f.mask


class _KeywordSafeModuleDict(nn.Module):
    """A read-only stand-in for an ``nn.ModuleDict`` whose keys may be Python keywords.

    ``torch.export`` regenerates Python source with attribute access per module
    path; the fusion's ``prep["global"]`` becomes ``self.prep.global`` there, a
    SyntaxError. The same submodules (same parameters) are registered under safe
    names and looked up by the original key.
    """

    def __init__(self, modules: nn.ModuleDict) -> None:
        super().__init__()
        import keyword

        self._alias: dict[str, str] = {}
        for key, mod in modules.items():
            safe = f"{key}_" if keyword.iskeyword(key) or not key.isidentifier() else key
            self.add_module(safe, mod)
            self._alias[key] = safe

    def __getitem__(self, key: str) -> nn.Module:
        return getattr(self, self._alias[key])

    def __contains__(self, key: object) -> bool:
        return key in self._alias


class FusionV2Stage(nn.Module):
    """Emotion-LLaMAv2 conv-attention fusion with (tokens, mask) per modality and a (batch, M) presence mask."""

    def __init__(self, fusion: ConvAttentionFusion) -> None:
        super().__init__()
        import copy

        # A shallow clone sharing every parameter, with the keyword-safe ``prep`` (see above).
        clone = copy.copy(fusion)
        clone._modules = dict(fusion._modules)
        clone._modules["prep"] = _KeywordSafeModuleDict(fusion.prep)
        self.fusion = clone
        self.names = tuple(fusion.config.names)

    def forward(self, *inputs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        from emo_stream.model.prompts import VIDEO_SLOT

        present = inputs[-1]
        given = {n: (inputs[2 * i], inputs[2 * i + 1]) for i, n in enumerate(self.names)}
        out = self.fusion(given, {n: present[:, i] for i, n in enumerate(self.names)})
        s = out.slots[VIDEO_SLOT]
        return s.tokens, s.mask, out.attention


# --------------------------------------------------------------------------- samplers


def _pixels(t: TensorSpec, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    # normalised pixels of a real image lie in about [-2, 2.6]
    return rng.uniform(-1.8, 2.2, size=shape).astype(np.float32)


def _mel(t: TensorSpec, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    # Whisper log-mel features are scaled to roughly [-1, 1.5]
    return rng.uniform(-1.0, 1.5, size=shape).astype(np.float32)


def _row_mask(t: TensorSpec, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Valid prefix of random length per row (>= 1), like padded token sequences."""
    b, n = shape
    keep = rng.integers(1, n + 1, size=b)
    keep[0] = n
    return np.arange(n)[None, :] < keep[:, None]


def _presence(t: TensorSpec, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Row 0 has every modality; other rows drop some (exercises the masking)."""
    m = rng.random(shape) < 0.7
    m[0] = True
    if shape[0] > 1:
        m[1, 0] = False
    return m


def default_sampler(t: TensorSpec) -> Sampler | None:
    """The sampler a tensor gets by its name (so manifests alone can regenerate parity inputs)."""
    if t.name == "pixel_values":
        return _pixels
    if t.name == "input_features":
        return _mel
    if t.name == "present":
        return _presence
    if t.dtype == "bool" and t.name.endswith("_mask"):
        return _row_mask
    return None


def sample_tensors(
    inputs: Sequence[TensorSpec], dims: Mapping[str, int], seed: int = 0, samplers: Mapping[str, Sampler] | None = None
) -> dict[str, np.ndarray]:
    """Seeded inputs for ``inputs`` at ``dims``: named samplers, else standard normal floats / all-True bools."""
    rng = np.random.default_rng(seed)
    out = {}
    for t in inputs:
        shape = t.concrete(dims)
        sampler = (samplers or {}).get(t.name) or default_sampler(t)
        if sampler is not None:
            out[t.name] = sampler(t, shape, rng)
        elif t.dtype == "bool":
            out[t.name] = np.ones(shape, dtype=bool)
        else:
            out[t.name] = rng.standard_normal(shape).astype(t.dtype)
    return out


def tensor_specs(entries: Sequence[Mapping[str, Any]]) -> tuple[TensorSpec, ...]:
    """TensorSpecs back from a manifest's ``inputs`` / ``outputs`` list."""
    return tuple(TensorSpec(e["name"], tuple(e["shape"]), e.get("dtype", "float32")) for e in entries)


# --------------------------------------------------------------------------- building specs


@dataclass(frozen=True)
class ExportLimits:
    """Ranges of the dynamic axes (also TensorRT optimisation profile bounds).

    Attributes:
        max_batch: largest batch (windows per call); ``opt`` is 1 (streaming).
        max_faces: largest number of face crops per call (batch x frames).
        opt_faces: typical face crops per call (frames per window).
        max_audio_s / opt_audio_s: HuBERT input length bounds in seconds.
    """

    max_batch: int = 8
    max_faces: int = 64
    opt_faces: int = 8
    max_audio_s: float = 30.0
    opt_audio_s: float = 2.0

    def __post_init__(self) -> None:
        if self.max_batch < 1 or self.max_faces < 1 or not 1 <= self.opt_faces <= self.max_faces:
            raise ConfigError(f"bad export limits: {self}")
        if not 0 < self.opt_audio_s <= self.max_audio_s:
            raise ConfigError(f"bad audio limits: opt {self.opt_audio_s} s, max {self.max_audio_s} s")


def _batch(limits: ExportLimits) -> DimRange:
    return DimRange(1, 1, max(limits.max_batch, 3), 2)


def _three_batches() -> tuple[dict[str, int], ...]:
    return ({"batch": 1}, {"batch": 2}, {"batch": 3})


def _exportable(model: Any, name: str) -> Any:
    """The encoder of ``name`` unless it is absent or a shipped frozen one (ONNX Runtime / CTranslate2 already:
    the runtime runs those from their packages, see :func:`shipped_encoders`)."""
    from emo_stream.model.encoders import SHIPPED_CONFIGS

    enc = model.encoder(name)
    return None if enc is None or isinstance(enc.config, SHIPPED_CONFIGS) else enc


def shipped_encoders(model: Any) -> dict[str, dict[str, Any]]:
    """Manifest entries of the encoders that run from package files (which package, file and its sha256)."""
    from emo_stream.model.encoders import SHIPPED_CONFIGS
    from emo_stream.model.encoders.shipped_vit import VIT_S14_PACKAGE
    from emo_stream.model.encoders.shipped_whisper import WHISPER_TINY_EN_PACKAGE

    out = {}
    for name in ("global", "face", "temporal", "audio"):
        enc = model.encoder(name)
        if enc is None or not isinstance(enc.config, SHIPPED_CONFIGS):
            continue
        pkg = VIT_S14_PACKAGE if name != "audio" else WHISPER_TINY_EN_PACKAGE
        out[name] = {
            "encoder_type": enc.config.encoder_type,
            "package": pkg[1],
            "file": pkg[2],
            "sha256": bytes(enc.weights_sha256.tolist()).hex(),
            "runtime": "onnxruntime" if name != "audio" else "ctranslate2",
        }
    return out


def stage_specs(model: Any, limits: ExportLimits | None = None) -> dict[str, StageSpec]:
    """The stages of ``model`` (an :class:`~emo_stream.model.emotion_llama.EmotionLlama`), in :data:`STAGE_ORDER`."""
    from emo_stream.model.encoders import _receptive_field

    limits = limits or ExportLimits()
    cfg = model.config
    specs: dict[str, StageSpec] = {}
    enc = _exportable(model, "global")
    if enc is not None:
        c = enc.config
        s = c.image_size
        specs["global"] = StageSpec(
            "global",
            GlobalViewStage(enc),
            (TensorSpec("pixel_values", ("batch", 3, s, s)),),
            (TensorSpec("tokens", ("batch", 1 + c.num_patches, c.hidden_size)),),
            {"batch": _batch(limits)},
            _three_batches(),
            {"pixel_values": _pixels},
            {"image_size": s, "num_patches": c.num_patches},
        )
    enc = _exportable(model, "face")
    if enc is not None:
        c = enc.config
        s = c.image_size
        specs["face"] = StageSpec(
            "face",
            FaceViewStage(enc),
            (TensorSpec("pixel_values", ("faces", 3, s, s)),),
            (TensorSpec("frame_features", ("faces", c.hidden_size)),),
            {"faces": DimRange(1, limits.opt_faces, max(limits.max_faces, 6), 2)},
            ({"faces": 1}, {"faces": 3}, {"faces": 6}),
            {"pixel_values": _pixels},
            {"image_size": s},
        )
    enc = _exportable(model, "temporal")
    if enc is not None:
        c = enc.config
        s, k = c.image_size, c.num_frames
        t = (k // int(c.backbone["tubelet_size"])) * (s // int(c.backbone["patch_size"])) ** 2
        specs["temporal"] = StageSpec(
            "temporal",
            TemporalViewStage(enc),
            (TensorSpec("pixel_values", ("batch", k, 3, s, s)),),
            (TensorSpec("tokens", ("batch", t, c.hidden_size)),),
            {"batch": _batch(limits)},
            _three_batches(),
            {"pixel_values": _pixels},
            {"image_size": s, "num_frames": k},
        )
    enc = _exportable(model, "audio")
    if enc is not None:
        c = enc.config
        if c.kind == "hubert":
            hc = enc.backbone.config
            rf = _receptive_field(hc.conv_kernel, hc.conv_stride)
            sr = c.sample_rate
            # torch.export specialises 0/1-sized axes, so the traced graph needs >= 2 output
            # frames; 0.1 s is above that for every HuBERT (the runtime pads shorter audio).
            rf = max(rf, sr // 10)
            opt = max(rf, int(limits.opt_audio_s * sr))
            mx = max(opt, int(limits.max_audio_s * sr))
            # parity lengths: short, odd, and longer, all above the receptive field
            lens = (max(rf, sr // 2), max(rf + 1, int(0.77 * sr) | 1), max(rf + 2, sr))
            specs["audio"] = StageSpec(
                "audio",
                AudioStage(enc),
                (TensorSpec("input_values", ("batch", "samples")),),
                (TensorSpec("frames", ("batch", "frames", c.hidden_size)),),
                {"batch": _batch(limits), "samples": DimRange(rf, opt, mx, max(rf + 3, int(0.6 * sr)))},
                tuple({"batch": b, "samples": n} for b, n in zip((1, 2, 3), lens)),
                {},
                {
                    "kind": "hubert",
                    "min_samples": rf,
                    "conv_kernel": list(hc.conv_kernel),
                    "conv_stride": list(hc.conv_stride),
                    "normalize": c.normalize,
                    "sample_rate": sr,
                },
            )
        else:
            mels = int(c.backbone["num_mel_bins"])
            p = int(c.backbone["max_source_positions"])
            specs["audio"] = StageSpec(
                "audio",
                AudioStage(enc),
                (TensorSpec("input_features", ("batch", mels, 2 * p)),),
                (TensorSpec("frames", ("batch", p, c.hidden_size)),),
                {"batch": _batch(limits)},
                _three_batches(),
                {"input_features": _mel},
                {"kind": "whisper", "max_source_positions": p, "num_mel_bins": mels, "sample_rate": c.sample_rate},
            )
    if cfg.version == "v1":
        pc = cfg.projector
        nv = pc.num_video_tokens
        specs["projector"] = StageSpec(
            "projector",
            ProjectorV1Stage(model.projector),
            (
                TensorSpec("vision_tokens", ("batch", 1 + pc.num_patches, pc.vision_width)),
                TensorSpec("face_feature", ("batch", pc.feature_dims[0])),
                TensorSpec("video_feature", ("batch", pc.feature_dims[1])),
                TensorSpec("audio_feature", ("batch", pc.feature_dims[2])),
                TensorSpec("present", ("batch", 4), "bool"),
            ),
            (
                TensorSpec("video_tokens", ("batch", nv, pc.llm_width)),
                TensorSpec("video_mask", ("batch", nv), "bool"),
                TensorSpec("feature_tokens", ("batch", 4, pc.llm_width)),
                TensorSpec("feature_mask", ("batch", 4), "bool"),
            ),
            {"batch": _batch(limits)},
            _three_batches(),
            {"present": _presence},
            {"present_order": list(V1_PRESENT), "llm_width": pc.llm_width},
        )
    else:
        fc = cfg.fusion
        ins: list[TensorSpec] = []
        dims: dict[str, DimRange] = {"batch": _batch(limits)}
        samplers: dict[str, Sampler] = {"present": _presence}
        typical = {}
        for name, width in fc.modalities:
            typical[name] = _typical_tokens(model, name)
            ins.append(TensorSpec(f"{name}_tokens", ("batch", f"{name}_len", width)))
            ins.append(TensorSpec(f"{name}_mask", ("batch", f"{name}_len"), "bool"))
            samplers[f"{name}_mask"] = _row_mask
            n = typical[name]
            dims[f"{name}_len"] = DimRange(1, n, max(4 * n, 8), max(2, n))
        ins.append(TensorSpec("present", ("batch", len(fc.modalities)), "bool"))
        shapes = []
        for b, scale in ((1, 1.0), (2, 0.5), (3, 1.5)):
            d = {"batch": b}
            for name, _ in fc.modalities:
                d[f"{name}_len"] = max(1, round(typical[name] * scale))
            shapes.append(d)
        specs["fusion"] = StageSpec(
            "fusion",
            FusionV2Stage(model.projector),
            tuple(ins),
            (
                TensorSpec("tokens", ("batch", fc.num_tokens, fc.llm_width)),
                TensorSpec("mask", ("batch", fc.num_tokens), "bool"),
                TensorSpec("attention", ("batch", fc.num_tokens, len(fc.modalities))),
            ),
            dims,
            tuple(shapes),
            samplers,
            {"modalities": [n for n, _ in fc.modalities], "llm_width": fc.llm_width},
        )
    return specs


def _typical_tokens(model: Any, name: str) -> int:
    """Tokens a modality's encoder produces for one typical window (fusion ``opt`` length)."""
    enc = model.encoder(name)
    if enc is None:
        return 16
    c = enc.config
    from emo_stream.model.encoders import ShippedViTConfig, ShippedWhisperConfig

    if isinstance(c, ShippedViTConfig):  # [CLS + pooled patches], one CLS per face crop, one per temporal frame
        return {"global": 1 + c.num_patches, "face": c.max_frames, "temporal": c.num_frames}[name]
    if isinstance(c, ShippedWhisperConfig):  # 50 Hz frames of a 2 s window
        return 100
    if name == "global":
        return 1 + c.num_patches
    if name == "face":
        return 8
    if name == "temporal":
        return (c.num_frames // int(c.backbone["tubelet_size"])) * (c.image_size // int(c.backbone["patch_size"])) ** 2
    if c.kind == "whisper":
        return int(c.backbone["max_source_positions"])
    return 100  # ~2 s of HuBERT frames at 50 Hz


def stage_names(specs: Mapping[str, StageSpec]) -> list[str]:
    return [n for n in STAGE_ORDER if n in specs]


def check_stage_subset(requested: Sequence[str] | None, specs: Mapping[str, StageSpec]) -> list[str]:
    names = stage_names(specs)
    if not requested:
        return names
    unknown = [s for s in requested if s not in specs]
    if unknown:
        raise ConfigError(f"unknown stage(s) {unknown}; this model has {names}")
    return [n for n in names if n in requested]
