"""Live demo: camera (or a paced file) + microphone -> pipeline -> window or recording.

Threads and who waits for whom (nobody waits for the engine):

* **capture** (inside :class:`~emo_stream.stream.sources.camera.CameraSource`
  / the microphone source): grabs into a bounded drop-oldest queue;
* **pump** (the pipeline's, one per source): moves samples into the timeline;
  a :class:`TeeSource` wrapper also hands each frame to :class:`LatestFrame`
  (a one-slot "latest wins" holder) and, when recording, to the
  :class:`LiveRecorder`'s bounded queue -- both O(1), never blocking;
* **pipeline** (its own thread here): cuts windows, runs the engine, and its
  ``CallbackSink`` stores each state in :class:`~emo_stream.demo.track.LatestState`;
* **UI** (the main thread, as GUI toolkits want): at display rate takes the
  latest frame and the latest state, draws, shows, polls the keyboard
  (``q``/Esc quits, space pauses the *display*; perception keeps running).
  Frames arrive at camera rate, states at the hop rate; the overlay always
  shows the newest of each.
* **recorder** (``--headless``): draws every captured frame (while it keeps
  up; the oldest queued frames are dropped and counted if it does not) with
  the state known at that moment, and encodes it; microphone audio is encoded
  beside it (AAC).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Protocol

import numpy as np

from emo_stream.config import StreamConfig
from emo_stream.demo.errors import DemoError
from emo_stream.demo.overlay import draw_overlay
from emo_stream.demo.track import LatestSink, LatestState
from emo_stream.demo.video import AnnotatedVideoWriter, check_output_path
from emo_stream.demo.window import CvDisplay, display_problem  # noqa: F401 - re-exported: the window lives in .window
from emo_stream.engines.base import Engine
from emo_stream.errors import EmoStreamError
from emo_stream.pipeline import Pipeline, PipelineStats
from emo_stream.state import EmotionState
from emo_stream.stream.samples import AudioChunk, Sample, VideoFrame
from emo_stream.stream.sinks import CallbackSink, JsonlSink, Sink
from emo_stream.stream.sources.base import Source
from emo_stream.stream.sources.wrapped import WrappedSource

log = logging.getLogger(__name__)

KEY_QUIT = (ord("q"), ord("Q"), 27)  # q, Q, Esc
KEY_PAUSE = (ord(" "), ord("p"))
HELP = "q quit  space pause"
#: live recordings: timestamps in 1/90000 s (MPEG's clock; any capture time fits)
_LIVE_TIME_BASE = Fraction(1, 90000)


# -- display -----------------------------------------------------------------------------------------
class Display(Protocol):
    """Where the UI loop shows frames (a window; a fake in tests)."""

    def show(self, image: np.ndarray) -> None: ...

    def poll_key(self, wait_ms: int) -> int:
        """Pump GUI events for up to ``wait_ms``; the key pressed (0-255) or -1."""
        ...

    def close(self) -> None: ...


# -- fan-out of captured samples -------------------------------------------------------------------------
class TeeSource(WrappedSource):
    """Passes ``inner``'s samples through unchanged and shows each one to ``on_sample`` first.

    ``on_sample`` runs on the pipeline's pump thread and must return at once
    (store a reference, put into a bounded queue). ``open`` is idempotent, so
    the demo can open the devices first (a missing camera fails before any
    model loads) and the pipeline's own ``open`` is then a no-op.
    """

    def __init__(self, inner: Source, on_sample: Callable[[Sample], None]) -> None:
        super().__init__(inner)  # counters, streams, clock, timing flags: the inner source's
        self.on_sample = on_sample
        self._opened = False

    def open(self) -> None:
        if not self._opened:
            self.inner.open()
            self._opened = True

    def samples(self) -> Iterator[Sample]:
        for sample in self.inner.samples():
            try:
                self.on_sample(sample)
            except Exception:
                log.exception("demo frame hook failed")
            yield sample


class LatestFrame:
    """The newest captured frame (latest wins) and the capture frame rate."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._frame: VideoFrame | None = None
        self._seq = 0
        self._times: collections.deque[float] = collections.deque(maxlen=30)

    def put(self, frame: VideoFrame) -> None:
        with self._lock:
            self._frame = frame
            self._seq += 1
            self._times.append(frame.t)

    def get(self) -> tuple[int, VideoFrame | None]:
        with self._lock:
            return self._seq, self._frame

    def fps(self) -> float | None:
        with self._lock:
            ts = list(self._times)
        return (len(ts) - 1) / (ts[-1] - ts[0]) if len(ts) >= 2 and ts[-1] > ts[0] else None


# -- recording -------------------------------------------------------------------------------------------
class LiveRecorder:
    """Draws and encodes captured frames on its own thread (``--headless`` with a camera).

    The frame queue is bounded (``queue_size``); when the encoder falls behind,
    the oldest frames are dropped and counted (``frames_dropped``) -- capture is
    never slowed down. Output timestamps are capture times relative to the first
    recorded frame; microphone chunks (when ``audio_rate`` is given) are encoded
    on the same time line.
    """

    def __init__(
        self,
        path: str | Path,
        latest_state: LatestState,
        *,
        lossless: bool = False,
        audio_rate: int | None = None,
        queue_size: int = 64,
        note: str = "",
    ) -> None:
        self.path = check_output_path(path)
        self.latest_state = latest_state
        self.lossless = lossless
        self.audio_rate = audio_rate
        self.note = note
        self.frames_written = 0
        self.frames_dropped = 0
        self._queue: collections.deque[Sample] = collections.deque()
        self._queue_size = queue_size
        self._frames_queued = 0
        self._cond = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._writer: AnnotatedVideoWriter | None = None
        self._t0 = 0.0  # the first frame's t, the recording's zero: set with _writer, read only once it is
        self._pending_audio: list[AudioChunk] = []
        self.error: BaseException | None = None

    def on_sample(self, sample: Sample) -> None:
        """Queue a frame (or audio chunk); O(1), never blocks."""
        if not isinstance(sample, (VideoFrame, AudioChunk)):
            return
        with self._cond:
            if self._stop:
                return
            if isinstance(sample, VideoFrame):
                if self._frames_queued >= self._queue_size:
                    for i, item in enumerate(self._queue):  # drop the oldest frame, keep the audio
                        if isinstance(item, VideoFrame):
                            del self._queue[i]
                            break
                    self._frames_queued -= 1
                    self.frames_dropped += 1
                self._frames_queued += 1
            elif self.audio_rate is None:
                return
            self._queue.append(sample)
            self._cond.notify()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="demo-recorder", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._queue and not self._stop:
                        self._cond.wait(0.1)
                    if not self._queue and self._stop:
                        return
                    item = self._queue.popleft()
                    if isinstance(item, VideoFrame):
                        self._frames_queued -= 1
                self._handle(item)
        except BaseException as exc:
            self.error = exc
            log.exception("recorder failed")

    def _handle(self, item: Sample) -> None:
        if isinstance(item, AudioChunk):
            if self._writer is None:
                self._pending_audio.append(item)
                del self._pending_audio[:-64]
            else:
                self._writer.write_audio(item.t - self._t0, item.samples)
            return
        assert isinstance(item, VideoFrame)
        if self._writer is None:
            h, w = item.image.shape[:2]
            self._t0 = item.t
            self._writer = AnnotatedVideoWriter(self.path, w, h, time_base=_LIVE_TIME_BASE, rate=None, lossless=self.lossless)
            if self.audio_rate is not None:
                self._writer.enable_live_audio(self.audio_rate)
                for chunk in self._pending_audio:
                    self._writer.write_audio(chunk.t - self._t0, chunk.samples)
            self._pending_audio.clear()
        if item.image.shape[:2] != (self._writer.height, self._writer.width):
            return  # a camera that changed resolution mid-stream: keep the file consistent
        state, stats = self.latest_state.snapshot(now=item.t, note=self.note, dropped=self.frames_dropped)
        pts = round((item.t - self._t0) / _LIVE_TIME_BASE)
        self._writer.write(draw_overlay(item.image, state, stats, self.latest_state.people_of(state)), pts)
        self.frames_written += 1

    def close(self) -> None:
        """Write what is queued, then finish the file."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=60)
        if self.error is not None:
            if self._writer is not None:
                self._writer.abort(self.error)  # no half recording under the final name
            if isinstance(self.error, EmoStreamError):  # "cannot write X: No space left on device"
                raise self.error
            raise DemoError(f"recording {self.path} failed: {self.error}") from self.error
        if self._writer is not None:
            self._writer.close()

    @property
    def audio_mode(self) -> str:
        return self._writer.audio_mode if self._writer is not None else "none"


# -- the demo ----------------------------------------------------------------------------------------------
@dataclass
class LiveResult:
    states: int
    frames_shown: int
    frames_recorded: int
    frames_dropped: int
    ended_by: str  # "q", "input ended", "stopped", "time limit"
    pipeline: PipelineStats | None
    video: Path | None = None
    audio: str = "none"
    jsonl: Path | None = None
    extra: dict = field(default_factory=dict)

    def summary(self) -> str:
        parts = [f"{self.states} states", f"ended by {self.ended_by}"]
        if self.frames_shown:
            parts.append(f"{self.frames_shown} frames shown")
        if self.video is not None:
            parts.append(f"{self.frames_recorded} frames recorded to {self.video} (audio: {self.audio}, {self.frames_dropped} dropped)")
        if self.jsonl is not None:
            parts.append(f"states written to {self.jsonl}")
        if self.pipeline is not None:
            parts.append(self.pipeline.summary())
        return "; ".join(parts)


class LiveDemo:
    """Run sources through an engine and show (``display``) and/or record (``record_to``) the overlay.

    Args:
        sources: unopened sources (``open_sources("camera:0", cfg, mic=...)``,
            or a file with ``source.realtime`` for a paced replay).
        config: the stream config.
        engine: an engine (closed by the caller), or None to build one from ``config``.
        display: a :class:`Display`, or a zero-argument factory called after the
            sources opened (``CvDisplay``); None for no window.
        record_to: annotated video path (headless recording), or None.
        jsonl: where to write the states, or None.
        max_seconds: stop after this long (wall clock), None for no limit.
        fps_cap: display refresh limit.
        on_state: called with each state (on the pipeline thread).
        on_ready: called once the devices are open, the engine loaded and the stream started.
    """

    def __init__(
        self,
        sources: Sequence[Source],
        config: StreamConfig,
        *,
        engine: Engine | None = None,
        display: Display | Callable[[], Display] | None = None,
        record_to: str | Path | None = None,
        lossless: bool = False,
        jsonl: str | Path | None = None,
        max_seconds: float | None = None,
        fps_cap: float = 60.0,
        on_state: Callable[[EmotionState], None] | None = None,
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        if display is None and record_to is None:
            raise ValueError("LiveDemo needs a display or a recording path")
        self.config = config
        self.engine = engine
        self.latest_frame = LatestFrame()
        self.latest_state = LatestState()
        self.recorder: LiveRecorder | None = None
        if record_to is not None:
            rate = config.audio.sample_rate
            self.recorder = LiveRecorder(record_to, self.latest_state, lossless=lossless, audio_rate=rate, note=f"engine: {config.engine.name}")
        self.sources = [TeeSource(s, self._on_sample) for s in sources]
        self._display_arg = display
        self.display: Display | None = None
        self.jsonl = Path(jsonl) if jsonl is not None else None
        self.max_seconds = max_seconds
        self.fps_cap = fps_cap
        self.on_state = on_state
        self.on_ready = on_ready
        self._stop = threading.Event()
        self._pipeline: Pipeline | None = None
        self.frames_shown = 0

    def stop(self) -> None:
        """End soon (safe from signal handlers and other threads)."""
        self._stop.set()
        if self._pipeline is not None:
            self._pipeline.stop()

    def _on_sample(self, sample: Sample) -> None:
        if isinstance(sample, VideoFrame):
            self.latest_frame.put(sample)
        if self.recorder is not None:
            self.recorder.on_sample(sample)

    def run(self) -> LiveResult:
        from emo_stream.engines import make_engine

        opened: list[TeeSource] = []
        try:
            for src in self.sources:  # a missing camera / microphone fails here, in one line
                src.open()
                opened.append(src)
            arg = self._display_arg
            if arg is not None and (isinstance(arg, type) or not hasattr(arg, "show")):
                self.display = arg()  # a factory (CvDisplay): refuses here when there is no display
            else:
                self.display = arg  # type: ignore[assignment]
        except BaseException:
            for src in opened:
                src.close()
            raise
        if self.recorder is not None and not any("audio" in s.streams for s in self.sources):
            self.recorder.audio_rate = None
        own_engine = self.engine is None
        engine: Engine | None = None
        worker: threading.Thread | None = None
        result_box: dict[str, object] = {}
        done = threading.Event()
        try:
            engine = self.engine if self.engine is not None else make_engine(self.config)
            sinks: list[Sink] = [LatestSink(self.latest_state)]  # with the other tracked people
            if self.on_state is not None:
                sinks.append(CallbackSink(self.on_state))
            if self.jsonl is not None:
                sinks.append(JsonlSink(self.jsonl))
            self._pipeline = Pipeline(self.sources, engine, sinks, self.config)
            if self._stop.is_set():
                self._pipeline.stop()

            def run_pipeline() -> None:
                try:
                    result_box["stats"] = self._pipeline.run()  # type: ignore[union-attr]
                except BaseException as exc:
                    result_box["error"] = exc
                finally:
                    done.set()

            if self.recorder is not None:
                self.recorder.start()
            worker = threading.Thread(target=run_pipeline, name="demo-pipeline", daemon=True)
            worker.start()
            if self.on_ready is not None:
                self.on_ready()
            ended_by = self._ui_loop(done) if self.display is not None else self._wait_loop(done)
        finally:
            if self._pipeline is not None:
                self._pipeline.stop()
            if worker is not None:
                worker.join(timeout=30)  # the engine finishes its window; the pipeline closes the sources
            else:
                for src in opened:
                    src.close()
            if self.display is not None:
                self.display.close()
            if own_engine and engine is not None:
                engine.close()
            if self.recorder is not None:
                self.recorder.close()
        if "error" in result_box:
            raise result_box["error"]  # type: ignore[misc]
        rec = self.recorder
        return LiveResult(
            states=self.latest_state.count,
            frames_shown=self.frames_shown,
            frames_recorded=rec.frames_written if rec else 0,
            frames_dropped=rec.frames_dropped if rec else 0,
            ended_by=ended_by,
            pipeline=result_box.get("stats"),  # type: ignore[arg-type]
            video=rec.path if rec else None,
            audio=rec.audio_mode if rec else "none",
            jsonl=self.jsonl,
        )

    # -- loops ---------------------------------------------------------------------------------------------
    def _time_up(self, t_start: float) -> bool:
        return self.max_seconds is not None and time.monotonic() - t_start >= self.max_seconds

    def _wait_loop(self, done: threading.Event) -> str:
        t_start = time.monotonic()
        while True:
            if self._stop.is_set():
                return "stopped"
            if done.is_set():
                return "input ended"
            if self._time_up(t_start):
                return "time limit"
            done.wait(0.05)

    def _ui_loop(self, done: threading.Event) -> str:
        """Show the latest frame with the latest state until q / end of input / stop."""
        display = self.display
        assert display is not None
        wait_ms = max(1, int(1000 / self.fps_cap))
        t_start = time.monotonic()
        paused = False
        last_seq = -1
        shown: VideoFrame | None = None
        while True:
            if self._stop.is_set():
                return "stopped"
            if self._time_up(t_start):
                return "time limit"
            seq, frame = self.latest_frame.get()
            if done.is_set() and not paused and seq == last_seq:
                return "input ended"
            if not paused and frame is not None and seq != last_seq:
                self._show(frame, paused=False)
                last_seq, shown = seq, frame
            key = display.poll_key(wait_ms)
            if key in KEY_QUIT:
                return "q"
            if key in KEY_PAUSE:
                paused = not paused
                if paused and shown is not None:
                    self._show(shown, paused=True)  # freeze the picture, tagged PAUSED

    def _show(self, frame: VideoFrame, paused: bool) -> None:
        state, stats = self.latest_state.snapshot(now=frame.t, fps=self.latest_frame.fps(), paused=paused, note=f"{HELP}  engine: {self.config.engine.name}")
        self.display.show(draw_overlay(frame.image, state, stats, self.latest_state.people_of(state)))  # type: ignore[union-attr]
        self.frames_shown += 1
