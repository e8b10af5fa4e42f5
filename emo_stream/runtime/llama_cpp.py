"""llama.cpp runtime for the language model: label scoring, rationales, soft tokens.

Why the low-level bindings and not ``llama_cpp.Llama``
------------------------------------------------------
The engine needs three things the high-level ``Llama`` object does not give:

1. **A static prefix evaluated once.** Every window's prompt is
   ``[system prompt + instructions] + [this window's clues] + [answer]``. The
   first part is identical for every window, so it lives in the KV cache as
   sequence 0 and each call evaluates only the new clue tokens. ``Llama``
   keeps a single token history: scoring N labels there means N
   evaluate-and-roll-back rounds.
2. **All candidate labels in one ``llama_decode``.** Each multi-token label gets
   its own sequence id; the clue tokens are tagged with all of those ids, so
   the labels share the prefix and clue cells (no copies, one forward pass) and
   each label's tokens only attend to its own tokens. Single-token labels need
   no sequence at all: their log-probability is read from the logits of the
   last clue token.
3. **Embedding input** (Emotion-LLaMA soft tokens): ``llama_batch_init(n,
   n_embd, n_seq)`` allocates ``batch.embd``; a row there replaces a token id.
   Text goes in token batches and soft tokens in embedding batches, in the same
   sequence at consecutive positions. ``Llama`` takes token ids only.

Exactness: a label's score is the sum of the log-softmax of each of its tokens
given everything before it, bit-identical to a brute-force one-sequence-per-label
evaluation and to ``reuse_prefix=False`` (the tests check both). That needs
flash attention with ``n_ubatch < 64``: otherwise llama.cpp's CPU results
depend on batch cuts and KV cell placement by up to ~0.4 nats; see
:class:`LlamaCppConfig`.

KV-cache layout (``kv_unified=True``: one cell pool for all sequences, so
``llama_memory_seq_cp`` only adds a sequence id to the prefix cells instead of
copying them):

* seq 0: the cached prefix, nothing else between calls;
* seq 1 .. ``n_seq_max - 3``: per-call label branches, removed before the call
  returns;
* seq ``n_seq_max - 2``: scratch (``logits_for_inputs``), removed after use;
* seq ``n_seq_max - 1``: the rationale being generated.

Threading: one context, one re-entrant lock. Every decode and every cache edit
runs under it, so the engine's rationale worker and the scoring hot path never
touch the context at the same time. ``generate`` takes the lock per token, not
for the whole rationale, so a scoring call waits at most one token step (a few
ms) instead of a full rationale; that is safe because generation and scoring
use disjoint sequence ids (``generate`` calls are serialized among themselves).

Logging: llama.cpp prints ~100 lines to stderr per model load. A process-wide
log callback (llama.cpp has only one) swallows them unless a runtime was built
with ``verbose=True``, and keeps the last warnings/errors so a failed load can
say *why* in its :class:`~emo_stream.errors.ModelFileError`.

Gotchas of ``llama-cpp-python`` 0.3.36 (vendored llama.cpp, ``libllama.so.0.5``):

* the KV API is ``llama_memory_*`` on ``llama_get_memory(ctx)``
  (``seq_rm/seq_cp/seq_keep/seq_add/seq_pos_min/seq_pos_max/clear``); the old
  ``llama_kv_self_*`` / ``llama_kv_cache_*`` names are gone from the bindings;
* ``flash_attn_type`` defaults to -1 (auto = on for CPU); see
  :class:`LlamaCppConfig` for why we pin it and ``n_ubatch``;
* ``use_mmap`` is gone from ``llama_model_params`` (replaced by ``load_mode``);
* importing the ``llama_cpp`` package installs a log callback that prints
  everything to stderr until ``Llama(verbose=False)`` is built; we replace it;
* without ``kv_unified=True`` a context with ``n_seq_max`` sequences splits
  ``n_ctx`` into per-sequence streams and ``seq_cp`` copies data;
* ``llama_model_load_from_file`` returns NULL (not a crash) for truncated
  files, but the reason is only in the log.
"""

from __future__ import annotations

import ctypes
import functools
import math
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from emo_stream.errors import ConfigError, ModelFileError
from emo_stream.runtime.llama_cpp_bindings import _LOG, LlamaDecodeError, _bindings, cpu_features
from emo_stream.runtime.llama_cpp_chat import CHATML_TEMPLATE, ChatPrompt, ChatTemplate, sanitize_clue_text
from emo_stream.runtime.llama_cpp_config import Label, LabelScores, LlamaCppConfig, Prompt, PromptPart, RuntimeStats
from emo_stream.runtime.llama_cpp_gguf import (
    GGUF_TYPES,
    SCORING_GGUF_TYPE,
    GgufIndex,
    GgufTensor,
    gguf_file_type,
    quantize_gguf,
    read_gguf_index,
    requantized_gguf,
    resolve_model_path,
)

# The names other modules import from here (this module was all of the above before
# issue 15 split it along its jobs); the runtime itself is below.
__all__ = [
    "CHATML_TEMPLATE",
    "GGUF_TYPES",
    "SCORING_GGUF_TYPE",
    "ChatPrompt",
    "ChatTemplate",
    "GgufIndex",
    "GgufTensor",
    "Label",
    "LabelScores",
    "LlamaCppConfig",
    "LlamaCppRuntime",
    "LlamaDecodeError",
    "Prompt",
    "PromptPart",
    "RuntimeStats",
    "cpu_features",
    "gguf_file_type",
    "quantize_gguf",
    "read_gguf_index",
    "requantized_gguf",
    "resolve_model_path",
    "sanitize_clue_text",
]


@dataclass
class _Segment:
    kind: str  # "tokens" | "embd"
    data: np.ndarray  # int32 (n,) or float32 (n, n_embd)

    def __len__(self) -> int:
        return int(self.data.shape[0])


def _log_softmax_at(logits: np.ndarray, index: int) -> float:
    x = logits.astype(np.float64)
    m = float(x.max())
    return float(x[index] - m - math.log(float(np.exp(x - m).sum())))


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


# --------------------------------------------------------------------------- runtime


class LlamaCppRuntime:
    """One GGUF model and one llama.cpp context, shared by scoring and rationales.

    Build once per process (load ~0.2 s for SmolLM2-135M); all methods are
    thread-safe. See the module docstring for the cache layout and locking.
    """

    _PREFIX_SEQ = 0

    def __init__(self, config: LlamaCppConfig | None = None) -> None:
        self.config = config or LlamaCppConfig()
        self._closed = True  # until fully built: close() must cope with a partial init
        self._model: Any = None
        self._ctx: Any = None
        self._batches: list[Any] = []
        self._embd_table: np.ndarray | None = None
        self._verbose_registered = False
        self._lock = threading.RLock()
        self._gen_lock = threading.Lock()
        self.stats = RuntimeStats()

        self.path = resolve_model_path(self.config.model_path, self.config.default_model_type)
        self.gguf = read_gguf_index(self.path)
        lib = self._lib = _bindings()
        _LOG.install(lib)
        if self.config.verbose:
            _LOG.set_verbose(True)
            self._verbose_registered = True
        try:
            self._load(lib)
        except BaseException:
            self._closed = False  # let close() free what was built and unregister verbose
            self.close()
            raise

    # ------------------------------------------------------------------ loading

    def _load(self, lib: ModuleType) -> None:
        cfg = self.config
        mark = _LOG.mark()
        t0 = time.perf_counter()
        mparams = lib.llama_model_default_params()
        mparams.n_gpu_layers = cfg.n_gpu_layers
        self._model = lib.llama_model_load_from_file(str(self.path).encode("utf-8"), mparams)
        if not self._model:
            reason = "; ".join(_LOG.since(mark)[-3:]) or "llama.cpp gave no reason"
            raise ModelFileError(f"llama.cpp could not load model file {self.path}: {reason} (truncated or corrupt? reinstall or re-copy it)")
        n_ctx_train = lib.llama_model_n_ctx_train(self._model)
        if cfg.n_ctx > n_ctx_train:
            raise ConfigError(f"llama_cpp: n_ctx={cfg.n_ctx} exceeds the model's training context {n_ctx_train}")
        if cfg.n_seq_max > lib.llama_max_parallel_sequences():
            raise ConfigError(f"llama_cpp: n_seq_max={cfg.n_seq_max} exceeds llama.cpp's limit {lib.llama_max_parallel_sequences()}")
        cparams = lib.llama_context_default_params()
        cparams.n_ctx = cfg.n_ctx
        cparams.n_batch = cfg.n_batch
        cparams.n_ubatch = cfg.n_ubatch
        cparams.n_seq_max = cfg.n_seq_max
        cparams.n_threads = cfg.n_threads
        cparams.n_threads_batch = cfg.n_threads_batch
        cparams.kv_unified = True  # shared prefix cells; see module doc
        cparams.no_perf = True
        # 0 = disabled, 1 = enabled (the binding's default -1 = auto enables it on CPU)
        cparams.flash_attn_type = 1 if cfg.flash_attn else 0
        self._ctx = lib.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            reason = "; ".join(_LOG.since(mark)[-3:]) or "llama.cpp gave no reason"
            raise RuntimeError(f"llama.cpp could not create a context (n_ctx={cfg.n_ctx}, n_batch={cfg.n_batch}): {reason}")
        self._mem = lib.llama_get_memory(self._ctx)
        self._vocab = lib.llama_model_get_vocab(self._model)
        self.n_vocab: int = int(lib.llama_vocab_n_tokens(self._vocab))
        self.n_embd: int = int(lib.llama_model_n_embd_inp(self._model))
        self.add_bos: bool = bool(lib.llama_vocab_get_add_bos(self._vocab))
        self.bos_token: int = int(lib.llama_vocab_bos(self._vocab))
        self.eos_token: int = int(lib.llama_vocab_eos(self._vocab))

        nb, ns = cfg.n_batch, cfg.n_seq_max
        self._tok_batch = lib.llama_batch_init(nb, 0, ns)
        self._batches.append(self._tok_batch)
        self._emb_batch = lib.llama_batch_init(nb, self.n_embd, ns)
        self._batches.append(self._emb_batch)
        self._views = {
            "tokens": np.ctypeslib.as_array(self._tok_batch.token, shape=(nb,)),
            "embd": np.ctypeslib.as_array(self._emb_batch.embd, shape=(nb, self.n_embd)),
        }
        self._gen_seq = ns - 1
        self._scratch_seq = ns - 2
        self.max_branches = ns - 3

        self._prefix_ids: tuple[int, ...] | None = None
        self._prefix_logits: np.ndarray | None = None
        self._prefix_text_cache: tuple[str, tuple[int, ...]] | None = None
        self.stats.load_s = time.perf_counter() - t0
        self._closed = False

    def close(self) -> None:
        """Free the context and model (idempotent). Later calls raise ``RuntimeError``."""
        with self._lock:
            if self._closed and self._model is None:
                return
            self._closed = True
            lib = getattr(self, "_lib", None)
            if lib is not None:
                for batch in self._batches:
                    lib.llama_batch_free(batch)
                self._batches.clear()
                if self._ctx:
                    lib.llama_free(self._ctx)
                if self._model:
                    lib.llama_model_free(self._model)
            self._ctx = self._model = None
            self._views = {}
            self._embd_table = None  # drops the memory map
            if self._verbose_registered:
                _LOG.set_verbose(False)
                self._verbose_registered = False

    def __enter__(self) -> LlamaCppRuntime:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: S110 - interpreter shutdown: llama.cpp may be gone already
            pass

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("LlamaCppRuntime is closed")

    # ------------------------------------------------------------------ model facts

    @property
    def architecture(self) -> str:
        return str(self.gguf.metadata.get("general.architecture", ""))

    @functools.cached_property
    def chat_template(self) -> ChatTemplate:
        """The model's chat template (GGUF metadata), ChatML if it has none."""
        return ChatTemplate(
            self.gguf.metadata.get("tokenizer.chat_template"),
            bos_token=self.token_text(self.bos_token),
            eos_token=self.token_text(self.eos_token),
        )

    @property
    def embedding_scale(self) -> float:
        """Factor llama.cpp applies to looked-up token embeddings but not to ``batch.embd``.

        Gemma-family graphs multiply token embeddings by sqrt(n_embd) after the
        lookup; injected embeddings must carry it already. LLaMA does not scale.
        """
        return math.sqrt(self.n_embd) if self.architecture.startswith("gemma") else 1.0

    # ------------------------------------------------------------------ tokens

    def tokenize(self, text: str, add_bos: bool = False, special: bool = True) -> list[int]:
        """Token ids of ``text``; ``special`` parses markers such as ``<|im_start|>``."""
        self._check_open()
        raw = text.encode("utf-8")
        cap = len(raw) + 8
        for _ in range(2):
            buf = (self._lib.llama_token * cap)()
            n = self._lib.llama_tokenize(self._vocab, raw, len(raw), buf, cap, add_bos, special)
            if n >= 0:
                return list(buf[:n])
            cap = -n
        raise RuntimeError(f"llama_tokenize failed for {len(raw)} bytes")

    def _piece(self, token: int, special: bool = False) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = self._lib.llama_token_to_piece(self._vocab, token, buf, 64, 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self._lib.llama_token_to_piece(self._vocab, token, buf, -n, 0, special)
        return buf.raw[:n]

    def token_text(self, token: int) -> str:
        """The text of one token with special tokens rendered (``<|im_end|>``)."""
        self._check_open()
        return self._piece(token, special=True).decode("utf-8", errors="replace")

    def detokenize(self, ids: Iterable[int], special: bool = False) -> str:
        self._check_open()
        return b"".join(self._piece(int(t), special) for t in ids).decode("utf-8", errors="replace")

    def token_embeddings(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Input embeddings of ``ids``, float32 (n, n_embd), as ``batch.embd`` must carry them.

        Read from the GGUF ``token_embd.weight`` rows (memory-mapped; only the
        requested rows are dequantized with the ``gguf`` package, the same
        arithmetic as ggml's ``get_rows``) and multiplied by
        :attr:`embedding_scale`.
        """
        self._check_open()
        idx = np.asarray(ids, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self.n_vocab):
            raise ValueError(f"token ids must be in [0, {self.n_vocab}), got range [{idx.min()}, {idx.max()}]")
        table = self._embedding_table()
        from gguf import GGMLQuantizationType
        from gguf.quants import dequantize

        info = self.gguf.tensors["token_embd.weight"]
        rows = dequantize(np.ascontiguousarray(table[idx]), GGMLQuantizationType(info.ggml_type))
        out = np.asarray(rows, dtype=np.float32).reshape(idx.size, self.n_embd)
        return out * np.float32(self.embedding_scale) if self.embedding_scale != 1.0 else out

    def _embedding_table(self) -> np.ndarray:
        if self._embd_table is None:
            info = self.gguf.tensors.get("token_embd.weight")
            if info is None:
                raise ModelFileError(f"{self.path} has no token_embd.weight tensor")
            n_rows = int(np.prod(info.shape[1:]))
            from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

            block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(info.ggml_type)]
            row_bytes = info.shape[0] // block * type_size
            if info.offset + n_rows * row_bytes > self.gguf.file_size:
                raise ModelFileError(f"model file truncated: {self.path} ends inside token_embd.weight")
            self._embd_table = np.memmap(self.path, dtype=np.uint8, mode="r", offset=info.offset, shape=(n_rows, row_bytes))
        return self._embd_table

    # ------------------------------------------------------------------ prompt parts

    def _prefix_tokens(self, prefix: str | Sequence[int] | np.ndarray) -> tuple[int, ...]:
        if isinstance(prefix, str):
            cached = self._prefix_text_cache
            if cached is not None and cached[0] == prefix:
                return cached[1]
            ids = tuple(self.tokenize(prefix, add_bos=self.add_bos, special=True))
            self._prefix_text_cache = (prefix, ids)
            return ids
        return tuple(int(t) for t in self._token_array(prefix))

    def _token_array(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        arr = np.asarray(ids)
        if arr.size == 0:
            return np.zeros(0, dtype=np.int32)
        if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"token ids must be a 1-D integer sequence, got shape {arr.shape} dtype {arr.dtype}")
        if arr.min() < 0 or arr.max() >= self.n_vocab:
            raise ValueError(f"token ids must be in [0, {self.n_vocab})")
        return arr.astype(np.int32)

    def _segments(self, prompt: Prompt) -> list[_Segment]:
        """Normalize a prompt into token / embedding segments (empty ones dropped)."""
        parts: Sequence[Any] = [prompt] if isinstance(prompt, (str, np.ndarray)) else prompt
        if parts and all(isinstance(p, (int, np.integer)) for p in parts):
            raise TypeError("a prompt is a string or a list of parts; wrap bare token ids in a list or pass a numpy int array")
        out: list[_Segment] = []
        for part in parts:
            if isinstance(part, str):
                seg = _Segment("tokens", np.asarray(self.tokenize(part, add_bos=False, special=True), dtype=np.int32))
            elif isinstance(part, np.ndarray) and np.issubdtype(part.dtype, np.floating):
                if part.ndim != 2 or part.shape[1] != self.n_embd:
                    raise ValueError(f"soft tokens must have shape (n, {self.n_embd}), got {part.shape}")
                if not np.isfinite(part).all():
                    raise ValueError("soft tokens contain NaN/inf (they would poison the KV cache)")
                seg = _Segment("embd", np.ascontiguousarray(part, dtype=np.float32))
            elif isinstance(part, (np.ndarray, list, tuple)):
                seg = _Segment("tokens", self._token_array(part))
            else:
                raise TypeError(f"unsupported prompt part of type {type(part).__name__}")
            if len(seg):
                out.append(seg)
        return out

    # ------------------------------------------------------------------ decoding (lock held)

    def _decode(self, kind: str, data: np.ndarray, pos: np.ndarray, seqs: Sequence[tuple[int, ...]], outputs: np.ndarray) -> list[np.ndarray]:
        """Decode rows of one kind in ``n_batch`` chunks; return logits of flagged rows, in order."""
        lib, nb = self._lib, self.config.n_batch
        batch = self._tok_batch if kind == "tokens" else self._emb_batch
        view = self._views[kind]
        pos_v = np.ctypeslib.as_array(batch.pos, shape=(nb,))
        nseq_v = np.ctypeslib.as_array(batch.n_seq_id, shape=(nb,))
        out_v = np.ctypeslib.as_array(batch.logits, shape=(nb,))
        rows: list[np.ndarray] = []
        for start in range(0, len(pos), nb):
            stop = min(len(pos), start + nb)
            m = stop - start
            view[:m] = data[start:stop]
            pos_v[:m] = pos[start:stop]
            out_v[:m] = outputs[start:stop]
            for i in range(m):
                s = seqs[start + i]
                nseq_v[i] = len(s)
                row = batch.seq_id[i]
                for k, sid in enumerate(s):
                    row[k] = sid
            batch.n_tokens = m
            mark = _LOG.mark()
            rc = lib.llama_decode(self._ctx, batch)
            self.stats.decode_calls += 1
            if rc != 0:
                hint = f" (no free KV cells: raise LlamaCppConfig.n_ctx={self.config.n_ctx})" if rc == 1 else ""
                raise LlamaDecodeError(f"llama_decode returned {rc} for {m} {kind} rows{hint}: {'; '.join(_LOG.since(mark)[-2:]) or 'no log message'}")
            if kind == "tokens":
                self.stats.tokens_decoded += m
            else:
                self.stats.embeddings_decoded += m
            for j in np.flatnonzero(outputs[start:stop]):
                ptr = lib.llama_get_logits_ith(self._ctx, int(j))
                rows.append(np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy())
        return rows

    def _ensure_prefix(self, ids: tuple[int, ...]) -> None:
        """Make seq 0 hold exactly ``ids`` and keep the logits after its last token.

        Only the part after the longest common prefix with the cached one is
        evaluated (the last token at least, for its logits).
        """
        if self._prefix_ids == ids:
            return
        lib, mem = self._lib, self._mem
        old = self._prefix_ids or ()
        k = 0
        for a, b in zip(old, ids, strict=False):
            if a != b:
                break
            k += 1
        k = max(0, min(k, len(ids) - 1))
        self._prefix_ids, self._prefix_logits = None, None
        if not lib.llama_memory_seq_rm(mem, self._PREFIX_SEQ, k, -1):
            lib.llama_memory_seq_rm(mem, self._PREFIX_SEQ, -1, -1)
            k = 0
        if ids:
            n = len(ids) - k
            outputs = np.zeros(n, dtype=bool)
            outputs[-1] = True
            try:
                rows = self._decode("tokens", np.asarray(ids[k:], dtype=np.int32), np.arange(k, len(ids), dtype=np.int32), [(self._PREFIX_SEQ,)] * n, outputs)
            except BaseException:
                lib.llama_memory_seq_rm(mem, self._PREFIX_SEQ, -1, -1)
                raise
            self._prefix_logits = rows[-1]
        self._prefix_ids = ids
        self.stats.prefix_evals += 1

    def _run(
        self,
        base: int,
        context: list[_Segment],
        shared: tuple[int, ...],
        branches: Sequence[tuple[int, Sequence[int]]],
        first_logits: np.ndarray | None,
    ) -> tuple[np.ndarray, list[list[np.ndarray]]]:
        """Decode ``context`` at ``base..`` in all ``shared`` seqs, then branch tokens.

        ``branches`` are ``(seq_id, tokens)``: every token is decoded at the
        positions after the context in its own seq and its logits returned.
        The last context segment, if it is text, goes into the same
        ``llama_decode`` batch as the branch tokens (one pass per window).
        Returns (logits after the context, per-branch logits rows).
        """
        ctx_len = sum(len(s) for s in context)
        need = base + ctx_len + max((len(t) for _, t in branches), default=0)
        if need > self.config.n_ctx:
            raise ValueError(f"prompt needs {need} positions but n_ctx={self.config.n_ctx}; raise LlamaCppConfig.n_ctx")
        pos = base
        first = first_logits
        branch_rows: list[np.ndarray] = []
        merge = bool(context) and context[-1].kind == "tokens" and bool(branches)
        for i, seg in enumerate(context):
            last = i == len(context) - 1
            n = len(seg)
            data = seg.data
            positions = np.arange(pos, pos + n, dtype=np.int32)
            seqs: list[tuple[int, ...]] = [shared] * n
            outputs = np.zeros(n, dtype=bool)
            outputs[-1] = last
            if last and merge:
                b_data, b_pos, b_seqs = self._branch_rows(pos + n, branches)
                data = np.concatenate([data, b_data])
                positions = np.concatenate([positions, b_pos])
                seqs = seqs + b_seqs
                outputs = np.concatenate([outputs, np.ones(len(b_pos), dtype=bool)])
            rows = self._decode(seg.kind, data, positions, seqs, outputs)
            if last:
                first, branch_rows = rows[0], rows[1:]
            pos += n
        if branches and not merge:
            b_data, b_pos, b_seqs = self._branch_rows(pos, branches)
            branch_rows = self._decode("tokens", b_data, b_pos, b_seqs, np.ones(len(b_pos), dtype=bool))
        if first is None:
            raise ValueError("the prompt is empty: there is nothing to condition on")
        per_branch: list[list[np.ndarray]] = []
        it = iter(branch_rows)
        for _, toks in branches:
            per_branch.append([next(it) for _ in toks])
        return first, per_branch

    @staticmethod
    def _branch_rows(pos0: int, branches: Sequence[tuple[int, Sequence[int]]]) -> tuple[np.ndarray, np.ndarray, list[tuple[int, ...]]]:
        data: list[int] = []
        positions: list[int] = []
        seqs: list[tuple[int, ...]] = []
        for seq, toks in branches:
            for j, t in enumerate(toks):
                data.append(int(t))
                positions.append(pos0 + j)
                seqs.append((seq,))
        return np.asarray(data, dtype=np.int32), np.asarray(positions, dtype=np.int32), seqs

    # ------------------------------------------------------------------ public inference

    def score_labels(
        self,
        prefix: str | Sequence[int],
        suffix: Prompt,
        labels: Sequence[Label],
        *,
        reuse_prefix: bool = True,
    ) -> LabelScores:
        """Log-probability of each label as the continuation of ``prefix + suffix``.

        ``prefix`` is the static part (kept in the KV cache across calls when
        ``reuse_prefix``; re-evaluated from the first differing token when it
        changes), ``suffix`` the per-window part (text, token ids or soft tokens,
        see :data:`Prompt`). A text label is tokenized on its own (no special
        tokens), so include a leading space if the prompt expects one; a label
        given as token ids is used as is (e.g. an answer + ``</s>`` from the
        model's own tokenizer). With ``reuse_prefix=False`` everything is
        evaluated from position 0 every call (the cached prefix is left
        untouched): same numbers, for benchmarks.
        """
        self._check_open()
        keys: tuple[str | tuple[int, ...], ...] = tuple(
            label if isinstance(label, str) else tuple(int(t) for t in np.asarray(label).reshape(-1)) for label in labels
        )
        labels = keys
        if not labels:
            raise ValueError("labels must be a non-empty list")
        label_ids = [self._label_tokens(label) for label in keys]
        multi = [i for i, t in enumerate(label_ids) if len(t) > 1]
        if len(multi) > self.max_branches:
            raise ValueError(f"{len(multi)} multi-token labels but this context branches into at most {self.max_branches}; raise LlamaCppConfig.n_seq_max")
        seq_of = {i: 1 + j for j, i in enumerate(multi)}
        shared = tuple(seq_of.values()) or (1,)
        # a label's last token is never fed: only the logits *before* each token matter
        branches = [(seq_of[i], label_ids[i][:-1]) for i in multi]
        prefix_ids = self._prefix_tokens(prefix)
        context = self._segments(suffix)
        lib, mem = self._lib, self._mem
        with self._lock:
            self._check_open()
            try:
                if reuse_prefix:
                    self._ensure_prefix(prefix_ids)
                    base, first = len(prefix_ids), self._prefix_logits
                    for s in shared:
                        lib.llama_memory_seq_cp(mem, self._PREFIX_SEQ, s, -1, -1)
                else:
                    base, first = 0, None
                    context = ([_Segment("tokens", np.asarray(prefix_ids, dtype=np.int32))] if prefix_ids else []) + context
                first, rows = self._run(base, context, shared, branches, first)
            finally:
                for s in shared:
                    lib.llama_memory_seq_rm(mem, s, -1, -1)
        logprobs = np.empty(len(labels), dtype=np.float64)
        branch_of = {i: k for k, i in enumerate(multi)}
        for i, toks in enumerate(label_ids):
            lp = _log_softmax_at(first, toks[0])
            if i in branch_of:
                for row, nxt in zip(rows[branch_of[i]], toks[1:], strict=True):
                    lp += _log_softmax_at(row, nxt)
            logprobs[i] = lp
        n_tokens = np.asarray([len(t) for t in label_ids], dtype=np.int64)
        return LabelScores(keys, logprobs, n_tokens, _softmax(logprobs))

    def generate(
        self,
        prefix: str | Sequence[int],
        suffix: Prompt,
        max_tokens: int = 48,
        stop: Sequence[str] = ("\n",),
        temperature: float = 0.0,
        *,
        top_p: float = 1.0,
        seed: int | None = None,
        reuse_prefix: bool = True,
    ) -> str:
        """Continue ``prefix + suffix``; greedy unless ``temperature > 0``.

        Stops at an end-of-generation token, at ``max_tokens``, or at the first
        ``stop`` string (which is cut off). Reuses the cached prefix like
        :meth:`score_labels`. Sampling is seeded (``seed`` or the config's), so
        the same call gives the same text.
        """
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        if temperature < 0 or not 0 < top_p <= 1:
            raise ValueError(f"need temperature >= 0 and 0 < top_p <= 1, got {temperature}, {top_p}")
        stops = tuple(s for s in stop if s)
        rng = np.random.default_rng(self.config.seed if seed is None else seed)
        self._check_open()
        prefix_ids = self._prefix_tokens(prefix)
        context = self._segments(suffix)
        lib, mem, g = self._lib, self._mem, self._gen_seq
        out = bytearray()
        with self._gen_lock:
            try:
                with self._lock:
                    self._check_open()
                    if reuse_prefix:
                        self._ensure_prefix(prefix_ids)
                        base, first = len(prefix_ids), self._prefix_logits
                        lib.llama_memory_seq_cp(mem, self._PREFIX_SEQ, g, -1, -1)
                    else:
                        base, first = 0, None
                        context = ([_Segment("tokens", np.asarray(prefix_ids, dtype=np.int32))] if prefix_ids else []) + context
                    logits, _ = self._run(base, context, (g,), [], first)
                pos = base + sum(len(s) for s in context)
                for n in range(1, max_tokens + 1):
                    tok = self._pick(logits, temperature, top_p, rng)
                    if lib.llama_vocab_is_eog(self._vocab, tok):
                        break
                    out += self._piece(tok)
                    if stops:
                        text = out.decode("utf-8", errors="ignore")
                        cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
                        if cut >= 0:
                            return text[:cut]
                    if n == max_tokens or pos >= self.config.n_ctx:
                        break
                    with self._lock:  # per token: scoring may run between two steps
                        self._check_open()
                        (logits,) = self._decode("tokens", np.asarray([tok], dtype=np.int32), np.asarray([pos], dtype=np.int32), [(g,)], np.ones(1, dtype=bool))
                    pos += 1
            finally:
                with self._lock:
                    if not self._closed:
                        lib.llama_memory_seq_rm(mem, g, -1, -1)
        return out.decode("utf-8", errors="replace")

    def _label_tokens(self, label: str | tuple[int, ...]) -> list[int]:
        ids = self.tokenize(label, add_bos=False, special=False) if isinstance(label, str) else [int(t) for t in self._token_array(label)]
        if not ids:
            raise ValueError(f"label {label!r} has no tokens")
        return ids

    @staticmethod
    def _pick(logits: np.ndarray, temperature: float, top_p: float, rng: np.random.Generator) -> int:
        if temperature == 0:
            return int(np.argmax(logits))
        p = _softmax(logits.astype(np.float64) / temperature)
        if top_p < 1:
            order = np.argsort(-p)
            keep = order[: int(np.searchsorted(np.cumsum(p[order]), top_p)) + 1]
            q = np.zeros_like(p)
            q[keep] = p[keep]
            p = q / q.sum()
        return int(rng.choice(p.size, p=p))

    def logits_for_inputs(self, prompt: Prompt, *, all_positions: bool = False) -> np.ndarray:
        """Next-token logits after ``prompt`` evaluated alone from position 0.

        ``prompt`` may mix text, token ids and soft tokens (one ``llama_decode``
        per part, same sequence, consecutive positions). Uses a scratch
        sequence, so the cached prefix is untouched. Returns (n_vocab,) for the
        last position, or (n, n_vocab) for every position with ``all_positions``.
        """
        self._check_open()
        segments = self._segments(prompt)
        if not segments:
            raise ValueError("the prompt is empty")
        total = sum(len(s) for s in segments)
        if total > self.config.n_ctx:
            raise ValueError(f"prompt needs {total} positions but n_ctx={self.config.n_ctx}")
        s = self._scratch_seq
        rows: list[np.ndarray] = []
        with self._lock:
            self._check_open()
            try:
                pos = 0
                for i, seg in enumerate(segments):
                    n = len(seg)
                    outputs = np.full(n, all_positions, dtype=bool)
                    outputs[-1] |= i == len(segments) - 1
                    rows += self._decode(seg.kind, seg.data, np.arange(pos, pos + n, dtype=np.int32), [(s,)] * n, outputs)
                    pos += n
            finally:
                self._lib.llama_memory_seq_rm(self._mem, s, -1, -1)
        return np.stack(rows) if all_positions else rows[-1]

    def logits_for_embeddings(self, embd: np.ndarray, *, all_positions: bool = False) -> np.ndarray:
        """:meth:`logits_for_inputs` for soft tokens only (float (n, n_embd))."""
        return self.logits_for_inputs([np.asarray(embd, dtype=np.float32)], all_positions=all_positions)

    # ------------------------------------------------------------------ cache inspection

    @property
    def cached_prefix_len(self) -> int:
        return len(self._prefix_ids or ())

    def clear_cache(self) -> None:
        """Drop every sequence (the next call re-evaluates its prefix)."""
        with self._lock:
            self._check_open()
            self._lib.llama_memory_clear(self._mem, True)
            self._prefix_ids = self._prefix_logits = None

    def kv_sequences(self) -> dict[int, tuple[int, int]]:
        """``{seq_id: (pos_min, pos_max)}`` of every non-empty sequence (for tests/debugging)."""
        with self._lock:
            self._check_open()
            out = {}
            for s in range(self.config.n_seq_max):
                hi = self._lib.llama_memory_seq_pos_max(self._mem, s)
                if hi >= 0:
                    out[s] = (int(self._lib.llama_memory_seq_pos_min(self._mem, s)), int(hi))
            return out
