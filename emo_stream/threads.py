"""The CPU budget: how many threads each runtime may use, and CPU time per stage.

A robot's computer has few cores (the reference machine has 2) and this process
runs several native runtimes at once. Each of them, left alone, sizes its own
thread pool to *all* cores, and several of them spin-wait at barriers
(llama.cpp's OpenMP threads, ONNX Runtime's intra-op pool), so "all cores each"
means 2-4x oversubscription and latency spikes far worse than the work itself.
:func:`plan_threads` is the one place that decides, for ``n`` usable cores:

=====================  ==================  =========================================
runtime                threads             why
=====================  ==================  =========================================
llama.cpp (scoring,    ``n - 1`` (>= 1);    the only stage that is compute-bound for
rationale)             ``min(n - 3, 8)``    100s of ms; one core stays free for the
                       from 8 cores; batch  perception workers and capture (two more
                       the same             for their wider pools from 8 cores; a
                                            135M model stops scaling past ~8)
ONNX Runtime           intra 1, inter 1     per-frame / per-32-ms models (RetinaFace,
(face, expression,     (2 intra from 8      FER, silero): thread hand-off costs more
VAD)                   cores up)            than the math at these sizes
CTranslate2 (Whisper)  1 (2 from 8 cores)   runs in bursts, once per finished
                                            utterance, on its own worker
OpenMP / BLAS          1                    numpy's BLAS is only used for small
(``OMP_NUM_THREADS``)                       per-window arrays; a BLAS pool would
                                            only compete with the above
=====================  ==================  =========================================

Threads of the process at steady state (default engine, live): capture/pump
threads (I/O bound), the window thread (cut + aggregate + fusion, a few ms),
the face worker, the audio worker (VAD + prosody), the ASR worker, the LLM
scoring worker and the rationale worker (they share one llama.cpp context, so
at most one of them computes at a time). On 2 cores: llama.cpp uses 1 thread,
everything else shares the other core, whose load is ~20 % on Megamind.

``OMP_NUM_THREADS`` only takes effect if set before numpy / onnxruntime /
llama.cpp are imported: ``emo-stream``'s ``main`` calls :func:`apply_process_env`
first (pool sizes for the streaming commands, ``OMP_WAIT_POLICY=PASSIVE`` for
all); :func:`limit_blas` caps an already-loaded BLAS at run time.

CPU time per stage: each worker measures ``time.thread_time()`` around its own
work into a :class:`StageClock`; the engine reports them
(``Engine.cpu_seconds()``) and the pipeline copies them to
``PipelineStats.stage_cpu_s`` at the end of a run.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

from emo_stream.errors import ConfigError

#: Environment variables that size OpenMP / BLAS pools at library load.
_POOL_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

#: OpenMP threads sleep at a barrier instead of spinning (GNU and Intel OpenMP
#: spin for up to ~0.2 s by default). llama.cpp's pip build and CTranslate2 use
#: OpenMP: a spinning pool between two LLM calls burns the core the perception
#: workers need. Set for every command (it never costs a whole core).
_WAIT_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}

#: Commands that stream (several runtimes at once on the robot's cores): the
#: plan's pool sizes apply to them. Training/eval/export keep their libraries'
#: defaults (torch sizes its intra-op pool from OMP_NUM_THREADS, and 1 would
#: halve training speed on 2 cores).
STREAMING_COMMANDS = frozenset({"run", "demo", "bench"})


def usable_cores() -> int:
    """Cores this process may run on (CPU affinity, e.g. ``taskset`` or a container cpuset)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class ThreadPlan:
    """Thread counts for every runtime of the default engine (see the module table).

    Attributes:
        cores: usable cores the plan was made for.
        llm_threads, llm_threads_batch: llama.cpp ``n_threads`` (single-token
            decode) and ``n_threads_batch`` (prompt / label batches).
        onnx_intra, onnx_inter: ONNX Runtime intra-/inter-op threads per session.
        asr_threads: CTranslate2 ``cpu_threads`` (intra-op) for Whisper.
        omp_threads: OpenMP / BLAS pool size (``OMP_NUM_THREADS``).
    """

    cores: int
    llm_threads: int
    llm_threads_batch: int
    onnx_intra: int
    onnx_inter: int
    asr_threads: int
    omp_threads: int

    def __post_init__(self) -> None:
        for name in ("cores", "llm_threads", "llm_threads_batch", "onnx_intra", "onnx_inter", "asr_threads", "omp_threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"thread plan: {name} must be an int >= 1, got {value!r}")


def plan_threads(cores: int | None = None, *, llm_threads: int | None = None) -> ThreadPlan:
    """The thread plan for ``cores`` usable cores (default: :func:`usable_cores`).

    ``llm_threads`` overrides llama.cpp's share (``engine.options.llm_threads``).
    """
    n = usable_cores() if cores is None else int(cores)
    if n < 1:
        raise ConfigError(f"thread plan: cores must be >= 1, got {cores}")
    wide = n >= 8
    llm = llm_threads if llm_threads is not None else (min(n - 3, 8) if wide else max(1, n - 1))
    return ThreadPlan(
        cores=n,
        llm_threads=llm,
        llm_threads_batch=llm,
        onnx_intra=2 if wide else 1,
        onnx_inter=1,
        asr_threads=2 if wide else 1,
        omp_threads=1,
    )


def apply_process_env(plan: ThreadPlan | None = None, *, pools: bool = True) -> dict[str, str]:
    """Set the OpenMP wait policy and (``pools``) the OpenMP / BLAS pool sizes, unless the user set them.

    Call before importing numpy, onnxruntime or llama_cpp (``emo-stream`` does
    it first thing in ``main``); the libraries read these variables once, when
    they load, so later calls only affect libraries loaded afterwards. A value
    already in the environment wins (a user's ``OMP_NUM_THREADS=4`` is kept).
    Returns the variables as they now are.
    """
    for name, value in _WAIT_ENV.items():
        os.environ.setdefault(name, value)
    names = list(_WAIT_ENV)
    if pools:
        plan = plan or plan_threads()
        for name in _POOL_ENV:
            os.environ.setdefault(name, str(plan.omp_threads))
        names += _POOL_ENV
    return {name: os.environ[name] for name in names}


def command_of(argv: list[str] | tuple[str, ...]) -> str | None:
    """The sub-command of an ``emo-stream`` argv (``["--log-level", "DEBUG", "run", ...]`` -> ``"run"``), before argparse runs."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--log-level":
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None


def limit_blas(plan: ThreadPlan) -> None:
    """Cap the BLAS / OpenMP pools of libraries that are already loaded (threadpoolctl).

    A no-op when threadpoolctl is not installed: then only :func:`apply_process_env` applies.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(limits=plan.omp_threads)


class StageClock:
    """CPU seconds spent per stage, summed over the threads that did the work.

    A worker wraps its unit of work in ``with clock.measure("face"):``; the time
    is ``time.thread_time()`` of *that* thread, so stages running in parallel
    are not charged for each other. (llama.cpp's extra OpenMP threads are not
    visible to the calling thread; with the plan's 1 thread on 2 cores there
    are none.) Thread-safe.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cpu: dict[str, float] = {}
        self._calls: dict[str, int] = {}

    def add(self, stage: str, seconds: float, calls: int = 1) -> None:
        with self._lock:
            self._cpu[stage] = self._cpu.get(stage, 0.0) + seconds
            self._calls[stage] = self._calls.get(stage, 0) + calls

    def measure(self, stage: str) -> _Measure:
        return _Measure(self, stage)

    def seconds(self) -> dict[str, float]:
        """CPU seconds per stage so far."""
        with self._lock:
            return dict(self._cpu)

    def calls(self) -> dict[str, int]:
        with self._lock:
            return dict(self._calls)

    def reset(self) -> None:
        with self._lock:
            self._cpu.clear()
            self._calls.clear()


class _Measure:
    __slots__ = ("_clock", "_stage", "_t0")

    def __init__(self, clock: StageClock, stage: str) -> None:
        self._clock, self._stage = clock, stage

    def __enter__(self) -> _Measure:
        self._t0 = time.thread_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self._clock.add(self._stage, time.thread_time() - self._t0)
