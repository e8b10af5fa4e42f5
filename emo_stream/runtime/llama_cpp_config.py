"""What the llama.cpp runtime takes and gives: :class:`LlamaCppConfig` (validated at
construction), prompt/label types, :class:`LabelScores`, :class:`RuntimeStats`.

Split from :mod:`emo_stream.runtime.llama_cpp` (issue 15), so code that only
builds a config or reads scores does not import the runtime.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emo_stream.errors import ConfigError
from emo_stream.runtime.llama_cpp_gguf import GGUF_TYPES, SCORING_GGUF_TYPE

#: One piece of a prompt: text (tokenized with special tokens parsed), token ids
#: (1-D integer array or list of ints) or soft tokens (float array (n, n_embd)).
PromptPart = str | Sequence[int] | np.ndarray
#: A prompt: a string, or a list of parts decoded in order at consecutive positions.
Prompt = str | Sequence[PromptPart]
#: A candidate answer: text (tokenized without special tokens) or token ids used as is.
Label = str | Sequence[int] | np.ndarray


# --------------------------------------------------------------------------- config & results


@dataclass(frozen=True)
class LlamaCppConfig:
    """How to load and run the model.

    ``n_seq_max`` bounds how many *multi-token* labels one :meth:`score_labels`
    call can branch into (``n_seq_max - 3``; three ids are reserved, see the
    module doc). ``n_batch`` is the most rows one ``llama_decode`` call takes
    (longer inputs are split); ``n_ubatch`` is how many llama.cpp computes at
    once inside a call (default ``min(32, n_batch)``; see below for why it is
    small).
    ``seed`` seeds sampling when ``temperature > 0`` (greedy ignores it).

    ``default_model_type``: without ``model_path`` the packaged SmolLM2 (shipped
    as Q4_1) is requantized once into the model cache to this GGUF type
    (default :data:`SCORING_GGUF_TYPE`, chosen by measured prefill speed; see
    there); ``None`` loads the file as shipped. A ``model_path`` is always
    loaded as it is.

    Threads: llama.cpp uses ``n_threads`` for single-token decodes (rationale
    generation) and ``n_threads_batch`` for multi-token batches (prefix, clues,
    labels); both default to ``os.cpu_count()``. The CPU backend is built with
    OpenMP and its threads spin at ~hundreds of barriers per token, so when
    other stages (face, voice models) compete for the same cores a lower
    ``n_threads`` is often faster; measure on the robot.

    ``flash_attn=True`` with ``n_ubatch < 64`` makes results independent of
    how a sequence is cut into ``llama_decode`` calls and of where its cells sit
    in the KV cache, bit for bit: a cached prefix + clue batch scores exactly
    like a one-shot evaluation, and a window scores the same whether or not a
    rationale is being generated next to it. Why: activations are quantized to
    8 bits before every quantized matmul, so a different floating-point
    summation order anywhere flips some roundings and moves logits by up to
    ~0.7 (measured on SmolLM2; that is also its max-abs error against an fp32
    dequantized reference either way). ggml's CPU attention without flash
    attention sums over KV cells in SIMD lanes (order depends on cell
    alignment); with flash attention, batches of >= 64 queries
    (``GGML_FA_TILE_Q``) switch to a tiled kernel with another order, while
    smaller ones visit cells one by one. Speed is the same within noise for
    this model (measured 150-token prompt: 0.55-0.65 s on 2 busy cores for all
    four combinations).
    """

    model_path: str | Path | None = None
    default_model_type: str | None = SCORING_GGUF_TYPE
    n_ctx: int = 2048
    n_threads: int | None = None
    n_threads_batch: int | None = None
    n_batch: int = 512
    n_ubatch: int | None = None
    n_seq_max: int = 16
    seed: int = 0
    n_gpu_layers: int = 0
    flash_attn: bool = True
    verbose: bool = False

    def __post_init__(self) -> None:
        if self.n_threads is None:
            object.__setattr__(self, "n_threads", os.cpu_count() or 1)
        if self.n_threads_batch is None:
            object.__setattr__(self, "n_threads_batch", self.n_threads)
        if self.n_ubatch is None:
            object.__setattr__(self, "n_ubatch", min(32, self.n_batch))
        checks = [
            (64 <= self.n_ctx <= 1 << 20, f"n_ctx must be in [64, 1048576], got {self.n_ctx}"),
            (isinstance(self.n_threads, int) and 1 <= self.n_threads <= 1024, f"n_threads must be in [1, 1024], got {self.n_threads}"),
            (
                isinstance(self.n_threads_batch, int) and 1 <= self.n_threads_batch <= 1024,
                f"n_threads_batch must be in [1, 1024], got {self.n_threads_batch}",
            ),
            (1 <= self.n_batch <= self.n_ctx, f"n_batch must be in [1, n_ctx={self.n_ctx}], got {self.n_batch}"),
            (
                isinstance(self.n_ubatch, int) and 1 <= self.n_ubatch <= self.n_batch,
                f"n_ubatch must be in [1, n_batch={self.n_batch}], got {self.n_ubatch}",
            ),
            (4 <= self.n_seq_max <= 256, f"n_seq_max must be in [4, 256], got {self.n_seq_max}"),
            (0 <= self.seed < 2**32, f"seed must be in [0, 2**32), got {self.seed}"),
            (self.n_gpu_layers >= -1, f"n_gpu_layers must be >= -1 (-1 = all), got {self.n_gpu_layers}"),
            (
                self.default_model_type is None or self.default_model_type in GGUF_TYPES,
                f"default_model_type must be one of {', '.join(GGUF_TYPES)} or null (as shipped), got {self.default_model_type!r}",
            ),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(f"llama_cpp: {msg}")


@dataclass(frozen=True)
class LabelScores:
    """Scores of candidate labels as continuations of one prompt.

    ``logprobs[i]`` is the exact log-probability of label ``i``'s whole token
    sequence (sum over its ``n_tokens[i]`` tokens); ``probs`` is the softmax
    over ``logprobs`` (the labels' relative probability, summing to 1). Longer
    labels pay for every token: divide ``logprobs`` by ``n_tokens`` for a
    per-token view.
    """

    labels: tuple[str | tuple[int, ...], ...]  # as given; token-id labels as int tuples
    logprobs: np.ndarray
    n_tokens: np.ndarray
    probs: np.ndarray

    def top(self) -> str | tuple[int, ...]:
        return self.labels[int(np.argmax(self.logprobs))]

    def as_dict(self) -> dict[str | tuple[int, ...], float]:
        return {label: float(p) for label, p in zip(self.labels, self.probs, strict=True)}


@dataclass
class RuntimeStats:
    """Counters for benchmarks and for tests that the prefix really is cached."""

    prefix_evals: int = 0
    tokens_decoded: int = 0
    embeddings_decoded: int = 0
    decode_calls: int = 0
    load_s: float = 0.0
