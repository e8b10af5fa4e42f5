"""TensorRT stage backend: a serialized engine (``.plan``) with dynamic shapes, run on a CUDA stream.

TensorRT is an optional extra (``pip install emo-stream[tensorrt]``: NVIDIA's
``tensorrt`` wheels, or the lean runtime ``tensorrt-lean`` for engines built
version-compatible) and is imported only when a TensorRT stage is opened;
without it :class:`~emo_stream.runtime.stage.RuntimeUnavailableError` says so
in one line. Device buffers come from torch's CUDA allocator (torch is a
dependency of emo_stream anyway), so no pycuda / cuda-python is needed.

TensorRT 10 API: ``set_input_shape`` per call, ``get_tensor_shape`` for the
outputs, ``set_tensor_address`` and ``execute_async_v3`` on torch's current
stream. A batch larger than the optimisation profile's maximum is split along
axis 0 (every stage's first axis is its batch / face-crop axis) and the
outputs concatenated.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from emo_stream.errors import ModelFileError
from emo_stream.runtime.stage import RuntimeUnavailableError, StageInfo, StageRuntime

TENSORRT_HINT = (
    "TensorRT is not installed: install NVIDIA TensorRT 10 for your CUDA (pip install emo-stream[tensorrt], i.e. "
    "tensorrt>=10 from pypi.nvidia.com, or JetPack's python3-libnvinfer on a Jetson)"
)


def import_tensorrt(builder: bool = False) -> Any:
    """``tensorrt`` (or, for running only, ``tensorrt_lean``); a one-line error when neither is there."""
    try:
        import tensorrt as trt

        return trt
    except ImportError as exc:
        if not builder:
            try:
                import tensorrt_lean as trt

                return trt
            except ImportError:
                pass
        raise RuntimeUnavailableError(f"{TENSORRT_HINT} ({exc})") from None


def _torch_cuda() -> Any:
    try:
        import torch
    except ImportError as exc:  # pragma: no cover
        raise RuntimeUnavailableError(f"the TensorRT backend needs torch with CUDA for device buffers ({exc})") from None
    if not torch.cuda.is_available():
        raise RuntimeUnavailableError("the TensorRT backend needs a CUDA GPU visible to torch (torch.cuda.is_available() is False)")
    return torch


_NP_TO_TORCH = {
    np.dtype(np.float32): "float32",
    np.dtype(np.float16): "float16",
    np.dtype(np.int32): "int32",
    np.dtype(np.int64): "int64",
    np.dtype(np.bool_): "bool",
    np.dtype(np.int8): "int8",
    np.dtype(np.uint8): "uint8",
}


class TensorRTStageRuntime(StageRuntime):
    """One TensorRT engine (see module docstring)."""

    def __init__(self, path: str | Path, *, stage: str = "", precision: str = "fp16", device: int = 0) -> None:
        trt = import_tensorrt()
        torch = _torch_cuda()
        path = Path(path)
        if not path.is_file():
            raise ModelFileError(f"TensorRT engine {path} not found; build it with `emo-stream export tensorrt`")
        self._trt, self._torch = trt, torch
        self.device = torch.device("cuda", device)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        with torch.cuda.device(self.device):
            self.engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
            if self.engine is None:
                raise ModelFileError(f"TensorRT cannot deserialize {path} (built by another TensorRT version or for another GPU? rebuild it here)")
            self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        mode_in = trt.TensorIOMode.INPUT
        self.input_names = [n for n in names if self.engine.get_tensor_mode(n) == mode_in]
        self.output_names = [n for n in names if self.engine.get_tensor_mode(n) != mode_in]
        self._dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}
        self._profile = {n: tuple(tuple(int(v) for v in s) for s in self.engine.get_tensor_profile_shape(n, 0)) for n in self.input_names}
        self.info = StageInfo(stage or path.stem, "tensorrt", precision, str(path), device=f"cuda:{device} ({torch.cuda.get_device_name(self.device)})")

    @property
    def max_batch(self) -> int:
        return min(p[2][0] for p in self._profile.values())

    def _check_shapes(self, feeds: Mapping[str, np.ndarray]) -> None:
        for n in self.input_names:
            lo, _, hi = self._profile[n]
            shape = feeds[n].shape
            if len(shape) != len(lo) or any(not (a <= s <= b) for a, s, b in zip(lo[1:], shape[1:], hi[1:])):
                raise ValueError(f"stage {self.info.stage}: input {n} has shape {shape}, outside the engine's profile {lo}..{hi}; rebuild with a wider profile")

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._check_feeds(feeds)
        arrays = {n: np.ascontiguousarray(np.asarray(feeds[n]).astype(self._dtypes[n], copy=False)) for n in self.input_names}
        self._check_shapes(arrays)
        b = arrays[self.input_names[0]].shape[0]
        step = max(1, self.max_batch)
        if b <= step:
            return self._run_once(arrays)
        parts = [self._run_once({n: a[i : i + step] for n, a in arrays.items()}) for i in range(0, b, step)]
        return {n: np.concatenate([p[n] for p in parts], axis=0) for n in self.output_names}

    def _run_once(self, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        keep = []
        with torch.cuda.device(self.device):
            stream = torch.cuda.current_stream(self.device)
            for n in self.input_names:
                t = torch.from_numpy(arrays[n]).to(self.device, non_blocking=False)
                keep.append(t)
                if not self.context.set_input_shape(n, tuple(t.shape)):
                    raise ValueError(f"TensorRT rejected shape {tuple(t.shape)} for input {n}")
                self.context.set_tensor_address(n, t.data_ptr())
            outs = {}
            for n in self.output_names:
                shape = tuple(self.context.get_tensor_shape(n))
                t = torch.empty(shape, dtype=getattr(torch, _NP_TO_TORCH[self._dtypes[n]]), device=self.device)
                outs[n] = t
                self.context.set_tensor_address(n, t.data_ptr())
            if not self.context.execute_async_v3(stream.cuda_stream):
                raise RuntimeError(f"TensorRT execution failed for stage {self.info.stage}")
            stream.synchronize()
            return {n: t.cpu().numpy() for n, t in outs.items()}

    def close(self) -> None:
        self.context = None
        self.engine = None
