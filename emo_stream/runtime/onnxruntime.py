"""ONNX Runtime stage backend, with the execution providers checked.

``onnxruntime`` and ``onnxruntime-gpu`` install the same module; the GPU build
lists CUDA/TensorRT providers even on a machine where they cannot load (no
GPU, missing CUDA libraries) and then runs *silently on CPU*. A robot that was
configured for the GPU but runs a 1 B-parameter ViT on its CPU misses every
deadline, so here:

* the providers asked for that this onnxruntime build does not have at all
  are an error (``allow_cpu_fallback`` turns it into a warning);
* after the session is created, ``session.get_providers()`` (what ONNX Runtime
  actually registered) must contain the first provider asked for; otherwise
  :class:`~emo_stream.runtime.stage.ProviderFallbackError`, unless
  ``allow_cpu_fallback``.

``info.providers_requested`` / ``info.providers_used`` report both either way.
Provider names may be given short: ``cuda``, ``tensorrt``, ``cpu``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emo_stream.errors import ModelFileError
from emo_stream.runtime.stage import (
    ProviderFallbackError,
    RuntimeUnavailableError,
    StageInfo,
    StageRuntime,
)

log = logging.getLogger(__name__)

SHORT_NAMES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "dml": "DmlExecutionProvider",
    "rocm": "ROCMExecutionProvider",
}


def _ort() -> Any:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise RuntimeUnavailableError(
            f"the onnxruntime backend needs ONNX Runtime: pip install onnxruntime (CPU) or onnxruntime-gpu, not both ({exc})"
        ) from None
    return ort


def normalize_providers(providers: Sequence[str] | str | None) -> list[str]:
    """``["cuda", "cpu"]`` / ``"cuda,cpu"`` -> full ONNX Runtime provider names (default: CPU)."""
    if providers is None:
        return ["CPUExecutionProvider"]
    items = providers.split(",") if isinstance(providers, str) else list(providers)
    out = []
    for p in items:
        p = str(p).strip()
        if not p:
            continue
        full = SHORT_NAMES.get(p.lower(), p)
        if full not in out:
            out.append(full)
    return out or ["CPUExecutionProvider"]


def check_providers(requested: Sequence[str], used: Sequence[str], available: Sequence[str], allow_cpu_fallback: bool, what: str) -> None:
    """Raise :class:`ProviderFallbackError` when the preferred provider is not what runs (see module doc)."""
    missing = [p for p in requested if p not in available]
    preferred = requested[0]
    if preferred not in used:
        msg = f"{what}: asked for {preferred} but ONNX Runtime uses {list(used)} " + (
            f"({preferred} is not in this onnxruntime build: available {list(available)}; install onnxruntime-gpu for CUDA/TensorRT)"
            if preferred in missing
            else "(the provider failed to load: no GPU visible, or CUDA/cuDNN libraries missing)"
        )
        if not allow_cpu_fallback:
            raise ProviderFallbackError(msg + "; set allow_cpu_fallback to run anyway")
        log.warning("%s; continuing because allow_cpu_fallback is set", msg)


def _reason(exc: BaseException) -> str:
    """ONNX Runtime's reason on one short line (its messages carry the path and a '[ONNXRuntimeError] : 7 :' prefix)."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    # "[ONNXRuntimeError] : 7 : INVALID_PROTOBUF : Load model from /x.onnx failed:Protobuf parsing failed."
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : ", "", text)
    text = re.sub(r"Load model from .* failed: ?", "", text)
    return text if len(text) <= 200 else text[:197] + "..."


def open_session(
    model: str | Path | bytes,
    *,
    what: str,
    sess_options: Any = None,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    source: str | Path | None = None,
    fix: str = "",
    **kwargs: Any,
) -> Any:
    """An ``ort.InferenceSession`` for ``model``, or one :class:`ModelFileError` line naming the bad file.

    The one place the project opens an ONNX model: a truncated or foreign file
    (a killed download, a full disk while a cache was written) makes ONNX
    Runtime raise its own exception types (``InvalidProtobuf``, ``Fail``) whose
    text is a multi-line C++ message, which reached the user as a traceback.
    Here it becomes ``"<what> <file> cannot be loaded by ONNX Runtime
    (<reason>): truncated or corrupt?; <fix>"``.

    Args:
        model: a path, or the serialized model (then ``source`` names where the bytes came from).
        what: the model in words ("silero VAD ONNX"), first in the message.
        sess_options / providers / kwargs: passed to ``ort.InferenceSession``.
        source: the file to name when ``model`` is bytes (default: ``model`` itself).
        fix: how to get the file again (``reinstall: pip install ... --force-reinstall``).
    """
    ort = _ort()
    name = source if source is not None else (model if not isinstance(model, bytes) else "(in-memory model)")
    arg = model if isinstance(model, bytes) else str(model)
    try:
        return ort.InferenceSession(arg, sess_options=sess_options, providers=list(providers), **kwargs)
    except Exception as exc:
        tail = f"; {fix}" if fix else ""
        raise ModelFileError(f"{what} {name} cannot be loaded by ONNX Runtime ({_reason(exc)}): truncated or corrupt?{tail}") from None


class OrtStageRuntime(StageRuntime):
    """One ONNX file on ONNX Runtime (see module docstring)."""

    def __init__(
        self,
        path: str | Path,
        *,
        stage: str = "",
        precision: str = "fp32",
        providers: Sequence[str] | str | None = None,
        allow_cpu_fallback: bool = False,
        threads: int | None = None,
        provider_options: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        ort = _ort()
        path = Path(path)
        if not path.is_file():
            raise ModelFileError(f"ONNX file {path} not found")
        requested = normalize_providers(providers)
        available = list(ort.get_available_providers())
        usable = [p for p in requested if p in available]
        what = f"stage {stage or path.stem}"
        if not usable:
            check_providers(requested, [], available, allow_cpu_fallback, what)
            usable = ["CPUExecutionProvider"]
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        # No busy-waiting worker threads between calls: a robot runs several stages and other
        # processes on the same cores, and spinning pools starve them (and each other).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
        if threads:
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        kwargs: dict[str, Any] = {}
        if provider_options is not None:
            by_name = dict(zip(requested, provider_options))
            kwargs["provider_options"] = [dict(by_name.get(p, {})) for p in usable]
        self.session = open_session(path, what=f"{what} ONNX", sess_options=opts, providers=usable, **kwargs)
        used = list(self.session.get_providers())
        check_providers(requested, used, available, allow_cpu_fallback, what)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self._input_types = {i.name: i.type for i in self.session.get_inputs()}
        self.info = StageInfo(
            stage or path.stem,
            "onnxruntime",
            precision,
            str(path),
            requested,
            used,
            device="cuda" if any(p in used for p in ("CUDAExecutionProvider", "TensorrtExecutionProvider")) else "cpu",
        )

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._check_feeds(feeds)
        inputs = {}
        for n in self.input_names:
            a = np.asarray(feeds[n])
            want = self._input_types[n]
            if want == "tensor(float)" and a.dtype != np.float32:
                a = a.astype(np.float32)
            elif want == "tensor(bool)" and a.dtype != np.bool_:
                a = a.astype(bool)
            inputs[n] = np.ascontiguousarray(a)
        outs = self.session.run(self.output_names, inputs)
        return dict(zip(self.output_names, outs))

    def close(self) -> None:
        self.session = None
