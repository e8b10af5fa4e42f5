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
"""

from __future__ import annotations

import av
import numpy as np

_INT_SCALE = {
    np.dtype(np.int8): 128.0,
    np.dtype(np.int16): 32768.0,
    np.dtype(np.int32): 2147483648.0,
    np.dtype(np.int64): 9223372036854775808.0,
}

_EMPTY = np.zeros(0, dtype=np.float32)


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
    """

    def __init__(self, out_rate: int = 16000) -> None:
        if out_rate <= 0:
            raise ValueError(f"out_rate must be > 0, got {out_rate}")
        self.out_rate = int(out_rate)
        self.nonfinite_samples = 0
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
        return self._mono_in(self._downmix(to_float(x), axis=1), sample_rate)

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
        return self._mono_in(self._downmix(to_float(x), axis=0), int(frame.sample_rate))

    # -- core -----------------------------------------------------------
    def _downmix(self, x: np.ndarray, axis: int) -> np.ndarray:
        """Zero non-finite values (counting them), then average the channels."""
        finite = np.isfinite(x)
        if not finite.all():
            bad = int(x.size - np.count_nonzero(finite))
            self.nonfinite_samples += bad
            x = np.where(finite, x, np.float32(0.0))
        mono = x.mean(axis=axis, dtype=np.float32) if x.shape[axis] > 1 else x.reshape(-1)
        return np.ascontiguousarray(mono, dtype=np.float32)

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
