"""GGUF files without loading a model: the header/metadata/tensor index reader
(truncation checks before llama.cpp sees the file) and the packaged SmolLM2's
GGUF type (requantizing to the type label scoring runs fastest in).

Split from :mod:`emo_stream.runtime.llama_cpp` (issue 15).
"""

from __future__ import annotations

import ctypes
import mmap
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emo_stream.assets import GGUF_MAGIC, SMOLLM2_GGUF, check_model_file, model_cache_dir
from emo_stream.errors import ConfigError, ModelFileError
from emo_stream.runtime.llama_cpp_bindings import _LOG, _bindings

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
