"""Measure one stream end to end: rate, staleness, per-stage cost, drops, resources.

Figures (issue 14): states/s; window end -> state emitted p50/p95/p99
(``latency_ms.since_window_end``, on the capture/playback clock); windows cut,
dropped and emitted; age of the LLM evidence each state used
(``state.signals["llm_age_s"]``, p50/p95 and the fraction of states that have
one; None where the engine reports no age); CPU seconds per stage as the
pipeline charges them (``PipelineStats.stage_cpu_s``) and per thread as the
kernel counts them (:mod:`emo_stream.bench.resources`); peak RSS.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from emo_stream.bench.resources import ResourceMonitor
from emo_stream.config import StreamConfig
from emo_stream.engines.base import Engine
from emo_stream.pipeline import Pipeline
from emo_stream.state import EmotionState
from emo_stream.stats import percentiles
from emo_stream.stream.sinks import CallbackSink
from emo_stream.stream.sources.base import Source
from emo_stream.stream.sources.factory import open_sources


@dataclass
class StreamResult:
    """Figures of one measured stream (JSON-ready via :meth:`as_dict`)."""

    name: str
    mode: str  # "realtime" (paced like a camera) or "lossless" (as fast as possible)
    media_s: float
    states: int
    states_per_s: float  # per second of wall time
    windows_cut: int
    windows_dropped: int
    capture_dropped: int
    e2e_latency_ms: dict[str, float | None]  # window end -> state emitted (paced/live only)
    engine_ms: dict[str, float | None]
    stages_ms: dict[str, dict[str, float | None]]
    cpu_percent: float
    peak_rss_mib: float
    gpu_peak_mib: float | None
    wall_s: float
    top_labels: dict[str, int] = field(default_factory=dict)
    #: emitted / (emitted + dropped) windows
    windows_emitted_fraction: float | None = None
    #: p50/p95 seconds of ``signals["llm_age_s"]`` over the states that have it (None: no state had one)
    llm_age_s: dict[str, float | None] = field(default_factory=dict)
    #: fraction of states carrying LLM evidence (None when the engine reports no age at all)
    llm_evidence_fraction: float | None = None
    #: CPU seconds per pipeline stage (``PipelineStats.stage_cpu_s``; empty where the pipeline has none)
    stage_cpu_s: dict[str, float] = field(default_factory=dict)
    #: CPU seconds per thread name, from /proc (includes library thread pools)
    thread_cpu_s: dict[str, float] = field(default_factory=dict)
    #: states per top label in order
    label_sequence: list[str] = field(default_factory=list)
    #: top label per ``"<window_end ms>/<person_id>"``, for agreement between runs: a paced
    #: run drops windows and a multi-person state shares its window, so position does not pair them
    label_by_window: dict[str, str] = field(default_factory=dict)
    #: min / p50 / max of ``signals["multimodal_tokens"]`` (the fused tokens the LLM read per window;
    #: Emotion-LLaMA engines report it), empty where the engine reports none
    multimodal_tokens: dict[str, float | None] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure_stream(
    name: str,
    engine: Engine,
    clip: str | Path,
    config: StreamConfig,
    *,
    sources: Sequence[Source] | None = None,
    max_states: int | None = None,
    max_wall_s: float | None = None,
) -> StreamResult:
    """Stream ``clip`` through ``engine`` (realtime when ``config.source.realtime``) and measure it.

    ``sources`` replaces the clip's own sources (the live-like camera +
    microphone, which never end by themselves: pass ``max_states`` and
    ``max_wall_s``, after which the stream is asked to stop).
    """
    import threading

    states: list[EmotionState] = []
    srcs = list(sources) if sources is not None else open_sources(str(clip), config)
    pipeline = Pipeline(srcs, engine, [CallbackSink(states.append)], config)
    timer = threading.Timer(max_wall_s, pipeline.stop) if max_wall_s is not None else None
    with ResourceMonitor() as mon:
        if timer is not None:
            timer.daemon = True
            timer.start()
        try:
            stats = pipeline.run(max_states=max_states)
        finally:
            if timer is not None:
                timer.cancel()
    usage = mon.usage
    assert usage is not None
    stage_names = sorted({k for s in states for k in s.latency_ms} - {"engine", "queue", "pipeline", "since_window_end"})
    # The final window is cut when the input ends, before its grid time: not a latency sample.
    e2e = [s.latency_ms["since_window_end"] for s in states[:-1] if "since_window_end" in s.latency_ms]
    labels: dict[str, int] = {}
    for s in states:
        labels[s.top_label] = labels.get(s.top_label, 0) + 1
    ages = [float(s.signals["llm_age_s"]) for s in states if s.signals and s.signals.get("llm_age_s") is not None]
    reports_age = bool(ages) or any(s.signals and "llm_age_s" in s.signals for s in states)
    seen = stats.states + stats.windows_dropped
    tokens = [float(s.signals["multimodal_tokens"]) for s in states if s.signals and s.signals.get("multimodal_tokens") is not None]
    return StreamResult(
        name=name,
        mode=stats.mode,
        media_s=states[-1].window_end - states[0].window_start if states else 0.0,
        states=stats.states,
        states_per_s=stats.states / usage.wall_s if usage.wall_s else 0.0,
        windows_cut=stats.windows_cut,
        windows_dropped=stats.windows_dropped,
        capture_dropped=sum(s.dropped_samples for s in stats.sources.values()),
        e2e_latency_ms=percentiles(e2e),
        engine_ms=percentiles(list(stats.engine_ms)),
        stages_ms={k: percentiles([s.latency_ms[k] for s in states if k in s.latency_ms], (50, 95)) for k in stage_names},
        cpu_percent=usage.cpu_percent,
        peak_rss_mib=usage.peak_rss_mib,
        gpu_peak_mib=usage.gpu_peak_mib,
        wall_s=usage.wall_s,
        top_labels=labels,
        windows_emitted_fraction=stats.states / seen if seen else None,
        llm_age_s=percentiles(ages, (50, 95)),
        llm_evidence_fraction=len(ages) / len(states) if reports_age and states else None,
        stage_cpu_s=dict(getattr(stats, "stage_cpu_s", {}) or {}),
        thread_cpu_s=usage.thread_cpu_s,
        label_sequence=[s.top_label for s in states],
        label_by_window={window_key(s.window_end, s.person_id): s.top_label for s in states},
        multimodal_tokens={"min": min(tokens), **percentiles(tokens, (50,)), "max": max(tokens)} if tokens else {},
    )


def window_key(window_end: float, person_id: str = "") -> str:
    """The key that pairs a state with the same window's state of another run (same grid, same person)."""
    return f"{round(window_end * 1000)}/{person_id}"
