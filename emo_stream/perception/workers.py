"""Incremental perception: analyse every sample once, as it arrives, on worker threads.

Why: cutting a window used to run face detection, expression, VAD and prosody
on the window's new samples, on the thread that emits states, so each state
paid for all of it at once (plus the LLM) and was ~1 s late on 2 cores. Here
the timeline's samples are handed to workers as they arrive (the pipeline calls
``Engine.observe``); each worker analyses its stream in capture order and
writes results into a bounded buffer keyed by capture time. Cutting a window
then only *reads* results that already exist and fuses them.

Pieces:

* :class:`TimedBuffer` - bounded, time-ordered, thread-safe results of one stream.
* :class:`SampleWorker` - one thread, a bounded FIFO, in-order handling. In
  lossless mode ``submit`` blocks when the queue is full (back-pressure keeps
  memory bounded and nothing is skipped) and the engine calls
  :meth:`SampleWorker.wait_idle` before cutting, so results are deterministic;
  live, ``submit`` never blocks: the oldest queued item is dropped and counted.
* :class:`LatestWins` - a worker with at most one waiting job: a new job
  replaces the waiting one (never queued). Used for LLM label scoring and
  rationales, whose inputs go stale faster than they can be queued.
* :class:`FaceAnalyzer` - face detection on a downscaled copy (the detector's
  ``max_side``), crop from the full frame, expression; at ``fps`` analysed
  frames per second of capture time; optional tracking between detections.
* :class:`VoiceAnalyzer` - per audio chunk: resample to 16 kHz once (one shared
  streaming resampler), VAD, prosody, and finished speech spans to ASR.

Every worker charges its CPU time (``time.thread_time``) to a stage of a
:class:`~emo_stream.threads.StageClock`.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

from emo_stream.stream.samples import AudioChunk, VideoFrame
from emo_stream.threads import StageClock

log = logging.getLogger(__name__)

T = TypeVar("T")
J = TypeVar("J")
R = TypeVar("R")

#: The rate every voice stage runs at (silero VAD, YIN prosody, Whisper).
VOICE_RATE = 16000


def lower_thread_priority(nice: int) -> None:
    """Raise the calling thread's nice value by ``nice`` (Linux: per thread; elsewhere a no-op).

    The reasoner's workers are the only stages that can use a core for 100s of
    ms; niced, they yield to perception and ASR whenever those have work, so the
    fast path and the transcript never queue behind a rationale.
    """
    if nice <= 0:
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except (AttributeError, OSError):
        pass


class TimedBuffer(Generic[T]):
    """Results keyed by capture time, bounded by count and by age; thread-safe.

    Items are appended in capture order by one producer; an item older than the
    newest is refused (counted in ``out_of_order``) so reads stay sorted.
    """

    def __init__(self, max_items: int, horizon_s: float) -> None:
        if max_items < 1 or horizon_s <= 0:
            raise ValueError(f"TimedBuffer needs max_items >= 1 and horizon_s > 0, got {max_items}, {horizon_s}")
        self.horizon_s = horizon_s
        self._items: collections.deque[tuple[float, T]] = collections.deque(maxlen=max_items)
        self._lock = threading.Lock()
        self.out_of_order = 0

    def append(self, t: float, item: T) -> bool:
        with self._lock:
            if self._items and t < self._items[-1][0]:
                self.out_of_order += 1
                return False
            self._items.append((t, item))
            while self._items and self._items[0][0] < t - self.horizon_s:
                self._items.popleft()
            return True

    def between(self, start: float, end: float) -> list[T]:
        """Items with ``start <= t < end``, oldest first."""
        with self._lock:
            return [item for t, item in self._items if start <= t < end]

    @property
    def newest_t(self) -> float | None:
        with self._lock:
            return self._items[-1][0] if self._items else None

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


class SampleWorker(Generic[T]):
    """Handles items in submission order on one daemon thread (see module doc).

    A failing item is logged and counted (``errors``); the worker carries on,
    so one bad frame cannot stop the stream's perception.
    """

    def __init__(self, name: str, handle: Callable[[T], Any], clock: StageClock, stage: str, *, capacity: int, blocking: bool) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self._handle, self._clock, self._stage = handle, clock, stage
        self.capacity, self.blocking = capacity, blocking
        self._queue: collections.deque[T] = collections.deque()
        self._cond = threading.Condition()
        self._pending = 0  # queued + being handled
        self._stop = False
        self.handled = 0
        self.dropped = 0
        self.errors = 0
        self.last_error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: T) -> bool:
        """Queue ``item``; False if an older queued item was dropped to make room (live only)."""
        with self._cond:
            if self._stop:
                return False
            dropped = False
            if self.blocking:
                self._cond.wait_for(lambda: len(self._queue) < self.capacity or self._stop)
                if self._stop:
                    return False
            elif len(self._queue) >= self.capacity:
                self._queue.popleft()
                self._pending -= 1
                self.dropped += 1
                dropped = True
            self._queue.append(item)
            self._pending += 1
            self._cond.notify_all()
            return not dropped

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until every submitted item has been handled (True) or ``timeout`` passed."""
        with self._cond:
            return self._cond.wait_for(lambda: self._pending == 0 or self._stop, timeout)

    @property
    def pending(self) -> int:
        with self._cond:
            return self._pending

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._stop)
                if self._stop:
                    return
                item = self._queue.popleft()
                self._cond.notify_all()  # room for a blocked submitter
            try:
                with self._clock.measure(self._stage):
                    self._handle(item)
            except Exception as exc:
                self.errors += 1
                self.last_error = exc
                log.exception("%s worker failed on one item", self._stage)
            with self._cond:
                self._pending -= 1
                self.handled += 1
                self._cond.notify_all()

    def close(self, timeout: float = 10.0) -> None:
        """Stop after the item being handled; queued items are discarded."""
        with self._cond:
            self._stop = True
            self._queue.clear()
            self._cond.notify_all()
        self._thread.join(timeout=timeout)


class LatestWins(Generic[J, R]):
    """Runs ``compute(job)`` on its own thread for the newest submitted job only.

    ``submit`` never blocks and never queues: a job still waiting when a newer
    one arrives is replaced (counted in ``replaced``). :meth:`latest` returns
    the newest finished result with the stamp its job was submitted with, so a
    consumer can say how old the result is.
    """

    def __init__(self, name: str, compute: Callable[[J], R], clock: StageClock, stage: str, *, nice: int = 0) -> None:
        self._compute, self._clock, self._stage = compute, clock, stage
        self._nice = nice
        self._cond = threading.Condition()
        self._job: tuple[J, float] | None = None
        self._busy = False
        self._result: tuple[R, J, float] | None = None
        self._stop = False
        self.replaced = 0
        self.computed = 0
        self.errors = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, job: J, stamp: float) -> None:
        with self._cond:
            if self._job is not None:
                self.replaced += 1
            self._job = (job, stamp)
            self._cond.notify_all()

    def latest(self) -> tuple[R, J, float] | None:
        """(result, the job it was computed for, that job's stamp), or None before the first."""
        with self._cond:
            return self._result

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no job is waiting or running (tests, end of stream)."""
        with self._cond:
            return self._cond.wait_for(lambda: (self._job is None and not self._busy) or self._stop, timeout)

    def _run(self) -> None:
        lower_thread_priority(self._nice)
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._job is not None or self._stop)
                if self._stop:
                    return
                assert self._job is not None  # woken and not stopping: a job is waiting
                job, stamp = self._job
                self._job = None
                self._busy = True
            result: tuple[R, J, float] | None = None
            try:
                with self._clock.measure(self._stage):
                    result = (self._compute(job), job, stamp)
            except Exception:
                self.errors += 1
                log.exception("%s worker failed", self._stage)
            with self._cond:
                if result is not None:
                    self._result = result
                    self.computed += 1
                self._busy = False
                self._cond.notify_all()

    def close(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._stop = True
            self._job = None
            self._cond.notify_all()
        self._thread.join(timeout=timeout)


# ----------------------------------------------------------------------------- faces


@dataclass(frozen=True)
class FaceResult:
    """One analysed frame.

    ``box`` is the primary face in full-frame pixels (None: no face), ``probs``
    its FER2013 expression probabilities; ``tracked`` means the box was carried
    over from an earlier detection instead of detected on this frame.
    """

    t: float
    index: int
    width: int
    height: int
    box: Any
    probs: np.ndarray | None
    tracked: bool = False


class FaceAnalyzer:
    """Face detection + expression for frames picked at ``fps`` per second of capture time.

    Detection runs on a copy downscaled to the detector's ``max_side``; the crop
    for the expression net is taken from the full-resolution frame (the
    detector maps boxes back), so faces are found cheaply but read sharply.

    ``detect_every`` > 1 turns on simple tracking: only every n-th analysed
    frame is run through the detector; the frames between reuse the last
    detected box (cropped from their own pixels) for at most ``track_max_s``.
    That is valid while faces move little over n / fps seconds (a person
    talking to a robot); it cuts detection cost by n.
    """

    def __init__(
        self, detector: Any, recognizer: Any, results: TimedBuffer[FaceResult], *, fps: float, detect_every: int = 1, track_max_s: float = 0.5
    ) -> None:
        if fps <= 0 or detect_every < 1 or track_max_s < 0:
            raise ValueError(f"need fps > 0, detect_every >= 1, track_max_s >= 0; got {fps}, {detect_every}, {track_max_s}")
        self.detector, self.recognizer, self.results = detector, recognizer, results
        self.period_s = 1.0 / fps
        self.detect_every, self.track_max_s = detect_every, track_max_s
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._next_due: float | None = None
            self._analysed = 0
            self._last_box: tuple[float, Any] | None = None
            self.detections = 0
        self.results.clear()

    def wants(self, frame: VideoFrame) -> bool:
        """Whether ``frame`` is due for analysis (advances the schedule; cheap, any thread).

        Frames are taken at most every ``1/fps`` s of capture time, the first
        frame always; a frame within 10 ms of its due time counts as due
        (capture jitter).
        """
        with self._lock:
            if self._next_due is not None and frame.t < self._next_due - 0.01:
                return False
            base = frame.t if self._next_due is None else self._next_due
            self._next_due = max(base + self.period_s, frame.t + self.period_s / 2)
            return True

    def analyze(self, frame: VideoFrame) -> FaceResult:
        from emo_stream.perception.face import crop_face, select_primary

        image = frame.image
        h, w = image.shape[:2]
        with self._lock:
            n = self._analysed
            self._analysed += 1
            last = self._last_box
        detect = n % self.detect_every == 0 or last is None or frame.t - last[0] > self.track_max_s
        tracked = False
        if detect:
            box = select_primary(self.detector.detect(image), image.shape)
            self.detections += 1
            with self._lock:
                self._last_box = (frame.t, box) if box is not None else None
        else:
            assert last is not None  # detect is True whenever there is no last box
            box, tracked = last[1], True
        probs = None
        if box is not None:
            probs = self.recognizer.predict([crop_face(image, box, size=64)])[0]
        result = FaceResult(frame.t, frame.index, w, h, box, probs, tracked)
        self.results.append(frame.t, result)
        return result


# ----------------------------------------------------------------------------- voice


class VoiceAnalyzer:
    """Per audio chunk: 16 kHz resampling, VAD, prosody, finished spans to ASR.

    The worker thread calls :meth:`analyze` for every chunk in capture order;
    the window thread calls :meth:`window` (and :meth:`finish` at the end of the
    stream). One lock guards the VAD / prosody state between the two; Whisper
    (``transcriber``) is called outside it.

    Audio at another rate than 16 kHz goes through one streaming
    :class:`~emo_stream.stream.sources.audio_convert.AudioConverter` (the
    project's only resampler), timestamped by counting output samples from the
    first input sample; a gap in the input (> 10 ms) flushes it and restarts
    the count at the new chunk's time, so the voice stages see the gap.
    """

    GAP_S = 0.01

    def __init__(self, vad: Any, prosody: Any, clock: StageClock) -> None:
        self.vad, self.prosody = vad, prosody
        self.transcriber: Any = None
        self._clock = clock
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.vad.reset()
            self.prosody.reset()
            self._converter: Any = None
            self._in_rate: int | None = None
            self._origin = 0.0  # capture time of the first input sample since the last (re)start
            self._in_samples = 0
            self._out_samples = 0
            self.last_t: float | None = None  # end of the last analysed audio
            self.finished = False

    # -- worker side -------------------------------------------------------------
    def analyze(self, chunk: AudioChunk) -> None:
        for t, samples in self._to_voice_rate(chunk):
            self._feed(t, samples)

    def _to_voice_rate(self, chunk: AudioChunk) -> list[tuple[float, np.ndarray]]:
        if chunk.sample_rate == VOICE_RATE:
            return [(chunk.t, chunk.samples)]
        from emo_stream.stream.sources.audio_convert import AudioConverter

        out: list[tuple[float, np.ndarray]] = []
        expected = self._origin + self._in_samples / self._in_rate if self._in_rate else None
        if self._converter is None or chunk.sample_rate != self._in_rate or expected is None or abs(chunk.t - expected) > self.GAP_S:
            if self._converter is not None:
                out.append(self._flush_converter())
            self._converter = AudioConverter(VOICE_RATE)
            self._in_rate, self._origin, self._in_samples, self._out_samples = chunk.sample_rate, chunk.t, 0, 0
        y = self._converter.convert(chunk.samples, chunk.sample_rate)
        self._in_samples += chunk.samples.shape[0]
        out.append((self._origin + self._out_samples / VOICE_RATE, y))
        self._out_samples += y.shape[0]
        return [(t, y) for t, y in out if y.shape[0]]

    def _flush_converter(self) -> tuple[float, np.ndarray]:
        tail = self._converter.flush()
        t = self._origin + self._out_samples / VOICE_RATE
        self._out_samples += tail.shape[0]
        return t, tail

    def _feed(self, t: float, samples: np.ndarray) -> None:
        with self._lock:
            self.vad.update(t, samples, VOICE_RATE)
            self.prosody.update(t, samples, VOICE_RATE)
            spans = self.vad.closed_spans()
            # The span still in progress, if any (it ends at the newest frame): ASR's partial transcripts.
            current = self.vad.speech_spans(t, math.inf, clip=False)
            open_span = current[-1] if current and current[-1] not in spans else None
            self.last_t = t + samples.shape[0] / VOICE_RATE
        if self.transcriber is not None:
            with self._clock.measure("asr_feed"):
                self.transcriber.update(t, samples, spans, VOICE_RATE, open_span=open_span)

    def finish(self) -> None:
        """End of stream: drain the resampler, close an open speech span, hand it to ASR."""
        if self.finished:
            return
        if self._converter is not None:
            t, tail = self._flush_converter()
            self._converter = None
            if tail.shape[0]:
                self._feed(t, tail)
        with self._lock:
            self.vad.flush()
            spans = self.vad.closed_spans()
            self.finished = True
            t_end = self.last_t if self.last_t is not None else 0.0
        if self.transcriber is not None:
            self.transcriber.update(t_end, np.zeros(0, np.float32), spans, VOICE_RATE)
            self.transcriber.flush()  # a sliver held for a next span that will not come

    # -- window side ---------------------------------------------------------------
    def window(self, start: float, end: float) -> tuple[list[tuple[float, float]], float, Any, int]:
        """(speech spans, speech ratio, prosody result, NaN/inf samples so far) for [start, end)."""
        with self._lock:
            spans = self.vad.speech_spans(start, end)
            ratio = self.vad.speech_ratio(start, end)
            pros = self.prosody.analyze(start, end, spans)
            return spans, ratio, pros, self.vad.nonfinite_samples
