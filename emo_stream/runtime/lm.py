"""One interface for the language-model stage: label scoring and rationales from multimodal prompts.

A :class:`LanguageModelRuntime` takes Emotion-LLaMA's prompt (text with slot
placeholders such as ``<VideoHere>``) and the projector's tokens for each slot
(:class:`~emo_stream.model.projectors.SlotTokens`, a batch with masks), and

* :meth:`~LanguageModelRuntime.label_probs` -- p(label | prompt), normalised
  over the labels, each label scored as its tokens + ``</s>`` (the tuned answer
  format; see :mod:`emo_stream.model.llm`);
* :meth:`~LanguageModelRuntime.generate` -- a greedy rationale per sample.

Backends: :class:`TorchLM` (the ``EmotionLlamaLM`` itself, the reference) and
:class:`LlamaCppLM` (a GGUF from ``emo-stream export gguf`` on llama.cpp).

How :class:`LlamaCppLM` assembles a prompt, exactly as the torch model does
(``EmotionLlamaLM.build_prefix``): the prompt is cut at its slots; each text
segment is tokenized on its own, without special tokens, by the model's Hugging
Face tokenizer (exported beside the GGUF -- llama.cpp never tokenizes text
here, so ids are identical to torch's); a BOS id goes first; each slot's
unmasked tokens go in as soft tokens through ``llama_batch.embd``. The part up
to the first slot (BOS + ``[INST] <video>``) is the static prefix kept in
llama.cpp's KV cache between windows; everything after it varies per window
(the multimodal tokens come first in Emotion-LLaMA's template, so the cached
part is short -- the per-window work is the slot tokens, the instruction and the
labels, in as few ``llama_decode`` calls as the runtime can merge).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emo_stream.errors import ConfigError, ModelFileError
from emo_stream.runtime.stage import RuntimeUnavailableError

LLM_BACKENDS = ("llama.cpp", "torch")


class LanguageModelRuntime(ABC):
    """Label scoring and rationale generation over multimodal prompts (see module docstring)."""

    backend: str
    hidden_size: int

    @abstractmethod
    def label_probs(self, prompt: str, slots: Mapping[str, Any], labels: Sequence[str]) -> np.ndarray:
        """(B, C) probabilities over ``labels`` (rows sum to 1)."""

    @abstractmethod
    def generate(self, prompt: str, slots: Mapping[str, Any], max_new_tokens: int) -> list[str]:
        """Greedy continuation per sample (stops at </s> or ``max_new_tokens``)."""

    def describe(self) -> str:
        return self.backend

    def close(self) -> None:
        """Free the model."""


class TorchLM(LanguageModelRuntime):
    """``EmotionLlamaLM`` (LLaMA + LoRA in torch): the reference runtime."""

    backend = "torch"

    def __init__(self, lm: Any) -> None:
        self.lm = lm
        self.hidden_size = int(lm.hidden_size)

    def label_probs(self, prompt: str, slots: Mapping[str, Any], labels: Sequence[str]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            prefix = self.lm.build_prefix(prompt, slots)
            return self.lm.label_log_probs(prefix, list(labels)).exp().double().cpu().numpy()

    def generate(self, prompt: str, slots: Mapping[str, Any], max_new_tokens: int) -> list[str]:
        import torch

        with torch.inference_mode():
            ids = self.lm.generate(self.lm.build_prefix(prompt, slots), max_new_tokens)
        return [self.lm.decode(x) for x in ids]


#: Marks a "label" that is a list of token ids for :class:`_IdLabelRuntime` (see there).
_IDS_MARK = "\x00emo-stream-token-ids:"


def _llama_runtime_class() -> Any:
    try:
        from emo_stream.runtime.llama_cpp import LlamaCppRuntime
    except ImportError as exc:  # pragma: no cover - the module itself imports lazily
        raise RuntimeUnavailableError(f"llama.cpp runtime unavailable: {exc}") from None

    class _IdLabelRuntime(LlamaCppRuntime):
        """``LlamaCppRuntime`` whose ``score_labels`` also accepts labels given as token ids.

        ``score_labels`` tokenizes each label with :meth:`tokenize`; a label
        string ``_IDS_MARK + "12,2"`` is answered with ``[12, 2]`` here, so
        Emotion-LLaMA's ``label + </s>`` continuations (ids from the model's own
        tokenizer, ``</s>`` included) are scored by the runtime's own batched,
        prefix-cached code path. (A public ``score_labels`` taking id lists in
        :mod:`emo_stream.runtime.llama_cpp` would make this unnecessary.)
        """

        def tokenize(self, text: str, add_bos: bool = False, special: bool = True) -> list[int]:
            if text.startswith(_IDS_MARK):
                return [int(t) for t in text[len(_IDS_MARK) :].split(",") if t]
            return super().tokenize(text, add_bos=add_bos, special=special)

    return _IdLabelRuntime


class LlamaCppLM(LanguageModelRuntime):
    """A GGUF LLaMA on llama.cpp, prompts assembled from the HF tokenizer's ids and soft tokens."""

    backend = "llama.cpp"

    def __init__(self, runtime: Any, tokenizer: Any, *, score_eos: bool = True, embedding_scale: float = 1.0) -> None:
        self.runtime = runtime
        self.tokenizer = tokenizer
        self.score_eos = score_eos
        self.embedding_scale = float(embedding_scale)
        self.hidden_size = int(runtime.n_embd)
        self.bos_id = int(tokenizer.bos_token_id)
        self.eos_id = int(tokenizer.eos_token_id)
        self._cache: dict[str, list[int]] = {}
        if runtime.n_vocab < len(tokenizer):
            raise ModelFileError(f"GGUF vocabulary ({runtime.n_vocab}) is smaller than the tokenizer ({len(tokenizer)}): not this model's GGUF")

    @classmethod
    def load(
        cls,
        path: str | Path,
        tokenizer: Any,
        *,
        score_eos: bool = True,
        n_threads: int | None = None,
        n_ctx: int = 2048,
        n_gpu_layers: int = 0,
        n_batch: int = 512,
        embedding_scale: float = 1.0,
        verbose: bool = False,
    ) -> LlamaCppLM:
        from emo_stream.runtime.llama_cpp import LlamaCppConfig, read_gguf_index

        try:
            import llama_cpp  # noqa: F401
        except ImportError as exc:
            from emo_stream.errors import MissingDependencyError

            raise MissingDependencyError(f"the llama.cpp LLM backend needs llama-cpp-python: pip install llama-cpp-python==0.3.36 ({exc})") from None
        idx = read_gguf_index(path)
        train_ctx = int(idx.metadata.get("llama.context_length", n_ctx))
        ctx = max(64, min(n_ctx, train_ctx))
        cfg = LlamaCppConfig(model_path=path, n_ctx=ctx, n_threads=n_threads, n_batch=min(n_batch, ctx), n_gpu_layers=n_gpu_layers, verbose=verbose)
        return cls(_llama_runtime_class()(cfg), tokenizer, score_eos=score_eos, embedding_scale=embedding_scale)

    def describe(self) -> str:
        return f"llama.cpp {Path(self.runtime.path).name}"

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens (as ``EmotionLlamaLM.encode``)."""
        ids = self._cache.get(text)
        if ids is None:
            ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
            if len(self._cache) < 4096:
                self._cache[text] = ids
        return list(ids)

    def prompt_parts(self, prompt: str, slots: Mapping[str, Any], row: int) -> tuple[list[int], list[np.ndarray]]:
        """(static prefix ids, per-window parts) of one batch row (see module docstring)."""
        from emo_stream.model.prompts import split_prompt

        seg = split_prompt(prompt)
        seg.check_tokens_for(slots)
        prefix = [self.bos_id] + self.encode(seg.texts[0])
        parts: list[np.ndarray] = []
        for k, name in enumerate(seg.slots):
            s = slots[name]
            tokens, mask = _np(s.tokens)[row], _np(s.mask)[row].astype(bool)
            soft = np.ascontiguousarray(tokens[mask], dtype=np.float32)
            if soft.shape[-1] != self.hidden_size:
                raise ConfigError(f"slot {name} carries {soft.shape[-1]}-wide tokens but the GGUF expects n_embd={self.hidden_size}")
            if soft.shape[0]:
                parts.append(soft * np.float32(self.embedding_scale) if self.embedding_scale != 1.0 else soft)
            text = self.encode(seg.texts[k + 1])
            if text:
                parts.append(np.asarray(text, dtype=np.int32))
        return prefix, parts

    def continuation_ids(self, labels: Sequence[str]) -> list[list[int]]:
        out = []
        for a in labels:
            ids = self.encode(a) + ([self.eos_id] if self.score_eos else [])
            if not ids:
                raise ConfigError(f"answer {a!r} tokenizes to nothing")
            out.append(ids)
        return out

    def label_logprobs(self, prompt: str, slots: Mapping[str, Any], labels: Sequence[str]) -> np.ndarray:
        """(B, C) summed log-probabilities of each label's tokens (not normalised over labels)."""
        conts = [_IDS_MARK + ",".join(str(t) for t in c) for c in self.continuation_ids(labels)]
        rows = []
        for b in range(_batch(slots)):
            prefix, parts = self.prompt_parts(prompt, slots, b)
            rows.append(self.runtime.score_labels(prefix, parts, conts).logprobs)
        return np.stack(rows)

    def label_probs(self, prompt: str, slots: Mapping[str, Any], labels: Sequence[str]) -> np.ndarray:
        lp = self.label_logprobs(prompt, slots, labels)
        e = np.exp(lp - lp.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def generate(self, prompt: str, slots: Mapping[str, Any], max_new_tokens: int) -> list[str]:
        out = []
        for b in range(_batch(slots)):
            prefix, parts = self.prompt_parts(prompt, slots, b)
            out.append(self.runtime.generate(prefix, parts, max_tokens=max_new_tokens, stop=(), temperature=0.0).strip())
        return out

    def close(self) -> None:
        self.runtime.close()


def _np(x: Any) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    return x.detach().float().cpu().numpy() if x.is_floating_point() else x.detach().cpu().numpy()


def _batch(slots: Mapping[str, Any]) -> int:
    if not slots:
        return 1
    return int(next(iter(slots.values())).tokens.shape[0])
