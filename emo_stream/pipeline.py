"""Wires sources -> timeline -> scheduler -> engine -> sinks.

Two modes, chosen from the sources:

* **lossless** (unpaced files): one thread decodes, pushes and cuts. Samples
  are pushed as fast as the file decodes, every window is cut and processed in
  order, nothing is dropped. Decoding waits for the engine, so memory stays
  bounded however long the file.
* **realtime** (cameras, microphones, paced files): each source is pumped by
  its own thread into the timeline; the main thread cuts windows and runs the
  engine. When the engine falls behind, only the newest
  ``buffers.max_pending_windows`` ready windows are kept (latest wins) and the
  skipped ones are counted. Capture never waits for the engine.

Either way the engine sees the same :class:`~emo_stream.stream.scheduler.Window`
objects, so an engine tested offline behaves the same live. Every sample is
also handed to :meth:`Engine.observe <emo_stream.engines.base.Engine.observe>`
right after it entered the timeline, so engines with incremental perception
analyse samples as they arrive and a window cut only aggregates (the engine is
told the mode first, :meth:`Engine.prepare`).

CPU per stage: ``PipelineStats.stage_cpu_s`` (CPU seconds, ``time.thread_time``
of the threads doing the work) has the engine's own stages
(:meth:`Engine.cpu_seconds`), ``window`` (the thread that runs
``Engine.process``) and ``capture`` (decoding / pumping the sources).
"""

from __future__ import annotations

import collections
import heapq
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from emo_stream.config import StreamConfig
from emo_stream.engines.base import Engine, EngineOutput
from emo_stream.errors import SourceError
from emo_stream.state import EmotionState
from emo_stream.stats import percentile
from emo_stream.stream.samples import AUDIO, VIDEO, AudioChunk, Sample, SourceEvent, VideoFrame
from emo_stream.stream.scheduler import Scheduler, Window
from emo_stream.stream.sinks import Sink
from emo_stream.stream.sources.base import Source, SourceStats
from emo_stream.stream.timeline import Timeline

log = logging.getLogger(__name__)

#: After this many consecutive engine failures the stream stops: the engine is
#: broken, not the input, and flagged states would only hide it.
MAX_CONSECUTIVE_ENGINE_ERRORS = 10


@dataclass
class PipelineStats:
    """Counters of one run; printed by the CLI and read by benchmarks."""

    states: int = 0
    windows_cut: int = 0
    windows_dropped: int = 0
    engine_errors: int = 0
    wall_s: float = 0.0
    mode: str = "lossless"
    sources: dict[str, SourceStats] = field(default_factory=dict)
    engine_ms: collections.deque = field(default_factory=lambda: collections.deque(maxlen=10_000))
    #: CPU seconds per stage (see the module doc); filled at the end of :meth:`Pipeline.run`.
    stage_cpu_s: dict[str, float] = field(default_factory=dict)

    def engine_ms_percentile(self, q: float) -> float | None:
        return percentile(self.engine_ms, q)

    def summary(self) -> str:
        corrupt = sum(s.corrupt_packets for s in self.sources.values())
        captured_drops = sum(s.dropped_samples for s in self.sources.values())
        p50, p95 = self.engine_ms_percentile(50), self.engine_ms_percentile(95)
        lat = f", engine p50 {p50:.1f} ms p95 {p95:.1f} ms" if p50 is not None else ""
        return (
            f"{self.states} states in {self.wall_s:.1f} s ({self.mode}); windows dropped {self.windows_dropped}, "
            f"capture samples dropped {captured_drops}, corrupt packets {corrupt}, engine errors {self.engine_errors}{lat}"
        )


class Pipeline:
    """Runs one stream from opened-or-not sources to sinks. Use :meth:`run` once."""

    def __init__(
        self,
        sources: Sequence[Source],
        engine: Engine,
        sinks: Iterable[Sink],
        config: StreamConfig,
        *,
        wall_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not sources:
            raise SourceError("no input source given")
        self.sources = list(sources)
        self.engine = engine
        self.sinks = list(sinks)
        self.config = config
        self._wall = wall_clock
        self.realtime = any(s.live or getattr(s, "paced", False) for s in self.sources)
        self.stats = PipelineStats(mode="realtime" if self.realtime else "lossless")
        self._stop = threading.Event()
        self._last_rationale_stamp: float | None = None
        self._consecutive_errors = 0
        self._window_cpu_s = 0.0
        self._capture_cpu_s = 0.0
        self._cpu_lock = threading.Lock()
        self.timeline: Timeline | None = None
        self.scheduler: Scheduler | None = None

    # -- control ------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the stream to end soon (safe from signal handlers and other threads)."""
        self._stop.set()

    def run(self, max_states: int | None = None) -> PipelineStats:
        """Stream until the inputs end, :meth:`stop` is called or ``max_states`` are emitted."""
        t_start = self._wall()
        opened: list[Source] = []
        self.engine.reset()
        self.engine.prepare(realtime=self.realtime)
        try:
            for src in self.sources:
                src.open()
                opened.append(src)
            streams = frozenset().union(*(s.streams for s in self.sources))
            cfg = self.config
            self.timeline = Timeline(cfg.buffers.history_s, cfg.buffers.max_frames, cfg.audio.sample_rate)
            self.scheduler = Scheduler(
                self.timeline,
                cfg.window,
                cfg.buffers,
                streams,
                live=self.realtime,
                clock_name=self.sources[0].clock,
                wall_clock=self._wall,
            )
            if self.realtime:
                self._run_realtime(max_states)
            else:
                self._run_lossless(max_states)
        finally:
            for src in opened:
                src.close()
            for sink in self.sinks:
                sink.close()
            self.stats.wall_s = self._wall() - t_start
            self.stats.windows_cut = self.scheduler.windows_cut if self.scheduler else 0
            self.stats.sources = {s.name: s.stats for s in self.sources}
            self.stats.stage_cpu_s = {**self.engine.cpu_seconds(), "window": self._window_cpu_s, "capture": self._capture_cpu_s}
        return self.stats

    # -- lossless -------------------------------------------------------------------
    def _run_lossless(self, max_states: int | None) -> None:
        assert self.timeline is not None and self.scheduler is not None
        cpu0 = time.thread_time()
        try:
            self._lossless_loop(max_states)
        finally:
            # This thread decodes and cuts; what ``_process`` did not use is capture.
            self._capture_cpu_s += time.thread_time() - cpu0 - self._window_cpu_s

    def _lossless_loop(self, max_states: int | None) -> None:
        assert self.timeline is not None and self.scheduler is not None
        merged = heapq.merge(*(self._guarded(s) for s in self.sources), key=lambda x: x.t)
        for sample in merged:
            if self._stop.is_set() or self._done(max_states):
                return
            self.timeline.push(sample)
            self.engine.observe(sample)
            for window in self.scheduler.ready_windows():
                self._process(window)
                if self._done(max_states):
                    return
        self.scheduler.end_all()
        for window in self.scheduler.ready_windows():
            if self._stop.is_set() or self._done(max_states):
                return
            self._process(window)

    def _guarded(self, source: Source) -> Iterable[Sample]:
        """The source's samples; an unexpected failure ends that source with an event instead of the stream."""
        last_t = 0.0
        try:
            for sample in source.samples():
                last_t = sample.t
                yield sample
        except SourceError as exc:
            source.stats.note_error(str(exc))
            log.warning("%s: %s", source.name, exc)
            yield SourceEvent(last_t, "disconnected", str(exc))

    # -- realtime -------------------------------------------------------------------
    def _run_realtime(self, max_states: int | None) -> None:
        assert self.timeline is not None and self.scheduler is not None
        timeline, scheduler = self.timeline, self.scheduler  # narrowed for the pump closure
        cond = threading.Condition()
        pending: collections.deque[Window] = collections.deque()
        limit = self.config.buffers.max_pending_windows
        done_sources: list[Source] = []

        def pump(source: Source) -> None:
            cpu0 = time.thread_time()
            try:
                for sample in self._guarded(source):
                    if self._stop.is_set():
                        break
                    with cond:
                        timeline.push(sample)
                        if isinstance(sample, VideoFrame):
                            scheduler.note_arrival(VIDEO)
                        elif isinstance(sample, AudioChunk):
                            scheduler.note_arrival(AUDIO)
                        cond.notify()
                    self.engine.observe(sample)  # outside the lock: cutting never waits for it
            finally:
                with self._cpu_lock:
                    self._capture_cpu_s += time.thread_time() - cpu0
                with cond:
                    for stream in source.streams:
                        scheduler.end_stream(stream)
                    done_sources.append(source)
                    cond.notify()

        pumps = [threading.Thread(target=pump, args=(s,), name=f"pump:{s.name}", daemon=True) for s in self.sources]
        for th in pumps:
            th.start()
        poll = min(0.05, self.config.window.hop_s / 4)
        try:
            while not self._stop.is_set() and not self._done(max_states):
                with cond:
                    all_done = len(done_sources) == len(self.sources)
                    for window in self.scheduler.ready_windows():
                        pending.append(window)
                    while len(pending) > limit:  # latest wins
                        pending.popleft()
                        self.stats.windows_dropped += 1
                    if not pending:
                        if all_done:
                            return
                        cond.wait(poll)
                        continue
                    window = pending.popleft()
                self._process(window)
        finally:
            self._stop.set()
            for src in self.sources:
                src.close()
            for th in pumps:
                th.join(timeout=5.0)

    # -- per window -------------------------------------------------------------------
    def _done(self, max_states: int | None) -> bool:
        return max_states is not None and self.stats.states >= max_states

    def _process(self, window: Window) -> None:
        t0 = self._wall()
        cpu0 = time.thread_time()
        try:
            out = self.engine.process(window)
            self._consecutive_errors = 0
        except Exception as exc:
            self.stats.engine_errors += 1
            self._consecutive_errors += 1
            log.exception("engine failed on window %d [%.2f, %.2f]", window.index, window.start, window.end)
            if self._consecutive_errors >= MAX_CONSECUTIVE_ENGINE_ERRORS:
                raise RuntimeError(f"engine failed on {self._consecutive_errors} consecutive windows; last error: {exc}") from exc
            label_set = self.engine.label_set
            out = EngineOutput(probabilities=np.full(len(label_set), 1.0 / len(label_set)), flags=["engine_error"])
        t1 = self._wall()
        self._window_cpu_s += time.thread_time() - cpu0
        state = self._state(window, out, queue_ms=(t0 - window.cut_at) * 1e3, engine_ms=(t1 - t0) * 1e3)
        self.stats.engine_ms.append((t1 - t0) * 1e3)
        for sink in self.sinks:
            sink.write(state)
        self.stats.states += 1
        for person in out.people:  # the other tracked people: to the sinks that take them
            pstate = self._person_state(window, person, state.latency_ms)
            for sink in self.sinks:
                sink.write_person(pstate)
        for sink in self.sinks:
            sink.end_window()

    def _capture_now(self, clock: str) -> float | None:
        """ "Now" on the clock windows are stamped with, when it can be known: the host's
        monotonic clock for devices, the playback position for paced files."""
        if clock == "monotonic":
            return self._wall()
        for src in self.sources:
            media_now = getattr(src, "media_now", None)
            if callable(media_now):
                return media_now()
        return None

    def _state(self, window: Window, out: EngineOutput, queue_ms: float, engine_ms: float) -> EmotionState:
        rationale = ""
        if out.rationale and out.rationale_stamp is not None and out.rationale_stamp != self._last_rationale_stamp:
            rationale = out.rationale
            self._last_rationale_stamp = out.rationale_stamp
        age = None if self._last_rationale_stamp is None else max(0.0, window.end - self._last_rationale_stamp)
        latency = dict(out.latency_ms)
        latency["engine"] = engine_ms
        latency["queue"] = max(0.0, queue_ms)
        latency["pipeline"] = (self._wall() - window.cut_at) * 1e3
        now = self._capture_now(window.clock)
        if now is not None:
            latency["since_window_end"] = (now - window.end) * 1e3
        return self._build_state(window, out, latency, rationale=rationale, rationale_age_s=age)

    def _person_state(self, window: Window, out: EngineOutput, latency: Mapping[str, float]) -> EmotionState:
        """State of a non-primary tracked person: the window's timing, their own evidence;
        no rationale (the reasoner explains the primary person only)."""
        return self._build_state(window, out, latency)

    def _build_state(self, window: Window, out: EngineOutput, latency: Mapping[str, float], **extra: Any) -> EmotionState:
        """The one place a window plus an engine output become a state (primary or other person)."""
        return EmotionState.build(
            label_set=self.engine.label_set,
            probabilities=out.probabilities,
            window_start=window.start,
            window_end=window.end,
            sequence=window.index,
            model_id=self.engine.model_id,
            valence=out.valence,
            arousal=out.arousal,
            modalities=out.modalities,
            latency_ms=latency,
            flags=[*window.flags, *out.flags],
            signals=out.signals,
            clock=window.clock,
            transcript=out.transcript,
            person_id=out.person_id,
            **extra,
        )
