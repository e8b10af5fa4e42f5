"""AudioConverter: any PCM in, mono float32 at the target rate out, streaming."""

from __future__ import annotations

import av
import numpy as np
import pytest

from emo_stream.stream.sources.audio_convert import AudioConverter


def _sine(freq: float, rate: int, seconds: float, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _irregular_chunks(x: np.ndarray, seed: int = 0) -> list[np.ndarray]:
    """Split like a real device/decoder would: chunk sizes that vary, some tiny."""
    rng = np.random.default_rng(seed)
    out, i = [], 0
    while i < len(x):
        n = int(rng.integers(1, 3000))
        out.append(x[i : i + n])
        i += n
    return out


def _stream(conv: AudioConverter, chunks, rate: int) -> np.ndarray:
    parts = [conv.convert(c, rate) for c in chunks] + [conv.flush()]
    return np.concatenate(parts)


def test_int16_mono_at_target_rate_is_bit_exact() -> None:
    x = (np.arange(-32768, 32768, 7, dtype=np.int32)).astype(np.int16)
    y = AudioConverter(16000).convert(x, 16000)
    assert y.dtype == np.float32 and y.ndim == 1
    np.testing.assert_array_equal(y, x.astype(np.float32) / 32768.0)


def test_output_never_views_the_callers_buffer() -> None:
    x = np.linspace(-0.5, 0.5, 100, dtype=np.float32)
    y = AudioConverter(16000).convert(x, 16000)
    x[:] = 0.0  # a device driver reusing its buffer
    assert np.abs(y).max() == pytest.approx(0.5)


def test_stereo_downmix_is_the_channel_mean() -> None:
    s = (_sine(300, 16000, 0.1) * 32767).astype(np.int16)
    conv = AudioConverter(16000)
    same = conv.convert(np.stack([s, s], axis=1), 16000)  # centred voice keeps its level
    np.testing.assert_allclose(same, s / 32768.0, atol=1e-7)
    left_only = conv.convert(np.stack([s, np.zeros_like(s)], axis=1), 16000)
    np.testing.assert_allclose(left_only, s / 65536.0, atol=1e-7)
    assert conv.cancel_blocks == 0 and conv.single_channel is None


def test_cancelling_channels_fall_back_to_one_channel() -> None:
    """L = -R: the mean is silence although both channels are loud; use one channel, count it."""
    s = (_sine(300, 16000, 0.1) * 32767).astype(np.int16)
    conv = AudioConverter(16000)
    y = conv.convert(np.stack([s, -s], axis=1), 16000)
    np.testing.assert_allclose(y, s / 32768.0, atol=1e-7)
    assert conv.cancel_blocks == 1 and conv.single_channel == 0
    # sticky: the level must not jump when a later block happens to be less cancelling
    y2 = conv.convert(np.stack([s, s // 2], axis=1), 16000)
    np.testing.assert_allclose(y2, s / 32768.0, atol=1e-7)
    # silence is never judged (no energy, nothing cancels)
    quiet = AudioConverter(16000)
    quiet.convert(np.zeros((1600, 2), np.int16), 16000)
    assert quiet.cancel_blocks == 0


def test_interleaved_planar_and_flat_layouts_agree() -> None:
    rng = np.random.default_rng(1)
    frames = rng.integers(-20000, 20000, size=(480, 3), dtype=np.int16)  # (frames, channels)
    conv = AudioConverter(16000)
    a = conv.convert(frames, 16000)
    b = conv.convert(frames.T.copy(), 16000, planar=True)
    c = conv.convert(frames.reshape(-1), 16000, channels=3)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
    np.testing.assert_allclose(a, frames.astype(np.float32).mean(axis=1) / 32768.0, atol=1e-6)


@pytest.mark.parametrize(
    ("dtype", "lo", "mid", "hi"),
    [
        (np.int16, -32768, 0, 32767),
        (np.int32, -(2**31), 0, 2**31 - 1),
        (np.uint8, 0, 128, 255),  # 8-bit PCM is unsigned around 128
        (np.float64, -1.0, 0.0, 1.0),
    ],
)
def test_sample_types_scale_to_unit_range(dtype, lo, mid, hi) -> None:
    y = AudioConverter(16000).convert(np.array([lo, mid, hi], dtype=dtype), 16000)
    assert y[0] == -1.0
    assert y[1] == 0.0
    assert 1.0 - 1 / 128 <= y[2] <= 1.0


def test_resampling_keeps_duration_frequency_and_timing() -> None:
    x = _sine(440, 48000, 1.0)
    y = _stream(AudioConverter(16000), _irregular_chunks(x), 48000)
    assert len(y) == 16000
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    assert np.argmax(spectrum) * 16000 / len(y) == pytest.approx(440, abs=2)
    # an impulse at 0.5 s comes out at 0.5 s: counting samples gives the right timestamps
    imp = np.zeros(48000, np.float32)
    imp[24000] = 1.0
    z = _stream(AudioConverter(16000), _irregular_chunks(imp, seed=3), 48000)
    assert int(np.argmax(np.abs(z))) == 8000


def test_chunk_boundaries_do_not_click() -> None:
    """Streaming through one resampler == converting the whole signal at once."""
    x = _sine(440, 44100, 1.0)
    whole = _stream(AudioConverter(16000), [x], 44100)
    chunked = _stream(AudioConverter(16000), _irregular_chunks(x, seed=7), 44100)
    assert len(whole) == len(chunked)
    np.testing.assert_allclose(chunked, whole, atol=1e-5)
    # the failure this guards against: a fresh resampler per chunk clicks at every boundary
    naive = np.concatenate([_stream(AudioConverter(16000), [c], 44100) for c in _irregular_chunks(x, seed=7)])
    n = min(len(naive), len(whole))
    assert np.abs(naive[:n] - whole[:n]).max() > 0.01


def test_nan_and_inf_become_counted_zeros() -> None:
    x = _sine(200, 48000, 0.2)
    x[[10, 500, 4000]] = np.nan
    x[[20, 7000]] = [np.inf, -np.inf]
    conv = AudioConverter(16000)
    y = np.concatenate([conv.convert(c, 48000) for c in np.array_split(x, 7)] + [conv.flush()])
    assert conv.nonfinite_samples == 5
    assert np.isfinite(y).all()  # one NaN inside the resampler would have poisoned everything after it
    assert len(y) == 3200


def test_rate_change_mid_stream_flushes_the_old_rate() -> None:
    conv = AudioConverter(16000)
    a = conv.convert(_sine(300, 48000, 0.5), 48000)
    b = conv.convert(_sine(300, 16000, 0.25), 16000)  # same rate as output: passthrough after the tail
    assert len(a) + len(b) == 8000 + 4000


def test_pyav_frames_packed_and_planar() -> None:
    rng = np.random.default_rng(5)
    pcm = rng.integers(-30000, 30000, size=(1024, 2), dtype=np.int16)
    packed = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="stereo")
    packed.sample_rate = 16000
    planar = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm.T / 32768.0, dtype=np.float32), format="fltp", layout="stereo")
    planar.sample_rate = 16000
    conv = AudioConverter(16000)
    expect = conv.convert(pcm, 16000)
    np.testing.assert_allclose(conv.convert_frame(packed), expect, atol=1e-7)
    np.testing.assert_allclose(conv.convert_frame(planar), expect, atol=1e-7)


def test_float_audio_beyond_unit_range_is_scaled_not_clipped() -> None:
    """Clipping would flatten the loud parts into a square wave (read as shouting); scaling keeps the shape."""
    conv = AudioConverter(16000)
    x = _sine(200, 16000, 0.2, amp=2.0)
    y = conv.convert(x, 16000)
    assert conv.overrange_samples > 0 and conv.gain == pytest.approx(0.5, abs=1e-3)
    np.testing.assert_allclose(y, x * conv.gain, atol=1e-6)  # same waveform, no flat tops
    assert conv.clipped_samples == 0
    # the gain only ever falls, so the level stays put after the peak
    later = conv.convert(_sine(200, 16000, 0.1, amp=1.0), 16000)
    assert np.abs(later).max() == pytest.approx(0.5, abs=1e-3)


def test_recorded_clipping_is_counted() -> None:
    """A saturated int16 recording (flat runs at full scale) cannot be repaired, only reported."""
    x = np.clip(_sine(200, 16000, 0.2, amp=3.0), -1, 1)
    conv = AudioConverter(16000)
    conv.convert((x * 32767).astype(np.int16), 16000)
    assert conv.clipped_samples > 100
    clean = AudioConverter(16000)
    clean.convert((_sine(200, 16000, 0.2, amp=0.99) * 32767).astype(np.int16), 16000)
    assert clean.clipped_samples == 0


def test_dc_offset_is_removed_once_found_and_clean_audio_is_untouched() -> None:
    x = _sine(200, 16000, 1.0, amp=0.3)
    conv = AudioConverter(16000)
    y = np.concatenate([conv.convert(c, 16000) for c in np.array_split(x + 0.2, 20)])
    assert conv.dc_offset == pytest.approx(0.2, abs=0.01) and conv.dc_blocks > 0
    assert abs(float(y[len(y) // 2 :].mean())) < 0.01  # after detection the offset is gone
    clean = AudioConverter(16000)
    out = np.concatenate([clean.convert(c, 16000) for c in np.array_split(x, 20)])
    assert clean.dc_offset is None
    np.testing.assert_array_equal(out, x)  # bit-exact pass-through


def test_resampler_overshoot_is_clipped_to_unit_range() -> None:
    """Filter ringing on full-scale input may overshoot +-1; the AudioChunk contract still holds."""
    conv = AudioConverter(16000)
    square = np.sign(_sine(1000, 48000, 0.2)).astype(np.float32)
    y = np.concatenate([conv.convert(square, 48000), conv.flush()])
    assert np.abs(y).max() <= 1.0


def test_bad_shapes_are_rejected() -> None:
    conv = AudioConverter(16000)
    with pytest.raises(ValueError):
        conv.convert(np.zeros(5, np.int16), 16000, channels=2)
    with pytest.raises(ValueError):
        conv.convert(np.zeros((2, 2, 2), np.int16), 16000)
    with pytest.raises(TypeError):
        conv.convert(np.zeros(4, dtype=np.complex64), 16000)
