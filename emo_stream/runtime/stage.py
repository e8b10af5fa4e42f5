"""One interface for a graph stage (an encoder, the projector or the fusion), whatever runs it.

A :class:`StageRuntime` takes a dict of numpy arrays named like the stage's ONNX
inputs and returns a dict named like its outputs. Backends:

* :class:`TorchStageRuntime` (this module) -- the stage's ``nn.Module``; the
  reference, and what a developer box without exported files uses;
* :class:`emo_stream.runtime.onnxruntime.OrtStageRuntime` -- an ONNX file on
  ONNX Runtime with the execution providers asked for, and a check that they
  are the ones actually used;
* :class:`emo_stream.runtime.tensorrt.TensorRTStageRuntime` -- a serialized
  TensorRT engine (``.plan``) with dynamic shapes.

:func:`open_stage` picks one from an export manifest and a backend name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from emo_stream.errors import ConfigError, EmoStreamError

BACKENDS = ("torch", "onnxruntime", "tensorrt")


class RuntimeUnavailableError(EmoStreamError):
    """A backend's package or device is missing (TensorRT not installed, no CUDA ...)."""


class ProviderFallbackError(EmoStreamError):
    """ONNX Runtime would run on other execution providers than the ones asked for."""


@dataclass
class StageInfo:
    """What a stage runtime is and what it really runs on (for logs, benchmarks and states)."""

    stage: str
    backend: str
    precision: str = "fp32"
    file: str | None = None
    providers_requested: list[str] = field(default_factory=list)
    providers_used: list[str] = field(default_factory=list)
    device: str = "cpu"

    def describe(self) -> str:
        where = f" providers {self.providers_used}" if self.providers_used else f" on {self.device}"
        return f"{self.stage}: {self.backend} {self.precision}{where}"


class StageRuntime(ABC):
    """Run one stage: ``run({input_name: array}) -> {output_name: array}``."""

    info: StageInfo
    input_names: list[str]
    output_names: list[str]

    @abstractmethod
    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run on a batch; arrays are numpy (float32 / bool as the manifest says)."""

    def close(self) -> None:
        """Release sessions / device memory."""

    def __enter__(self):  # returns self
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_feeds(self, feeds: Mapping[str, np.ndarray]) -> None:
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise ValueError(f"stage {self.info.stage}: missing input(s) {missing}")


class TorchStageRuntime(StageRuntime):
    """A stage's ``nn.Module`` (see :mod:`emo_stream.export.stages`) run by torch."""

    def __init__(self, stage: str, module: Any, input_names: Sequence[str], output_names: Sequence[str], device: str = "cpu") -> None:
        import torch

        self.module = module.to(device).eval()
        self.device = torch.device(device)
        self.input_names, self.output_names = list(input_names), list(output_names)
        self.info = StageInfo(stage, "torch", str(next(module.parameters()).dtype).replace("torch.", ""), device=str(device))

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        self._check_feeds(feeds)
        args = [torch.from_numpy(np.ascontiguousarray(feeds[n])).to(self.device) for n in self.input_names]
        with torch.inference_mode():
            outs = self.module(*args)
        if isinstance(outs, torch.Tensor):
            outs = (outs,)
        return {n: o.detach().float().cpu().numpy() if o.is_floating_point() else o.cpu().numpy() for n, o in zip(self.output_names, outs)}


def check_backend(name: str) -> str:
    if name not in BACKENDS:
        raise ConfigError(f"stage backend must be one of {', '.join(BACKENDS)}, got {name!r}")
    return name
