"""Turn whatever audio an input delivers into what every engine expects.

Files decode to AC3 48 kHz stereo, AAC 16 kHz mono, 44.1 kHz s16 WAV ...;
microphones deliver int16 interleaved at the device's native rate. Engines see
one thing only: mono float32 in [-1, 1] at ``AudioConfig.sample_rate``. This
module is the single place that conversion happens, so a file and a microphone
carrying the same sound produce the same samples.

Design choices (and why):

* Resampling uses PyAV's :class:`av.AudioResampler` (libswresample), kept alive
  across chunks: a resampler restarted per chunk would reset its filter state at
  every chunk boundary and click. One resampler implementation for the whole
  project also means file and microphone audio are filtered identically.
* Down-mixing is a plain mean of the channels, done here rather than by
  libswresample. swresample mixes stereo to mono as ``0.707 * (L + R)``, which
  makes a centred voice 3 dB louder than the mono original, and it refuses
  (or guesses) for layouts with unknown channel order, such as WAV files that
  report only "2 channels". A mean keeps a centred source at its level for any
  channel count.
* NaN/inf are replaced with zeros (and counted) before anything else: one NaN
  inside a resampler's filter would smear NaN over the following samples, and
  downstream features would silently become NaN.
* Float audio beyond +-1 (legal in float WAV/FLAC, e.g. a mix with too little
  headroom) is scaled down, not clipped: clipping flattens the loudest parts
  into a square wave that prosody reads as a shouting voice. The gain only
  ever falls (to 1 / the highest peak so far), so the level is stable once
  the file's peak has been seen. It is counted, and so is *recorded* clipping
  (runs of full-scale samples, e.g. a saturated int16 microphone), which no
  gain can undo.
* Channels that cancel (L = -R: one wire of a balanced cable, or a phase
  inverted mic) make the mean silent although every channel is loud. When the
  mean holds far less energy than the channels, the loudest channel is used
  instead (from then on: switching back and forth would change the level).
* A DC offset (cheap USB interfaces, some float files) shifts every sample:
  energy and voice detection read it as sound. A slow running mean of the
  audio is tracked; once it exceeds :data:`DC_OFFSET_LIMIT` it is subtracted
  from then on. Clean audio (no offset) is passed through bit-exactly.

Each condition is counted on the converter; :class:`AudioStamper` turns the
counts into :class:`~emo_stream.stream.samples.SourceEvent` flags for the
windows they fall in, and stamps the converted audio on one continuous clock,
for every input that carries audio (files, microphones, ROS topics).
"""

from __future__ import annotations

from collections.abc import Callable

import av
import numpy as np

from emo_stream.stream.samples import AudioChunk, Sample
from emo_stream.stream.sources.base import ConditionEvents

_INT_SCALE = {
    np.dtype(np.int8): 128.0,
    np.dtype(np.int16): 32768.0,
    np.dtype(np.int32): 2147483648.0,
    np.dtype(np.int64): 9223372036854775808.0,
}

_EMPTY = np.zeros(0, dtype=np.float32)

#: |sample| at or above this is full scale (int16 32767 is 0.99997).
FULL_SCALE = 0.999
#: This many consecutive full-scale samples in a channel are recorded clipping
#: (a loud but clean recording touches full scale in single samples only).
CLIP_RUN = 3
#: The mean of the channels holding less than this fraction of the channels'
#: energy (-20 dB) means they cancel; checked only above :data:`CANCEL_MIN_ENERGY`.
CANCEL_RATIO = 0.01
#: Mean channel energy below which a block is silence and cancellation is not judged (-60 dBFS).
CANCEL_MIN_ENERGY = 1e-6
#: Time constant of the running mean that estimates a DC offset, seconds.
DC_TAU_S = 1.0
#: A running mean beyond this (-34 dBFS) is a DC offset and is removed from then on.
DC_OFFSET_LIMIT = 0.02
#: Audio seen before the DC estimate is trusted, seconds.
DC_MIN_S = 0.25

#: A jump of an input block's capture time beyond the samples counted so far
#: larger than this is a real gap (lost packets, a cut in the file, an
#: overflowing device): the audio clock restarts at the block's time. Smaller
#: deviations are container jitter or scheduling noise and are absorbed, so
#: timestamps stay continuous and a window boundary never moves samples.
AUDIO_GAP_S = 0.05


def to_float(samples: np.ndarray) -> np.ndarray:
    """Scale integer PCM to float32 in [-1, 1); floats are cast (not rescaled)."""
    dt = samples.dtype
    if dt in _INT_SCALE:
        return (samples.astype(np.float32) / np.float32(_INT_SCALE[dt])).astype(np.float32, copy=False)
    if dt == np.uint8:  # 8-bit PCM (WAV) is unsigned, centred on 128
        return (samples.astype(np.float32) - 128.0) / 128.0
    if dt.kind == "f":
        return samples.astype(np.float32, copy=False)
    raise TypeError(f"unsupported audio sample type {dt}")


class AudioConverter:
    """Streaming converter: any PCM chunk in, mono float32 at ``out_rate`` out.

    Feed chunks in capture order with :meth:`convert` (numpy input, e.g. a
    microphone) or :meth:`convert_frame` (a decoded PyAV frame); each call
    returns the samples ready so far (the resampler holds back a few samples of
    filter delay, which come out with the next call or :meth:`flush`). The
    output of a call may be empty. Output sample ``k`` (counting from the start
    or the last flush) corresponds to input time ``k / out_rate``: the
    resampler adds no delay, so callers can timestamp by counting samples.

    Attributes:
        out_rate: output sample rate in Hz.
        nonfinite_samples: NaN/inf input values replaced by zeros so far.
        gain: scale applied to float input that went beyond +-1 (1.0 when it never did).
        overrange_samples: input values beyond +-1 (scaled by ``gain``, not clipped).
        clipped_samples: samples inside runs of full-scale values (recorded clipping).
        cancel_blocks: multi-channel blocks whose channels cancelled.
        single_channel: the channel used instead of the mean since channels cancelled, or None.
        dc_offset: the DC offset removed (None while none was found).
        dc_blocks: blocks from which a DC offset was removed.
    """

    def __init__(self, out_rate: int = 16000) -> None:
        if out_rate <= 0:
            raise ValueError(f"out_rate must be > 0, got {out_rate}")
        self.out_rate = int(out_rate)
        self.nonfinite_samples = 0
        self.gain = 1.0
        self.overrange_samples = 0
        self.clipped_samples = 0
        self.cancel_blocks = 0
        self.single_channel: int | None = None
        self.dc_offset: float | None = None
        self.dc_blocks = 0
        self._dc_mean = 0.0
        self._dc_seen_s = 0.0
        self._in_rate: int | None = None
        self._resampler: av.AudioResampler | None = None

    # -- input adapters -------------------------------------------------
    def convert(self, samples: np.ndarray, sample_rate: int, channels: int | None = None, planar: bool = False) -> np.ndarray:
        """Convert one chunk of numpy PCM.

        Args:
            samples: int8/16/32/64, uint8 or float PCM. 1-D: mono, or interleaved
                when ``channels`` > 1. 2-D: ``(frames, channels)`` (interleaved,
                as sounddevice delivers it) or ``(channels, frames)`` if ``planar``.
            sample_rate: rate of this chunk in Hz; a change mid-stream flushes
                the old resampler first (its tail is part of the returned array).
            channels: channel count, required for interleaved 1-D input.
            planar: 2-D input is channel-major.
        """
        x = np.asarray(samples)
        if x.ndim == 1:
            ch = 1 if channels is None else int(channels)
            if ch < 1 or x.shape[0] % ch:
                raise ValueError(f"{x.shape[0]} samples cannot be split into {ch} interleaved channels")
            x = x.reshape(-1, ch)
        elif x.ndim == 2:
            if planar:
                x = x.T
            if channels is not None and x.shape[1] != channels:
                raise ValueError(f"chunk has {x.shape[1]} channels, expected {channels}")
        else:
            raise ValueError(f"audio chunk must be 1-D or 2-D, got shape {x.shape}")
        return self._mono_in(self._downmix(to_float(x).T, sample_rate), sample_rate)

    def convert_frame(self, frame: av.AudioFrame) -> np.ndarray:
        """Convert one decoded PyAV audio frame (any sample format and layout)."""
        if frame.samples == 0:
            return _EMPTY
        arr = frame.to_ndarray()
        n_ch = len(frame.layout.channels) or 1
        if frame.format.is_planar:
            x = arr  # (channels, samples)
        else:
            x = arr.reshape(-1, n_ch).T  # packed: (1, samples * channels)
        return self._mono_in(self._downmix(to_float(x), int(frame.sample_rate)), int(frame.sample_rate))

    # -- core -----------------------------------------------------------
    def _downmix(self, x: np.ndarray, sample_rate: int) -> np.ndarray:
        """(channels, samples) float -> conditioned mono: non-finite zeroed, over-range
        scaled, cancelling channels replaced by one, DC removed (each counted)."""
        finite = np.isfinite(x)
        if not finite.all():
            bad = int(x.size - np.count_nonzero(finite))
            self.nonfinite_samples += bad
            x = np.where(finite, x, np.float32(0.0))
        if x.shape[1] == 0:
            return _EMPTY
        x = self._scale_overrange(x)
        self._count_clipping(x)
        if x.shape[0] == 1:
            mono = x.reshape(-1)
        else:
            mono = self._mix(x)
        return self._remove_dc(np.ascontiguousarray(mono, dtype=np.float32), sample_rate)

    def _scale_overrange(self, x: np.ndarray) -> np.ndarray:
        peak = float(np.abs(x).max())
        if peak > 1.0:
            self.overrange_samples += int(np.count_nonzero(np.abs(x) > 1.0))
            self.gain = min(self.gain, 1.0 / peak)
        return x * np.float32(self.gain) if self.gain < 1.0 else x

    def _count_clipping(self, x: np.ndarray) -> None:
        if x.shape[1] < CLIP_RUN:
            return
        full = np.abs(x) >= FULL_SCALE
        if not full.any():
            return
        run = full[:, : x.shape[1] - CLIP_RUN + 1].copy()
        for k in range(1, CLIP_RUN):
            run &= full[:, k : x.shape[1] - CLIP_RUN + 1 + k]
        self.clipped_samples += int(np.count_nonzero(run))

    def _mix(self, x: np.ndarray) -> np.ndarray:
        if self.single_channel is not None and self.single_channel < x.shape[0]:
            self.cancel_blocks += 1
            return x[self.single_channel]
        mono = x.mean(axis=0, dtype=np.float32)
        per_channel = np.mean(np.square(x, dtype=np.float64), axis=1)
        energy = float(per_channel.mean())
        if energy > CANCEL_MIN_ENERGY and float(np.mean(np.square(mono, dtype=np.float64))) < CANCEL_RATIO * energy:
            self.single_channel = int(np.argmax(per_channel))
            self.cancel_blocks += 1
            return x[self.single_channel]
        return mono

    def _remove_dc(self, mono: np.ndarray, sample_rate: int) -> np.ndarray:
        n = mono.shape[0]
        if n == 0 or sample_rate <= 0:
            return mono
        dur = n / sample_rate
        mean = float(mono.mean(dtype=np.float64))
        a = min(1.0, dur / DC_TAU_S) if self._dc_seen_s > 0 else 1.0
        self._dc_mean += a * (mean - self._dc_mean)
        self._dc_seen_s += dur
        if self.dc_offset is None and self._dc_seen_s >= DC_MIN_S and abs(self._dc_mean) > DC_OFFSET_LIMIT:
            self.dc_offset = self._dc_mean
        if self.dc_offset is None:
            return mono
        self.dc_offset = self._dc_mean
        self.dc_blocks += 1
        return mono - np.float32(self.dc_offset)

    def _mono_in(self, mono: np.ndarray, sample_rate: int) -> np.ndarray:
        sample_rate = int(sample_rate)
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be > 0, got {sample_rate}")
        head = _EMPTY
        if sample_rate != self._in_rate:
            head = self.flush()
            self._in_rate = sample_rate
            if sample_rate != self.out_rate:
                self._resampler = av.AudioResampler(format="flt", layout="mono", rate=self.out_rate)
        if self._resampler is None:  # same rate: pass through untouched (bit-exact)
            out = mono if mono.base is None else mono.copy()  # never hand out a view of the caller's buffer
        elif mono.shape[0] == 0:
            out = _EMPTY
        else:
            frame = av.AudioFrame.from_ndarray(mono.reshape(1, -1), format="flt", layout="mono")
            frame.sample_rate = sample_rate
            out = self._collect(self._resampler.resample(frame))
        if head.shape[0]:
            out = np.concatenate([head, out])
        return _clip(out)

    def flush(self) -> np.ndarray:
        """Return the samples the resampler still holds and reset to a fresh state.

        Call at end of input, or before a discontinuity (a gap in a file, a
        reconnected device) so the next chunk is not filtered together with
        unrelated audio.
        """
        out = _EMPTY
        if self._resampler is not None:
            out = _clip(self._collect(self._resampler.resample(None)))
        self._resampler = None
        self._in_rate = None
        return out

    @staticmethod
    def _collect(frames: list[av.AudioFrame]) -> np.ndarray:
        if not frames:
            return _EMPTY
        parts = [f.to_ndarray().reshape(-1) for f in frames]
        # copy: to_ndarray may view the frame's buffer, which PyAV can reuse
        return parts[0].copy() if len(parts) == 1 else np.concatenate(parts)


def _clip(x: np.ndarray) -> np.ndarray:
    """Keep the AudioChunk contract ([-1, 1]) even when decoders or filters overshoot."""
    if x.shape[0] and (x.max() > 1.0 or x.min() < -1.0):
        x = np.clip(x, -1.0, 1.0)
    return np.ascontiguousarray(x, dtype=np.float32)


class AudioStamper:
    """One :class:`AudioConverter` plus the audio clock, shared by every input that carries audio.

    Input blocks come with their capture time (a packet's pts, a PortAudio
    callback's time, a ROS header stamp). Output chunks are stamped
    *continuously* (the first block's time + samples emitted) because block
    times jitter; a block starting more than ``gap_s`` after the samples
    counted so far starts a new stretch: the resampler's tail is flushed on
    the old clock first, so unrelated audio is never filtered together.

    Each call returns what is ready: :class:`AudioChunk` objects, preceded by a
    :class:`SourceEvent` for each input condition the converter met in the
    block (non-finite samples: ``corrupt_input``; ``audio_overrange``,
    ``audio_clipped``, ``audio_channels_cancel``, ``audio_dc_offset``), so
    the states of the windows holding that audio carry the flag. Counts go to
    ``stats`` (a :class:`~emo_stream.stream.sources.base.SourceStats`) when given.
    """

    def __init__(self, out_rate: int, gap_s: float = AUDIO_GAP_S, stats=None) -> None:
        self.converter = AudioConverter(out_rate)
        self.out_rate = self.converter.out_rate
        self.gap_s = float(gap_s)
        self.stats = stats
        self._events = ConditionEvents()
        self._base: float | None = None  # capture time of the first sample of this stretch
        self._count = 0  # output samples emitted in this stretch
        self._expect = 0.0  # where the next input block should start

    @property
    def next_t(self) -> float | None:
        """Capture time of the next output sample (None before any audio)."""
        return None if self._base is None else self._base + self._count / self.out_rate

    def push(self, samples: np.ndarray, sample_rate: int, t: float | None, channels: int | None = None) -> list[Sample]:
        """Convert and stamp one block of numpy PCM captured at ``t`` (see :meth:`AudioConverter.convert`)."""
        x = np.asarray(samples)
        n = x.shape[0] // (channels or 1) if x.ndim == 1 else x.shape[0]
        return self._push(t, n, sample_rate, lambda: self.converter.convert(x, sample_rate, channels))

    def push_frame(self, frame: av.AudioFrame, t: float | None) -> list[Sample]:
        """Convert and stamp one decoded PyAV audio frame whose first sample is at ``t``."""
        return self._push(t, frame.samples, frame.sample_rate, lambda: self.converter.convert_frame(frame))

    def flush(self, restart: bool = False) -> list[Sample]:
        """End of input or a discontinuity: the resampler's tail, stamped on the current stretch.

        With ``restart`` the next block starts a new stretch at its own time
        whatever its distance (a device that was reopened).
        """
        out = self._chunks(self.converter.flush())
        if restart:
            self._base = None
        return out

    def _push(self, t: float | None, n_in: int, in_rate: int, convert: Callable[[], np.ndarray]) -> list[Sample]:
        out: list[Sample] = []
        if self._base is None:
            self._base = t if t is not None else 0.0
            self._count, self._expect = 0, self._base
        elif t is not None and t - self._expect > self.gap_s:
            out += self.flush()  # finish the old stretch on its own clock
            self._base, self._count, self._expect = t, 0, t
        if in_rate:
            self._expect += n_in / in_rate
        c = self.converter
        before = (c.nonfinite_samples, c.overrange_samples, c.clipped_samples, c.cancel_blocks, c.dc_blocks, c.gain)
        y = convert()
        out += self._conditions(before)
        out += self._chunks(y)
        return out

    def _conditions(self, before: tuple) -> list[Sample]:
        c = self.converter
        nonfinite, overrange, clipped, cancel, dc, gain = before
        t = self.next_t or 0.0
        found: list[tuple[str, int, str]] = []  # kind, count, detail
        if c.nonfinite_samples > nonfinite:
            found.append(("corrupt_input", c.nonfinite_samples - nonfinite, f"{c.nonfinite_samples - nonfinite} non-finite audio samples replaced by silence"))
        if c.overrange_samples > overrange:
            what = f"float audio beyond +-1 scaled by {c.gain:.3f} (not clipped)" + (" from here on" if c.gain < gain else "")
            found.append(("audio_overrange", c.overrange_samples - overrange, what))
        if c.clipped_samples > clipped:
            found.append(("audio_clipped", c.clipped_samples - clipped, f"{c.clipped_samples - clipped} samples clipped at full scale in the recording"))
        if c.cancel_blocks > cancel:
            found.append(("audio_channels_cancel", c.cancel_blocks - cancel, f"channels cancel out (L = -R); using channel {c.single_channel} alone"))
        if c.dc_blocks > dc:
            found.append(("audio_dc_offset", c.dc_blocks - dc, f"DC offset {c.dc_offset:+.3f} removed"))
        out: list[Sample] = []
        for kind, n, detail in found:
            if self.stats is not None:
                self.stats.note_condition(kind, n)
            ev = self._events.event(t, kind, detail)  # rate-limited: a whole clipped file is not 40 events a second
            if ev is not None:
                out.append(ev)
        return out

    def _chunks(self, y: np.ndarray) -> list[Sample]:
        if y.shape[0] == 0 or self._base is None:
            return []
        chunk = AudioChunk(t=self._base + self._count / self.out_rate, samples=y, sample_rate=self.out_rate)
        self._count += y.shape[0]
        if self.stats is not None:
            self.stats.audio_chunks += 1
            self.stats.audio_seconds += chunk.duration
        return [chunk]
