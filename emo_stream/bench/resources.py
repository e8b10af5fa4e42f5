"""CPU, memory and GPU usage of this process while a benchmark runs.

A sampling thread reads psutil every ``interval_s``; CPU % is process CPU time
over wall time (100 % = one core busy), peak RSS is the maximum sampled
resident set during the block (the kernel's ru_maxrss is a whole-process
high-water mark, useless for comparing phases of one run).

CPU per thread: every sample also reads ``/proc/self/task/*/stat`` (user +
system ticks of each kernel thread), so threads that end during the block
still count with their last sample (what they spent in their last
``interval_s`` is lost). Threads are named by their Python thread
name (``threading`` native ids) or, for native threads (OpenMP, ONNX Runtime,
CTranslate2 pools), by the kernel's ``comm``; threads of one name are summed.
This sees what ``time.thread_time()`` inside a stage cannot: the library
thread pools that stage starts.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ResourceUsage:
    wall_s: float
    cpu_percent: float  # process CPU time / wall time, 100 = one core
    peak_rss_mib: float
    gpu_peak_mib: float | None  # torch CUDA allocator peak, None without a GPU
    #: CPU seconds during the block per thread name (see the module doc); empty where /proc is missing.
    thread_cpu_s: dict[str, float] = field(default_factory=dict)


_TICK_S = 1.0 / (os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100)


def thread_cpu_ticks() -> dict[int, tuple[str, int]]:
    """``{tid: (kernel comm, user+system ticks)}`` of this process's threads (empty without /proc)."""
    out: dict[int, tuple[str, int]] = {}
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/stat", "rb") as fh:
                raw = fh.read().decode("utf-8", "replace")
        except OSError:
            continue  # the thread ended meanwhile
        # "tid (comm) state ..." -- comm may contain spaces and parentheses: split at the last ')'.
        comm = raw[raw.find("(") + 1 : raw.rfind(")")]
        fields = raw[raw.rfind(")") + 2 :].split()
        out[int(tid)] = (comm, int(fields[11]) + int(fields[12]))  # utime, stime (fields 14, 15 of stat)
    return out


class ResourceMonitor:
    """Context manager: ``with ResourceMonitor() as mon: ...; mon.usage``."""

    def __init__(self, interval_s: float = 0.2) -> None:
        import psutil

        self._proc = psutil.Process()
        self._interval = interval_s
        self._stop = threading.Event()
        self._peak_rss = 0
        self._ticks0: dict[int, tuple[str, int]] = {}
        self._ticks: dict[int, tuple[str, int]] = {}
        self._names: dict[int, str] = {}
        self.usage: ResourceUsage | None = None

    def __enter__(self) -> ResourceMonitor:
        self._t0 = time.monotonic()
        self._cpu0 = self._proc.cpu_times()
        self._peak_rss = self._proc.memory_info().rss
        self._ticks0 = thread_cpu_ticks()
        gpu = _torch_cuda()
        if gpu is not None:
            gpu.reset_peak_memory_stats()
        self._thread = threading.Thread(target=self._sample, name="bench-resources", daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self._interval):
            self._peak_rss = max(self._peak_rss, self._proc.memory_info().rss)
            self._sample_threads()

    def _sample_threads(self) -> None:
        self._ticks.update(thread_cpu_ticks())
        for t in threading.enumerate():
            if t.native_id is not None:
                self._names[t.native_id] = t.name

    def _thread_cpu_s(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for tid, (comm, ticks) in self._ticks.items():
            used = ticks - self._ticks0.get(tid, (comm, 0))[1]
            if used > 0:
                name = self._names.get(tid, comm)
                out[name] = out.get(name, 0.0) + used * _TICK_S
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample_threads()
        wall = time.monotonic() - self._t0
        cpu1 = self._proc.cpu_times()
        cpu = (cpu1.user - self._cpu0.user) + (cpu1.system - self._cpu0.system)
        gpu = _torch_cuda()
        self.usage = ResourceUsage(
            wall_s=wall,
            cpu_percent=100.0 * cpu / wall if wall > 0 else 0.0,
            peak_rss_mib=max(self._peak_rss, self._proc.memory_info().rss) / 2**20,
            gpu_peak_mib=gpu.max_memory_allocated() / 2**20 if gpu is not None else None,
            thread_cpu_s=self._thread_cpu_s(),
        )


def _torch_cuda():
    """torch.cuda when torch is already imported and a GPU exists (never imports torch itself)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    return torch.cuda
