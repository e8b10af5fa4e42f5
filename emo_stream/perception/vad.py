"""Streaming voice-activity detection with Silero VAD (ONNX, no torch).

Why streaming and not "run VAD on each window": the engine hands over
[t - W, t] every hop H, so with W = 2 s and H = 0.5 s every sample arrives four
times. Silero is a recurrent model; running it four times on restarted state
would cost 4x and give a different answer at every window edge (the state needs
~100 ms to warm up). Instead :class:`VoiceActivityDetector` keeps one
continuous pass over the stream: :class:`AudioCursor` keeps only the samples it
has not seen, the LSTM state and the 64-sample context carry across calls, and
per-frame probabilities and speech spans are kept for a bounded history keyed by
absolute capture time. Windows are answered from that history, so a streamed
pass gives bit-for-bit the probabilities of a one-shot pass over the same audio.

Model I/O (read from ``silero_vad/utils_vad.py:OnnxWrapper`` of silero-vad 6.x,
v5/v6 ONNX): inputs ``input`` float32 (1, 64 + 512) = previous frame's last 64
samples + the new 512-sample frame (32 ms at 16 kHz), ``state`` float32
(2, 1, 128), ``sr`` int64 scalar; outputs ``output`` (1, 1) speech probability
and ``stateN`` (2, 1, 128). The ``silero_vad`` Python package is never imported
(its ``__init__`` imports torch); the file is found through
:data:`emo_stream.assets.SILERO_VAD_ONNX`.

Span logic follows silero's ``get_speech_timestamps_from_probs``: hysteresis
(speech starts at ``prob >= threshold``, may end only after ``prob <
threshold - 0.15`` for ``min_silence_s``), spans shorter than ``min_speech_s``
dropped, ``speech_pad_s`` padding, and spans longer than ``max_speech_s`` cut at
their longest internal pause (or hard-cut when there is none), so downstream
ASR always gets bounded utterances.

Input policy (decided here, relied on by the engine):

* wrong sample rate, non-1-D or integer-typed samples -> ``ValueError``: these
  are wiring bugs that no amount of running will fix, so they must fail loudly.
* NaN/inf samples -> replaced by 0 (silence) and *counted*
  (:attr:`VoiceActivityDetector.nonfinite_samples`, ``VadUpdate.nonfinite``):
  a glitching capture driver must not blind the robot for the rest of the
  stream; treating the burst as silence is the conservative reading (no false
  speech) and the count lets the engine raise a ``corrupt_input`` flag.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from emo_stream.errors import ConfigError

SAMPLE_RATE = 16000
FRAME_SAMPLES = 512  # 32 ms: the only frame size the 16 kHz Silero model accepts
CONTEXT_SAMPLES = 64  # v5/v6 models see the previous frame's tail as context
FRAME_S = FRAME_SAMPLES / SAMPLE_RATE
_STATE_SHAPE = (2, 1, 128)
#: A pause this long inside an over-long span is a candidate cut point
#: (silero's ``min_silence_at_max_speech`` = 98 ms).
_MIN_CUT_SILENCE_S = 0.098


def check_audio(samples: np.ndarray, sample_rate: int, expected_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Validate one chunk of audio and return it as float32 1-D (not a copy when already so).

    Shared by the voice stages so they agree on what is an error (see module doc).
    """
    if sample_rate != expected_rate:
        raise ValueError(f"audio must be {expected_rate} Hz mono, got {sample_rate} Hz; resample before the perception stages")
    arr = np.asarray(samples)
    if arr.ndim == 2 and 1 in arr.shape:
        arr = arr.reshape(-1)
    if arr.ndim != 1:
        raise ValueError(f"audio must be 1-D mono samples, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"audio must be float samples in [-1, 1], got dtype {arr.dtype} (divide int16 by 32768)")
    return arr.astype(np.float32, copy=False)


def clean_nonfinite(samples: np.ndarray) -> tuple[np.ndarray, int]:
    """Replace NaN/inf by 0 (silence); return (clean samples, how many were replaced)."""
    bad = ~np.isfinite(samples)
    n_bad = int(np.count_nonzero(bad))
    if not n_bad:
        return samples, 0
    out = samples.copy()
    out[bad] = 0.0
    return out, n_bad


class AudioCursor:
    """Turns overlapping, timestamped windows into the stream of samples not seen yet.

    The caller hands over whole windows (start time + samples); the cursor
    returns only the part after the last sample it returned. Times are kept as
    ``origin + count / rate`` (integers), so thousands of hops do not
    accumulate float drift. A window that starts *after* the end of what was
    seen by more than ``gap_tolerance_s`` is a gap (dropped audio, a paused
    source): the cursor re-anchors there and reports it so the caller can reset
    recurrent state rather than pretend the audio was contiguous. A window that
    lies entirely in the past is ignored (call :meth:`reset` for a new stream
    whose clock restarts).
    """

    def __init__(self, sample_rate: int = SAMPLE_RATE, gap_tolerance_s: float = 0.01) -> None:
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        if gap_tolerance_s < 0:
            raise ValueError(f"gap_tolerance_s must be >= 0, got {gap_tolerance_s}")
        self.sample_rate = sample_rate
        self._tol = int(round(gap_tolerance_s * sample_rate))
        self.reset()

    def reset(self) -> None:
        self._origin: float | None = None
        self._count = 0

    @property
    def end_t(self) -> float | None:
        """Capture time just after the last sample returned so far (None before any)."""
        if self._origin is None:
            return None
        return self._origin + self._count / self.sample_rate

    def advance(self, chunk_start_t: float, samples: np.ndarray) -> tuple[float, np.ndarray, bool]:
        """Return ``(t_new, new_samples, discontinuous)`` for one window.

        ``discontinuous`` is True for the first audio and after a gap: the
        samples do not continue the previous ones.
        """
        n = int(samples.shape[0])
        if not math.isfinite(chunk_start_t):
            raise ValueError(f"chunk start time must be finite, got {chunk_start_t}")
        if self._origin is None:
            self._origin, self._count = float(chunk_start_t), n
            return float(chunk_start_t), samples, True
        end_t = self._origin + self._count / self.sample_rate  # self.end_t, known not None here
        offset = int(round((end_t - chunk_start_t) * self.sample_rate))  # index of first unseen sample
        if offset >= n:
            return end_t, samples[:0], False
        if offset >= -self._tol:
            new = samples[max(offset, 0) :]
            self._count += new.shape[0]
            return end_t, new, False
        self._origin, self._count = float(chunk_start_t), n
        return float(chunk_start_t), samples, True


@dataclass(frozen=True)
class VadConfig:
    """Silero thresholds and span rules.

    ``min_silence_s`` defaults to 0.3 s rather than silero's 0.1 s because spans
    feed ASR: splitting at every comma pause gives Whisper fragments without
    context (worse words, more model calls). ``max_speech_s`` bounds an
    utterance so ASR latency and memory stay bounded during a monologue.
    """

    threshold: float = 0.5
    neg_threshold: float | None = None  # default: max(threshold - 0.15, 0.01), as silero
    min_speech_s: float = 0.25
    min_silence_s: float = 0.3
    speech_pad_s: float = 0.1
    max_speech_s: float = 8.0
    history_s: float = 60.0
    gap_tolerance_s: float = 0.01

    def __post_init__(self) -> None:
        def req(cond: bool, msg: str) -> None:
            if not cond:
                raise ConfigError(f"vad: {msg}")

        req(0.0 < self.threshold < 1.0, f"threshold must be in (0, 1), got {self.threshold}")
        if self.neg_threshold is not None:
            req(0.0 < self.neg_threshold <= self.threshold, f"neg_threshold must be in (0, threshold], got {self.neg_threshold}")
        req(0.0 <= self.min_speech_s <= 10.0, f"min_speech_s must be in [0, 10], got {self.min_speech_s}")
        req(FRAME_S <= self.min_silence_s <= 10.0, f"min_silence_s must be in [{FRAME_S}, 10], got {self.min_silence_s}")
        req(0.0 <= self.speech_pad_s <= 1.0, f"speech_pad_s must be in [0, 1], got {self.speech_pad_s}")
        # A closed span's padding must never reach into the next span: a span can
        # only start after min_silence_s of non-speech.
        req(2 * self.speech_pad_s <= self.min_silence_s, f"speech_pad_s ({self.speech_pad_s}) must be <= min_silence_s / 2 ({self.min_silence_s / 2})")
        req(1.0 <= self.max_speech_s <= 60.0, f"max_speech_s must be in [1, 60], got {self.max_speech_s}")
        req(self.max_speech_s <= self.history_s <= 3600.0, f"history_s must be in [max_speech_s, 3600], got {self.history_s}")
        req(0.0 <= self.gap_tolerance_s <= 1.0, f"gap_tolerance_s must be in [0, 1], got {self.gap_tolerance_s}")

    @property
    def exit_threshold(self) -> float:
        return self.neg_threshold if self.neg_threshold is not None else max(self.threshold - 0.15, 0.01)


class VadUpdate(NamedTuple):
    """What one :meth:`VoiceActivityDetector.update` did."""

    new_frames: int  # 32 ms frames run through the model
    gap: bool  # the window did not continue the previous audio: state was reset
    nonfinite: int  # NaN/inf samples replaced by silence in the new audio


class VoiceActivityDetector:
    """Silero VAD over a stream of overlapping windows (see module doc).

    Not thread-safe: one engine thread calls :meth:`update` and the queries.
    """

    def __init__(self, config: VadConfig | None = None, model_path: str | Path | None = None) -> None:
        import onnxruntime as ort

        from emo_stream.assets import SILERO_VAD_ONNX, check_model_file
        from emo_stream.runtime.onnxruntime import open_session

        self.config = config or VadConfig()
        packaged = model_path is None
        path = SILERO_VAD_ONNX.path() if model_path is None else check_model_file(Path(model_path))
        opts = ort.SessionOptions()
        # One 32 ms frame per call: thread hand-off would cost more than the math.
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self._session = open_session(path, what="silero VAD ONNX", sess_options=opts, fix=SILERO_VAD_ONNX.reinstall_hint if packaged else "")
        self._sr = np.array(SAMPLE_RATE, dtype=np.int64)
        self._cursor = AudioCursor(SAMPLE_RATE, self.config.gap_tolerance_s)
        self._probs: deque[tuple[float, float]] = deque(maxlen=int(math.ceil(self.config.history_s / FRAME_S)) + 1)
        self._spans: deque[tuple[float, float]] = deque()
        self.nonfinite_samples = 0
        self.gaps = 0
        self.frames_processed = 0
        self._reset_stream(None)

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Forget everything (a new stream, possibly with a restarted clock)."""
        self._cursor.reset()
        self._probs.clear()
        self._spans.clear()
        self._reset_stream(None)

    def _reset_stream(self, t0: float | None) -> None:
        """Start a new contiguous segment at ``t0``: fresh model state, empty tail."""
        self._state = np.zeros(_STATE_SHAPE, dtype=np.float32)
        self._context = np.zeros(CONTEXT_SAMPLES, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)
        self._seg_origin = t0  # first sample time of this contiguous segment
        self._next_frame_t = t0  # start time of the next frame to run
        self._triggered = False
        self._start = 0.0
        self._temp_end: float | None = None
        self._possible_ends: list[tuple[float, float]] = []
        self._start_padded = 0.0  # padded start of the open span
        self._ended = False  # flush() was called: the next audio starts a new segment

    @property
    def processed_until(self) -> float | None:
        """End time of the last frame run through the model (None before any)."""
        return self._next_frame_t

    @property
    def is_speaking(self) -> bool:
        """True while a span is open (speech started, not yet ended)."""
        return self._triggered

    # ------------------------------------------------------------------ input
    def update(self, chunk_start_t: float, samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> VadUpdate:
        """Consume the audio of one window; only samples not seen before are processed.

        ``chunk_start_t`` is the capture time of ``samples[0]``. Frames are
        run as soon as 512 new samples exist; up to 511 samples wait for the
        next call (or :meth:`flush`).
        """
        audio = check_audio(samples, sample_rate)
        t_new, new, discontinuous = self._cursor.advance(chunk_start_t, audio)
        gap = discontinuous and self._seg_origin is not None and not self._ended
        if gap:
            self.gaps += 1
            self._close_open_span_at_end()
        if discontinuous or self._ended:
            self._reset_stream(t_new)
        new, nonfinite = clean_nonfinite(new)
        self.nonfinite_samples += nonfinite
        if new.shape[0]:
            self._pending = np.concatenate([self._pending, new])
        n = self._run_frames()
        self._prune()
        return VadUpdate(n, gap, nonfinite)

    def flush(self) -> None:
        """End of stream: run the zero-padded last partial frame and close an open span.

        Audio given after a flush starts a new segment (fresh model state).
        """
        if self._seg_origin is None or self._next_frame_t is None or self._ended:  # both None only before any audio
            return
        if self._pending.shape[0]:
            real = self._pending.shape[0]
            self._pending = np.concatenate([self._pending, np.zeros(FRAME_SAMPLES - real, np.float32)])
            self._run_frames()
            # The padding is not audio: the stream ends at the last real sample.
            self._next_frame_t = self._next_frame_t - (FRAME_SAMPLES - real) / SAMPLE_RATE
        self._close_open_span_at_end()
        self._ended = True

    def _run_frames(self) -> int:
        n_frames = self._pending.shape[0] // FRAME_SAMPLES
        if not n_frames:
            return 0
        session, state, context, sr = self._session, self._state, self._context, self._sr
        x = np.empty((1, CONTEXT_SAMPLES + FRAME_SAMPLES), dtype=np.float32)
        probs = np.empty(n_frames, dtype=np.float32)
        for i in range(n_frames):
            x[0, :CONTEXT_SAMPLES] = context
            x[0, CONTEXT_SAMPLES:] = self._pending[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES]
            out, state = session.run(None, {"input": x, "state": state, "sr": sr})
            probs[i] = out[0, 0]
            context = x[0, -CONTEXT_SAMPLES:].copy()
        self._state, self._context = state, context
        self._pending = self._pending[n_frames * FRAME_SAMPLES :].copy()
        t0 = self._next_frame_t
        base = self._seg_origin
        assert t0 is not None and base is not None  # frames pending: update() started a segment at a time
        first_index = int(round((t0 - base) / FRAME_S))
        for i in range(n_frames):
            t = base + (first_index + i) * FRAME_S
            p = float(probs[i])
            self._probs.append((t, p))
            self._step(t, p, base)
        self._next_frame_t = base + (first_index + n_frames) * FRAME_S
        self.frames_processed += n_frames
        return n_frames

    # ------------------------------------------------------- span state machine
    def _step(self, t: float, p: float, seg_origin: float) -> None:
        """Advance silero's hysteresis state machine by one frame starting at ``t`` (in the segment from ``seg_origin``)."""
        cfg = self.config
        if p >= cfg.threshold and self._temp_end is not None:
            silence = t - self._temp_end
            if silence > _MIN_CUT_SILENCE_S:
                self._possible_ends.append((self._temp_end, silence))
            self._temp_end = None
        if p >= cfg.threshold and not self._triggered:
            self._triggered = True
            self._start = t
            self._start_padded = max(t - cfg.speech_pad_s, seg_origin)
            return
        if self._triggered and t - self._start > cfg.max_speech_s - FRAME_S - 2 * cfg.speech_pad_s:
            self._cut_long_span(t)
        if p < cfg.exit_threshold and self._triggered:
            if self._temp_end is None:
                self._temp_end = t
            if t - self._temp_end + 1e-9 < cfg.min_silence_s:
                return
            end = self._temp_end
            if end - self._start > cfg.min_speech_s:
                self._emit(self._start_padded, end + cfg.speech_pad_s)
            self._triggered = False
            self._temp_end = None
            self._possible_ends = []

    def _cut_long_span(self, t: float) -> None:
        """Close an over-long span at its longest pause, else hard-cut at ``t``; speech goes on."""
        if self._possible_ends:
            end, dur = max(self._possible_ends, key=lambda e: e[1])
            half = min(self.config.speech_pad_s, dur / 2)
            self._emit(self._start_padded, end + half)
            self._start = end + dur
            self._start_padded = self._start - half
        else:
            self._emit(self._start_padded, t)
            self._start = self._start_padded = t
        self._possible_ends = []

    def _emit(self, t0: float, t1: float) -> None:
        self._spans.append((t0, t1))

    def _close_open_span_at_end(self) -> None:
        """The segment ends (gap / flush): an open span ends with the audio, unpadded."""
        if self._triggered and self._next_frame_t is not None:
            end = self._next_frame_t
            if end - self._start > self.config.min_speech_s:
                self._emit(self._start_padded, end)
        self._triggered = False
        self._temp_end = None
        self._possible_ends = []

    def _prune(self) -> None:
        latest = self._next_frame_t
        if latest is None:
            return
        horizon = latest - self.config.history_s
        while self._spans and self._spans[0][1] < horizon:
            self._spans.popleft()

    # ----------------------------------------------------------------- queries
    def _open_span(self) -> tuple[float, float] | None:
        if not self._triggered or self._next_frame_t is None:
            return None
        end = self._next_frame_t
        if self._temp_end is not None:
            end = min(end, self._temp_end + self.config.speech_pad_s)
        if end - self._start <= self.config.min_speech_s:
            return None
        return (self._start_padded, end)

    def closed_spans(self, start_t: float = -math.inf, end_t: float = math.inf) -> list[tuple[float, float]]:
        """Final spans (speech followed by silence, cut, or stream end) overlapping [start_t, end_t], unclipped.

        A closed span never changes again, so consumers such as ASR may key
        their caches on it.
        """
        return [s for s in self._spans if s[1] > start_t and s[0] < end_t]

    def speech_spans(self, start_t: float, end_t: float, *, clip: bool = True, include_open: bool = True) -> list[tuple[float, float]]:
        """Speech spans overlapping [start_t, end_t], in time order.

        ``include_open`` adds the span still in progress (ending at the last
        processed frame); ``clip`` trims spans to the query interval.
        """
        spans = self.closed_spans(start_t, end_t)
        if include_open:
            open_span = self._open_span()
            if open_span is not None and open_span[1] > start_t and open_span[0] < end_t:
                spans.append(open_span)
        if clip:
            spans = [(max(a, start_t), min(b, end_t)) for a, b in spans]
            spans = [(a, b) for a, b in spans if b > a]
        return spans

    def speech_ratio(self, start_t: float, end_t: float) -> float:
        """Fraction of [start_t, end_t] covered by speech spans (open span included), in [0, 1]."""
        if end_t <= start_t:
            return 0.0
        covered = sum(b - a for a, b in self.speech_spans(start_t, end_t))
        return float(min(1.0, max(0.0, covered / (end_t - start_t))))

    def probabilities(self, start_t: float, end_t: float) -> tuple[np.ndarray, np.ndarray]:
        """(frame start times, speech probabilities) of the frames starting in [start_t, end_t)."""
        sel = [(t, p) for t, p in self._probs if start_t <= t < end_t]
        if not sel:
            return np.zeros(0), np.zeros(0, dtype=np.float32)
        ts, ps = zip(*sel)
        return np.asarray(ts), np.asarray(ps, dtype=np.float32)


def merge_spans(spans: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """Union of possibly overlapping spans, sorted (helper for consumers that pool spans)."""
    out: list[tuple[float, float]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out
