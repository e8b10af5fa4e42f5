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
import mmap
import os
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from emo_stream.assets import GGUF_MAGIC, SMOLLM2_GGUF, check_model_file, model_cache_dir
from emo_stream.errors import ConfigError, ModelFileError

#: One piece of a prompt: text (tokenized with special tokens parsed), token ids
#: (1-D integer array or list of ints) or soft tokens (float array (n, n_embd)).
PromptPart = str | Sequence[int] | np.ndarray
#: A prompt: a string, or a list of parts decoded in order at consecutive positions.
Prompt = str | Sequence[PromptPart]
#: A candidate answer: text (tokenized without special tokens) or token ids used as is.
Label = str | Sequence[int] | np.ndarray

_PIP_HINT = "run scripts/setup.sh (builds llama-cpp-python==0.3.36 for this CPU; see `scripts/setup.sh --llama-cmake-args`)"


class LlamaDecodeError(RuntimeError):
    """``llama_decode`` failed (KV cache full, invalid batch, abort)."""


def _bindings() -> ModuleType:
    """Import the low-level bindings lazily: they are an optional compiled extra."""
    try:
        import llama_cpp.llama_cpp as lib
    except ImportError as exc:  # pragma: no cover - depends on the install
        from emo_stream.errors import MissingDependencyError  # an ImportError too: callers' fallbacks still work

        raise MissingDependencyError(f"the llama.cpp runtime needs llama-cpp-python: {_PIP_HINT} ({exc})") from exc
    return lib


# --------------------------------------------------------------------------- logging


class _LogBridge:
    """The one process-wide llama.cpp/ggml log sink.

    llama.cpp has a single global log callback. Ours writes to stderr only while
    some runtime asked for ``verbose``, and always keeps recent warnings/errors
    (numbered) so a failed load can quote them. It must never raise into C.
    """

    # enum ggml_log_level of the vendored ggml (NOT the older numbering that
    # llama_cpp/_logger.py still assumes: there 1 = INFO, 4 = DEBUG)
    _DEBUG, _INFO, _WARN, _ERROR, _CONT = 1, 2, 3, 4, 5

    def __init__(self) -> None:
        self._lock = threading.RLock()  # llama.cpp may log from inside install()
        self._verbose = 0
        self._count = 0
        self._last_level = 0
        self._recent: deque[tuple[int, str]] = deque(maxlen=32)
        self._callback: Any = None
        self._backend_ready = False

    def install(self, lib: ModuleType) -> None:
        with self._lock:
            if self._callback is None:
                self._callback = lib.llama_log_callback(self._on_log)  # kept alive here
                lib.llama_log_set(self._callback, ctypes.c_void_p(0))
            if not self._backend_ready:
                lib.llama_backend_init()
                self._backend_ready = True

    def _on_log(self, level: int, text: bytes | None, _user: Any) -> None:
        try:
            msg = text.decode("utf-8", errors="replace") if text else ""
            if level != self._CONT:
                self._last_level = level
            if self._verbose > 0 and self._last_level != self._DEBUG:  # debug: ~2000 lines per load
                sys.stderr.write(msg)
            if self._last_level in (self._WARN, self._ERROR) and msg.strip():
                with self._lock:
                    self._count += 1
                    self._recent.append((self._count, msg.strip()))
        except Exception:  # noqa: S110 - a ctypes callback must never raise (ctypes would print it mid-load)
            pass

    def mark(self) -> int:
        with self._lock:
            return self._count

    def since(self, mark: int) -> list[str]:
        """Warnings/errors logged after :meth:`mark` returned ``mark``."""
        with self._lock:
            return [m for n, m in self._recent if n > mark]

    def set_verbose(self, on: bool) -> None:
        with self._lock:
            self._verbose += 1 if on else -1


_LOG = _LogBridge()


# --------------------------------------------------------------------------- GGUF file


@dataclass(frozen=True)
class GgufTensor:
    """Where a tensor's data is. ``shape`` is in ggml order: ``shape[0]`` is the row length."""

    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int  # absolute file offset


@dataclass(frozen=True)
class GgufIndex:
    """Header of a GGUF file: scalar/string metadata, array lengths, tensor locations."""

    path: Path
    version: int
    metadata: dict[str, Any]
    array_lengths: dict[str, int]
    tensors: dict[str, GgufTensor]
    data_offset: int
    file_size: int


class _Truncated(Exception):
    pass


_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
_SMALL_ARRAY = 64  # arrays up to this length are kept in metadata (e.g. general.languages)


class _Cursor:
    def __init__(self, buf: Any, size: int) -> None:
        self.buf, self.size, self.off = buf, size, 0

    def _need(self, n: int) -> None:
        if n < 0 or self.off + n > self.size:
            raise _Truncated

    def scalar(self, fmt: str) -> Any:
        n = struct.calcsize(fmt)
        self._need(n)
        (value,) = struct.unpack_from(fmt, self.buf, self.off)
        self.off += n
        return value

    def string(self) -> str:
        n = self.scalar("<Q")
        self._need(n)
        s = bytes(self.buf[self.off : self.off + n]).decode("utf-8", errors="replace")
        self.off += n
        return s

    def skip_string(self) -> None:
        n = self.scalar("<Q")
        self._need(n)
        self.off += n

    def value(self, vtype: int, key: str, lengths: dict[str, int]) -> Any:
        if vtype in _SCALARS:
            return self.scalar(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            etype, count = self.scalar("<I"), self.scalar("<Q")
            lengths[key] = count
            if count <= _SMALL_ARRAY:
                return tuple(self.value(etype, key, {}) for _ in range(count))
            if etype in _SCALARS:
                nbytes = count * struct.calcsize(_SCALARS[etype])
                self._need(nbytes)
                self.off += nbytes
            elif etype == _STRING:
                for _ in range(count):  # ~100k strings for a BPE vocab+merges: ~40 ms
                    self.skip_string()
            else:
                raise ValueError(f"unsupported GGUF array element type {etype} in {key!r}")
            return None
        raise ValueError(f"unknown GGUF value type {vtype} for key {key!r}")


def read_gguf_index(path: str | Path) -> GgufIndex:
    """Parse a GGUF header without loading weights; raise :class:`ModelFileError` if it is bad.

    Why not ``gguf.GGUFReader``: it builds numpy views of every array element
    and takes ~3.5 s on the 98 MB SmolLM2 file on 2 cores; this reads only what
    validation and :meth:`LlamaCppRuntime.token_embeddings` need (~50 ms).
    Tensor extents are checked against the file size as far as possible without
    a quantization table (every tensor must *start* inside the file); llama.cpp
    checks the ends at load and its message is relayed.
    """
    path = Path(path)
    check_model_file(path)
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(len(GGUF_MAGIC))
    if head != GGUF_MAGIC:
        raise ModelFileError(f"not a GGUF model file: {path} starts with {head!r}, expected {GGUF_MAGIC!r}")
    lengths: dict[str, int] = {}
    try:
        with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            cur = _Cursor(buf, size)
            cur.off = len(GGUF_MAGIC)
            version = cur.scalar("<I")
            if version not in (2, 3):
                raise ModelFileError(f"unsupported GGUF version {version} in {path} (llama.cpp reads 2 and 3)")
            n_tensors, n_kv = cur.scalar("<Q"), cur.scalar("<Q")
            if n_tensors > size // 16 or n_kv > size // 16:
                raise ModelFileError(f"model file corrupt: {path} claims {n_tensors} tensors and {n_kv} metadata keys")
            meta: dict[str, Any] = {}
            for _ in range(n_kv):
                key = cur.string()
                value = cur.value(cur.scalar("<I"), key, lengths)
                if value is not None:
                    meta[key] = value
            infos = []
            for _ in range(n_tensors):
                name = cur.string()
                n_dims = cur.scalar("<I")
                if n_dims > 8:
                    raise ModelFileError(f"model file corrupt: {path} tensor {name!r} has {n_dims} dimensions")
                shape = tuple(cur.scalar("<Q") for _ in range(n_dims))
                infos.append((name, shape, cur.scalar("<I"), cur.scalar("<Q")))
            align = int(meta.get("general.alignment", 32))
            data_offset = (cur.off + align - 1) // align * align
    except _Truncated:
        raise ModelFileError(f"model file truncated: {path} ({size} bytes) ends inside its GGUF header; reinstall or re-copy it") from None
    except ValueError as exc:
        raise ModelFileError(f"model file corrupt: {path}: {exc}") from None
    tensors = {n: GgufTensor(n, s, t, data_offset + o) for n, s, t, o in infos}
    for t in tensors.values():
        if t.offset >= size:
            raise ModelFileError(f"model file truncated: {path} is {size} bytes but tensor {t.name!r} starts at byte {t.offset}")
    return GgufIndex(path, version, meta, lengths, tensors, data_offset, size)


def cpu_features() -> dict[str, bool]:
    """Instruction sets the installed llama.cpp CPU backend was compiled with (``llama_print_system_info``).

    Why: the wheel is built per CPU (``scripts/setup.sh``); benchmarks and bug
    reports must say which kernels ran (``{"AVX2": True, "AVX512": True, ...}``).
    """
    text = _bindings().llama_print_system_info().decode("utf-8", "replace")
    out: dict[str, bool] = {}
    for part in text.replace("CPU :", "|").split("|"):
        name, sep, value = part.partition("=")
        if sep and name.strip():
            out[name.strip()] = value.strip() == "1"
    return out


# --------------------------------------------------------------------------- GGUF type of the packaged model

#: GGUF types the packaged SmolLM2 (shipped as Q4_1) can be requantized to for scoring.
GGUF_TYPES = ("Q4_0", "Q4_1", "Q8_0", "F16")

#: The type label scoring loads the packaged SmolLM2 in (:class:`LlamaCppConfig`'s
#: ``default_model_type``). Chosen by measured prefill speed, because scoring a
#: window is one prefill of the changed clue tokens: ggml has no fast (repacked,
#: integer-dot) prefill kernel for Q4_1, while Q4_0 is repacked to an 8x8
#: interleaved layout at load and its GEMM uses AVX2 / AVX-512 VNNI.
#: Measured with ``python -m emo_stream.bench.gguf_types`` (the 132-token clue
#: prompt, nothing cached, median of 5; 2-core Xeon (Sapphire Rapids class),
#: load average 0.2-1.2 from other jobs; 2026-12-06):
#:
#: ========  ===========================  ===========================
#: type      portable AVX2 build, 1 / 2 t  AVX-512 build, 1 / 2 threads
#: ========  ===========================  ===========================
#: Q4_1      744 / 460 ms (as shipped)    732 / 395 ms
#: Q4_0      386 / 223 ms                 304 / 158 ms  <- chosen
#: Q8_0      486 / 250 ms                 406 / 214 ms
#: F16       460 / 246 ms                 470 / 255 ms
#: ========  ===========================  ===========================
#:
#: Q4_0 is fastest on both builds and thread counts (and the smallest file);
#: scores stay bit-identical across batch cuts and prefix reuse (the runtime
#: tests run on it). Requantizing from Q4_1 loses a little precision (Q4_1
#: -> F32 -> Q4_0); the default engine's labels come from this file.
SCORING_GGUF_TYPE = "Q4_0"


def quantize_gguf(src: str | Path, dst: str | Path, gguf_type: str, threads: int = 0, *, allow_requantize: bool = False) -> None:
    """``llama_model_quantize(src -> dst)`` to ``gguf_type`` (``Q4_0``, ``Q8_0``, ``Q4_K_M``, ``F16`` ...).

    ``dst`` is written directly: callers pass a temporary path and rename it.
    ``allow_requantize`` lets llama.cpp read an already quantized source (its
    weights are dequantized first, so precision never comes back).
    """
    lib = _bindings()
    _LOG.install(lib)
    ftype = getattr(lib, f"LLAMA_FTYPE_MOSTLY_{gguf_type}", None)
    if ftype is None:
        raise ConfigError(f"llama_cpp: unknown GGUF type {gguf_type!r}")
    params = lib.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = int(threads)
    params.allow_requantize = bool(allow_requantize)
    mark = _LOG.mark()
    rc = lib.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0:
        raise ModelFileError(f"llama_model_quantize({src} -> {gguf_type}) failed with {rc}: {'; '.join(_LOG.since(mark)[-3:]) or 'no log message'}")


def gguf_file_type(path: str | Path) -> str | None:
    """The GGUF's declared type (``general.file_type``) as a name such as ``Q4_1``, or None."""
    value = read_gguf_index(path).metadata.get("general.file_type")
    lib = _bindings()
    for name in dir(lib):
        if name.startswith("LLAMA_FTYPE_MOSTLY_") and getattr(lib, name) == value:
            return name[len("LLAMA_FTYPE_MOSTLY_") :]
    return None


def requantized_gguf(src: str | Path, gguf_type: str, cache_dir: str | Path | None = None) -> Path:
    """``src`` as ``gguf_type``: ``src`` itself when it already is, else a cached requantized copy.

    The copy lives in :func:`~emo_stream.assets.model_cache_dir` under a name
    keyed by the source (path, size, mtime) and the llama.cpp version, so a
    reinstalled model or another llama.cpp build makes a new one; it is
    written to a temporary name, fsynced and renamed (:func:`~emo_stream.durable.atomic_path`),
    so a crash or a concurrent process never leaves a half file under the final name.
    Requantizing SmolLM2-135M takes ~1-3 s, once.
    """
    import hashlib

    from emo_stream.durable import atomic_path

    if gguf_type not in GGUF_TYPES:
        raise ConfigError(f"llama_cpp: GGUF type must be one of {', '.join(GGUF_TYPES)}, got {gguf_type!r}")
    src = check_model_file(Path(src).expanduser().resolve())
    if gguf_file_type(src) == gguf_type:
        return src
    st = src.stat()
    version = getattr(sys.modules.get("llama_cpp"), "__version__", "?")
    key = hashlib.sha256(f"{src}|{st.st_size}|{st.st_mtime_ns}|{gguf_type}|{version}".encode()).hexdigest()[:16]
    dst = Path(cache_dir).expanduser() if cache_dir is not None else model_cache_dir()
    dst = dst / f"{src.stem}.as-{gguf_type}-{key}.gguf"
    if dst.is_file():
        try:
            read_gguf_index(dst)
            return dst
        except ModelFileError:
            pass  # damaged by something outside us: rebuild it
    with atomic_path(dst) as tmp:
        quantize_gguf(src, tmp, gguf_type, allow_requantize=True)
    return dst


def resolve_model_path(model_path: str | Path | None, default_model_type: str | None = None) -> Path:
    """The GGUF to load: ``model_path`` as is, or the packaged SmolLM2 in ``default_model_type`` (checked either way)."""
    if model_path is None:
        src = SMOLLM2_GGUF.path()
        return requantized_gguf(src, default_model_type) if default_model_type else src
    return check_model_file(Path(model_path).expanduser())


# --------------------------------------------------------------------------- chat template

#: ChatML, the format SmolLM2 (and Qwen) were tuned on; used when the GGUF has no
#: template or the template cannot be rendered/split.
CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
_SPLIT = "\u2063emo-stream-split\u2063"


@dataclass(frozen=True)
class ChatPrompt:
    """A chat prompt cut where the per-window part starts.

    ``prefix`` (system turn + start of the user turn + fixed instructions) is the
    same for every window and is what :class:`LlamaCppRuntime` caches; ``suffix``
    (clues, end of the user turn, assistant header, answer lead) changes.
    """

    prefix: str
    suffix: str

    @property
    def text(self) -> str:
        return self.prefix + self.suffix


def _render_chatml(messages: Sequence[dict[str, str]], add_generation_prompt: bool) -> str:
    out = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return out + ("<|im_start|>assistant\n" if add_generation_prompt else "")


def sanitize_clue_text(text: str) -> str:
    """Break special-token markers (``<|im_end|>`` ...) in untrusted text.

    Prompts are tokenized with special tokens parsed (the template needs them),
    so a transcript containing ``<|im_end|>`` would otherwise end the user turn.
    """
    return text.replace("<|", "< |").replace("|>", "| >")


class ChatTemplate:
    """Render chat prompts with the model's own template, static part first.

    The template comes from the GGUF ``tokenizer.chat_template`` (a Jinja
    template, rendered in a sandbox like ``transformers`` does). If there is
    none, jinja2 is missing, or the template does not reproduce the user
    content verbatim (so the static/dynamic cut cannot be found), ChatML is
    used: that is what SmolLM2 was tuned on.
    """

    def __init__(self, template: str | None = None, *, bos_token: str = "", eos_token: str = "") -> None:
        self.template = template
        self.bos_token, self.eos_token = bos_token, eos_token
        self._compiled: Any = None
        self.source = "chatml-default"
        if template:
            try:
                from jinja2.sandbox import ImmutableSandboxedEnvironment

                env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
                env.globals["raise_exception"] = _raise_template_error
                self._compiled = env.from_string(template)
                self.source = "gguf"
            except Exception:
                self._compiled = None

    def render(self, messages: Sequence[dict[str, str]], *, add_generation_prompt: bool = True) -> str:
        if self._compiled is not None:
            try:
                return self._compiled.render(
                    messages=list(messages),
                    add_generation_prompt=add_generation_prompt,
                    bos_token=self.bos_token,
                    eos_token=self.eos_token,
                )
            except Exception:  # noqa: S110 - a template jinja cannot render falls back to ChatML below
                pass
        return _render_chatml(messages, add_generation_prompt)

    def split(self, system: str, instruction: str, clues: str, *, answer_prefix: str = "") -> ChatPrompt:
        """Prompt for one window: ``system`` + ``instruction`` static, ``clues`` per window.

        The user turn is ``instruction`` + newline + ``clues``; ``answer_prefix``
        is appended after the assistant header (e.g. ``"Emotion:"``) to steer
        the continuation that labels are scored as. ``clues`` is passed through
        :func:`sanitize_clue_text`. The cut is right after a newline, where the
        BPE pre-tokenizer splits anyway, so prefix and suffix tokenized apart
        give the same tokens as the model would see in one piece.
        """
        static = instruction if not instruction or instruction.endswith("\n") else instruction + "\n"
        messages = [{"role": "system", "content": system}, {"role": "user", "content": static + _SPLIT}]
        text = self.render(messages, add_generation_prompt=True)
        if text.count(_SPLIT) != 1:
            text = _render_chatml(messages, True)
        head, tail = text.split(_SPLIT)
        return ChatPrompt(head, sanitize_clue_text(clues) + tail + answer_prefix)


def _raise_template_error(message: str) -> None:
    raise ValueError(message)


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
        keys: tuple[str | tuple[int, ...], ...] = tuple(label if isinstance(label, str) else tuple(int(t) for t in np.asarray(label).reshape(-1)) for label in labels)
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
