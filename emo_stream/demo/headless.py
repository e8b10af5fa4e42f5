"""Headless demo on a file: states (JSONL) + an annotated copy of the video.

Two passes over the file, each single-threaded and deterministic:

1. the pipeline runs **losslessly** (every window, in order, as fast as the
   engine goes) and the states are collected (and written as JSONL);
2. the video is decoded again and each frame at time *t* is drawn with the
   latest state whose ``window_end <= t`` (see
   :class:`~emo_stream.demo.track.StateTrack`) and encoded with the input's
   timestamps; the audio track is copied in (see :mod:`emo_stream.demo.video`).
   The other tracked people of that state's window (the states the pipeline
   sends to ``Sink.write_person``) are drawn too, each at their own face.

The output therefore has the input's frame count, frame times and audio, and
on the frames before the first state the panel says "waiting for first state".
Two passes (rather than drawing while the engine runs) keep the engine's
timing out of the picture: the video shows what a viewer with an instant
engine would see, the same on every machine.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from emo_stream.config import StreamConfig
from emo_stream.demo.errors import DemoError
from emo_stream.demo.overlay import draw_overlay
from emo_stream.demo.track import StateTrack
from emo_stream.demo.video import (
    AnnotatedVideoWriter,
    check_output_path,
    iter_video_frames,
    video_stream_params,
)
from emo_stream.engines.base import Engine
from emo_stream.pipeline import Pipeline, PipelineStats
from emo_stream.state import EmotionState
from emo_stream.stream.sinks import CallbackSink, JsonlSink, Sink

log = logging.getLogger(__name__)


class _Recorder(Sink):
    """Keeps the primary stream and, per window, the other tracked people's states.

    WHY a sink of its own: ``CallbackSink`` sees the primary stream only (it
    ignores ``write_person``, so callers that know one person see no change),
    and the overlay needs everyone of the window it shows.
    """

    def __init__(self) -> None:
        self.states: list[EmotionState] = []
        self.people: dict[tuple[int, float], list[EmotionState]] = {}

    def write(self, state: EmotionState) -> None:
        self.states.append(state)

    def write_person(self, state: EmotionState) -> None:
        self.people.setdefault((state.sequence, state.window_end), []).append(state)

    def others(self, state: EmotionState | None) -> list[EmotionState]:
        """The other people of ``state``'s window (empty for single-person engines)."""
        return [] if state is None else self.people.get((state.sequence, state.window_end), [])


@dataclass
class AnnotateResult:
    """What :class:`FileAnnotator` produced."""

    video: Path | None  # None when stopped before any frame was written
    jsonl: Path | None
    states: int
    frames_in: int
    frames_out: int
    audio: str
    lossless: bool
    pipeline: PipelineStats
    pipeline_s: float
    render_s: float
    stopped: bool = False

    def summary(self) -> str:
        stop = " (stopped early)" if self.stopped else ""
        if self.video is None:
            return f"stopped before rendering; {self.states} states" + (f" written to {self.jsonl}" if self.jsonl else "")
        return (
            f"annotated {self.frames_out}/{self.frames_in} frames into {self.video} "
            f"({'lossless' if self.lossless else 'crf 18'} H.264, audio: {self.audio}){stop}; "
            f"{self.states} states" + (f" written to {self.jsonl}" if self.jsonl else "") + f"; pipeline {self.pipeline_s:.1f} s, render {self.render_s:.1f} s"
        )


class FileAnnotator:
    """Run the pipeline on a media file and write the annotated video (+ JSONL).

    Args:
        input: a video file (with or without audio).
        out: the annotated video (.mp4, .mov, .mkv, .avi).
        config: stream config (``source.realtime`` is ignored: a file is processed losslessly).
        jsonl: where to write the states (None: not written).
        engine: an engine to use (closed by the caller); None builds one from ``config``.
        lossless: encode with x264 qp=0 (bit-exact outside the overlay; big files).
        on_state: called with each state as the pipeline emits it (progress display).
    """

    def __init__(
        self,
        input: str | Path,
        out: str | Path,
        config: StreamConfig,
        *,
        jsonl: str | Path | None = None,
        engine: Engine | None = None,
        lossless: bool = False,
        on_state: Callable[[EmotionState], None] | None = None,
    ) -> None:
        self.input = Path(input).expanduser()
        self.out = check_output_path(out)
        self.jsonl = Path(jsonl).expanduser() if jsonl is not None else None
        if self.jsonl is not None and self.jsonl.resolve() == self.out.resolve():
            raise DemoError("--jsonl and --out must be different files")
        self.config = config.replace(source={"realtime": False})
        self.engine = engine
        self.lossless = lossless
        self.on_state = on_state
        self._stop = threading.Event()
        self._pipeline: Pipeline | None = None

    def stop(self) -> None:
        """Finish early (safe from a signal handler): the video written so far is closed properly."""
        self._stop.set()
        if self._pipeline is not None:
            self._pipeline.stop()

    def run(self) -> AnnotateResult:
        from emo_stream.engines import make_engine
        from emo_stream.stream.sources.factory import open_sources

        sources = open_sources(str(self.input), self.config)  # "file not found" etc. in one line
        width, height, time_base, rate, has_audio = video_stream_params(self.input)
        recorder = _Recorder()
        states = recorder.states
        sinks: list[Sink] = [recorder]
        if self.on_state is not None:
            sinks.append(CallbackSink(self.on_state))
        if self.jsonl is not None:
            sinks.append(JsonlSink(self.jsonl))
        own_engine = self.engine is None
        engine = self.engine if self.engine is not None else make_engine(self.config)
        t0 = time.perf_counter()
        try:
            self._pipeline = Pipeline(sources, engine, sinks, self.config)
            stats = self._pipeline.run()
        finally:
            if own_engine:
                engine.close()
        t1 = time.perf_counter()
        track = StateTrack(states)
        note = f"engine: {self.config.engine.name}"
        frames_in = frames_out = 0
        if self._stop.is_set():  # stopped during the pipeline: no video at all
            return AnnotateResult(None, self.jsonl, len(states), 0, 0, "none", self.lossless, stats, t1 - t0, 0.0, True)
        # A failed render (full disk, undecodable tail) leaves no half video: the writer's
        # exit drops the temporary file on an exception and renames it into place otherwise.
        with AnnotatedVideoWriter(self.out, width, height, time_base, rate, lossless=self.lossless) as writer:
            audio = writer.copy_audio_from(self.input) if has_audio else "none"
            for frame in iter_video_frames(self.input):
                if self._stop.is_set():
                    break  # Ctrl-C while rendering: finish the file with what is written
                frames_in += 1
                src = frame.bgr()
                state, ostats = track.at(frame.t, note=note)
                writer.write(draw_overlay(src, state, ostats, recorder.others(state)), frame.pts, source=frame.frame, source_bgr=src)
                frames_out += 1
        return AnnotateResult(
            video=self.out,
            jsonl=self.jsonl,
            states=len(states),
            frames_in=frames_in,
            frames_out=frames_out,
            audio=audio,
            lossless=self.lossless,
            pipeline=stats,
            pipeline_s=t1 - t0,
            render_s=time.perf_counter() - t1,
            stopped=self._stop.is_set(),
        )


def annotate_file(input: str | Path, out: str | Path, config: StreamConfig, **kwargs) -> AnnotateResult:
    """One call: :class:`FileAnnotator` ``(input, out, config, **kwargs).run()``."""
    return FileAnnotator(input, out, config, **kwargs).run()
