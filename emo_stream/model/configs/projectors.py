"""Projector (v1) and conv-attention fusion (v2) config dataclasses, without torch.

:mod:`emo_stream.model.projectors` (torch) re-exports them; the exported runtime
reads them on a robot without torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from emo_stream.errors import ConfigError


@dataclass(frozen=True)
class EmotionLlamaProjectorConfig:
    """Shapes of Emotion-LLaMA's projector (defaults: EVA-CLIP-g 448 px, 1024-d features, LLaMA-2-7B).

    Attributes:
        vision_width: EVA token width (1408).
        num_patches: patch tokens after the CLS (1024 = 32 x 32).
        group: consecutive patch tokens concatenated per LLM token (4).
        feature_dims: widths of the face, video and audio utterance features.
        llm_width: LLM hidden size (4096).
        ln_eps: ``ln_vision`` epsilon (torch's LayerNorm default, as MiniGPT-v2).
    """

    vision_width: int = 1408
    num_patches: int = 1024
    group: int = 4
    feature_dims: tuple[int, int, int] = (1024, 1024, 1024)
    llm_width: int = 4096
    ln_eps: float = 1e-5

    def __post_init__(self) -> None:
        object.__setattr__(self, "feature_dims", tuple(int(d) for d in self.feature_dims))
        if min(self.vision_width, self.num_patches, self.group, self.llm_width) < 1:
            raise ConfigError(f"projector sizes must be positive: {self}")
        if self.num_patches % self.group:
            raise ConfigError(f"num_patches {self.num_patches} must be a multiple of group {self.group}")
        if len(self.feature_dims) != 3 or min(self.feature_dims) < 1:
            raise ConfigError(f"feature_dims must be three positive widths (face, video, audio), got {self.feature_dims}")
        if not 0 < self.ln_eps < 1:
            raise ConfigError(f"ln_eps must be in (0, 1), got {self.ln_eps}")

    @classmethod
    def tiny(cls, llm_width: int = 32) -> EmotionLlamaProjectorConfig:
        return cls(vision_width=24, num_patches=16, group=4, feature_dims=(16, 16, 16), llm_width=llm_width)

    @property
    def num_video_tokens(self) -> int:
        return self.num_patches // self.group


def _default_modalities() -> tuple[tuple[str, int], ...]:
    # EVA-CLIP-g tokens, MAE face tokens, VideoMAE tokens, Whisper-large-v3 frames.
    return (("global", 1408), ("face", 1024), ("temporal", 1024), ("audio", 1280))


@dataclass(frozen=True)
class ConvAttentionFusionConfig:
    """Shapes of the v2 conv-attention fusion.

    Attributes:
        modalities: (name, token width) pairs; the order fixes the modality axis.
        hidden: common width H after the per-modality MLPs.
        num_tokens: fused tokens T fed to the LLM.
        num_blocks: residual ``Conv1d(k) + SiLU`` blocks.
        kernel_size: their kernel (odd, "same" padding).
        llm_width: LLM hidden size.
        dropout: inside the per-modality MLPs.
        mask_all_zero: treat a modality whose tokens are all zero as absent
            (Emotion-LLaMAv2's convention for missing inputs).
    """

    modalities: tuple[tuple[str, int], ...] = field(default_factory=_default_modalities)
    hidden: int = 1024
    num_tokens: int = 64
    num_blocks: int = 2
    kernel_size: int = 3
    llm_width: int = 4096
    dropout: float = 0.0
    mask_all_zero: bool = True

    def __post_init__(self) -> None:
        mods = tuple((str(n), int(d)) for n, d in self.modalities)
        object.__setattr__(self, "modalities", mods)
        names = [n for n, _ in mods]
        if not names:
            raise ConfigError("conv-attention fusion needs at least one modality")
        if len(set(names)) != len(names):
            raise ConfigError(f"duplicate modality names: {names}")
        if any(d < 1 for _, d in mods) or min(self.hidden, self.num_tokens, self.llm_width) < 1 or self.num_blocks < 0:
            raise ConfigError(f"fusion sizes must be positive: {self}")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ConfigError(f"kernel_size must be odd and positive, got {self.kernel_size}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")

    @classmethod
    def tiny(cls, llm_width: int = 32, modalities: tuple[tuple[str, int], ...] | None = None) -> ConvAttentionFusionConfig:
        mods = modalities or (("global", 24), ("face", 16), ("temporal", 16), ("audio", 16))
        return cls(modalities=mods, hidden=16, num_tokens=4, num_blocks=1, kernel_size=3, llm_width=llm_width)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(n for n, _ in self.modalities)
