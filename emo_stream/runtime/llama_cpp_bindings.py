"""llama.cpp's low-level bindings, imported lazily, and the bridge that routes
llama.cpp's log into Python logging (and keeps its last warnings for error messages).

Split from :mod:`emo_stream.runtime.llama_cpp` (issue 15): every llama.cpp user
(runtime, GGUF quantizer, benchmarks) needs the bindings and the log bridge, not
the runtime.
"""

from __future__ import annotations

import ctypes
import sys
import threading
from collections import deque
from types import ModuleType
from typing import Any

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
