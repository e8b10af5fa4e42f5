"""Measure one stream end to end: rate, staleness, per-stage cost, drops, resources."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emo_stream.bench.resources import ResourceMonitor
from emo_stream.config import StreamConfig
from emo_stream.engines.base import Engine
from emo_stream.state import EmotionState
from emo_stream.stream.pipeline import Pipeline
from emo_stream.stream.sinks import CallbackSink
from emo_stream.stream.sources.factory import open_sources


def percentiles(values: list[float], qs=(50, 95, 99)) -> dict[str, float | None]:
    if not values:
        return {f"p{q}": None for q in qs}
    return {f"p{q}": float(np.percentile(values, q)) for q in qs}


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

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure_stream(name: str, engine: Engine, clip: str | Path, config: StreamConfig) -> StreamResult:
    """Stream ``clip`` through ``engine`` (realtime when ``config.source.realtime``) and measure it."""
    states: list[EmotionState] = []
    with ResourceMonitor() as mon:
        stats = Pipeline(open_sources(str(clip), config), engine, [CallbackSink(states.append)], config).run()
    usage = mon.usage
    assert usage is not None
    stage_names = sorted({k for s in states for k in s.latency_ms} - {"engine", "queue", "pipeline", "since_window_end"})
    # The final window is cut when the input ends, before its grid time: not a latency sample.
    e2e = [s.latency_ms["since_window_end"] for s in states[:-1] if "since_window_end" in s.latency_ms]
    labels: dict[str, int] = {}
    for s in states:
        labels[s.top_label] = labels.get(s.top_label, 0) + 1
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
    )
