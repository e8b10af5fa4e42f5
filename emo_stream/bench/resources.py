"""CPU, memory and GPU usage of this process while a benchmark runs.

A sampling thread reads psutil every ``interval_s``; CPU % is process CPU time
over wall time (100 % = one core busy), peak RSS is the maximum sampled
resident set during the block (the kernel's ru_maxrss is a whole-process
high-water mark, useless for comparing phases of one run).
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class ResourceUsage:
    wall_s: float
    cpu_percent: float  # process CPU time / wall time, 100 = one core
    peak_rss_mib: float
    gpu_peak_mib: float | None  # torch CUDA allocator peak, None without a GPU


class ResourceMonitor:
    """Context manager: ``with ResourceMonitor() as mon: ...; mon.usage``."""

    def __init__(self, interval_s: float = 0.2) -> None:
        import psutil

        self._proc = psutil.Process()
        self._interval = interval_s
        self._stop = threading.Event()
        self._peak_rss = 0
        self.usage: ResourceUsage | None = None

    def __enter__(self) -> "ResourceMonitor":
        self._t0 = time.monotonic()
        self._cpu0 = self._proc.cpu_times()
        self._peak_rss = self._proc.memory_info().rss
        gpu = _torch_cuda()
        if gpu is not None:
            gpu.reset_peak_memory_stats()
        self._thread = threading.Thread(target=self._sample, name="bench-resources", daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self._interval):
            self._peak_rss = max(self._peak_rss, self._proc.memory_info().rss)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        wall = time.monotonic() - self._t0
        cpu1 = self._proc.cpu_times()
        cpu = (cpu1.user - self._cpu0.user) + (cpu1.system - self._cpu0.system)
        gpu = _torch_cuda()
        self.usage = ResourceUsage(
            wall_s=wall,
            cpu_percent=100.0 * cpu / wall if wall > 0 else 0.0,
            peak_rss_mib=max(self._peak_rss, self._proc.memory_info().rss) / 2**20,
            gpu_peak_mib=gpu.max_memory_allocated() / 2**20 if gpu is not None else None,
        )


def _torch_cuda():
    """torch.cuda when torch is already imported and a GPU exists (never imports torch itself)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    return torch.cuda
