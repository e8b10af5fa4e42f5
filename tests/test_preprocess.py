"""The shared numpy preprocessing (emo_stream.preprocess): PIL's resampling, pixels, audio inputs; no torch."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from skimage import data

from emo_stream.errors import ConfigError
from emo_stream.preprocess import center_square_box, hubert_inputs, images_to_pixels, resample_taps, resize_antialiased

SHAPES = [((48, 64), (16, 16)), ((48, 64), (224, 224)), ((300, 200), (224, 224)), ((37, 91), (32, 20)), ((480, 640), (224, 224))]


@pytest.mark.parametrize(("src", "dst"), SHAPES)
@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_resize_is_pils_and_torchs_antialiased_resampling(src, dst, mode: str) -> None:
    # a natural image (PIL rounds and clips to uint8 between its two passes, so white noise,
    # whose bicubic overshoot gets clipped there, would measure that and not the filter)
    img = np.ascontiguousarray(np.pad(data.astronaut(), ((0, 200), (0, 200), (0, 0)), mode="reflect")[60 : 60 + src[0], 90 : 90 + src[1]])
    ours = resize_antialiased(img.astype(np.float32), dst[0], dst[1], mode)
    assert ours.shape == (*dst, 3) and ours.dtype == np.float32
    pil = np.asarray(Image.fromarray(img).resize((dst[1], dst[0]), Image.BICUBIC if mode == "bicubic" else Image.BILINEAR))
    diff = np.abs(np.clip(np.round(ours), 0, 255) - pil.astype(np.float32))
    # PIL computes in fixed point with a uint8 image between passes: a few pixels at strong edges differ more
    assert np.quantile(diff, 0.999) <= 1.0 and diff.mean() < 0.25
    # torch's antialiased interpolate (float): within float32 rounding of a 0..255 image
    t = (
        F.interpolate(torch.from_numpy(img.astype(np.float32)).permute(2, 0, 1)[None], size=dst, mode=mode, align_corners=False, antialias=True)[0]
        .permute(1, 2, 0)
        .numpy()
    )
    assert np.abs(ours - t).max() < 0.02


def test_resample_taps_are_normalised_and_local() -> None:
    idx, w = resample_taps(640, 224, "bicubic")
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-6)
    assert w.shape[1] <= 12 and idx.min() >= 0 and idx.max() < 640
    same_idx, same_w = resample_taps(7, 7, "bilinear")
    dense = np.zeros((7, 7), np.float32)
    np.add.at(dense, (np.arange(7)[:, None].repeat(same_idx.shape[1], 1), same_idx), same_w)
    np.testing.assert_allclose(dense, np.eye(7), atol=1e-7)  # same size: the identity
    with pytest.raises(ConfigError, match="interpolation"):
        resample_taps(4, 2, "nearest")


def test_images_to_pixels_bgr_to_normalised_rgb_with_boxes() -> None:
    img = np.zeros((10, 20, 3), np.uint8)
    img[..., 0] = 255  # blue in BGR
    img[5:10, 10:20, 2] = 100  # some red in the lower right
    x = images_to_pixels([img], 10, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), boxes=[(10, 5, 20, 10)], interpolation="bilinear")
    assert x.shape == (1, 3, 10, 10) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, 2], 1.0, atol=1e-6)  # blue channel last in RGB, (1 - .5) / .5
    np.testing.assert_allclose(x[0, 0], (100 / 255 - 0.5) / 0.5, atol=1e-6)  # the crop is all red=100
    assert images_to_pixels([], 8, (0, 0, 0), (1, 1, 1)).shape == (0, 3, 8, 8)
    for bad in (np.zeros((4, 4), np.uint8), np.zeros((4, 4, 3), np.float32), np.zeros((0, 4, 3), np.uint8)):
        with pytest.raises(ValueError, match="uint8"):
            images_to_pixels([bad], 8, (0, 0, 0), (1, 1, 1))
    with pytest.raises(ValueError, match="empty"):
        images_to_pixels([img], 8, (0, 0, 0), (1, 1, 1), boxes=[(30, 30, 40, 40)])


def test_center_square_box() -> None:
    assert center_square_box(100, 200, 0.5) == (75, 25, 125, 75)
    assert center_square_box(3, 3) == (0, 0, 3, 3)
    with pytest.raises(ConfigError):
        center_square_box(10, 10, 0.0)


def test_hubert_inputs_normalise_pad_and_count() -> None:
    rng = np.random.default_rng(0)
    long, short = rng.normal(2.0, 3.0, 1000).astype(np.float32), np.ones(10, np.float32)
    values, lengths = hubert_inputs([long, short], normalize=True, min_samples=400)
    assert values.shape == (2, 1000) and values.dtype == np.float32 and lengths.tolist() == [1000, 400]
    assert abs(values[0].mean()) < 1e-5 and abs(values[0].std() - 1.0) < 1e-3
    assert np.all(values[1, :10] == 0.0) and np.all(values[1, 10:] == 0.0)  # constant wave: zero after normalising, then padded
    raw, _ = hubert_inputs([long], normalize=False, min_samples=1)
    np.testing.assert_array_equal(raw[0], long)
    with pytest.raises(ValueError, match="no audio"):
        hubert_inputs([], True, 1)


def test_imports_no_torch() -> None:
    code = "import sys; import emo_stream.preprocess; print(sorted(m for m in ('torch', 'cv2', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr


def test_frames_for_hop_rounds_up_and_clips() -> None:
    from emo_stream.preprocess import frames_for_hop

    assert frames_for_hop(np.array([0, 1, 320, 321, 10**7]), 320, 1500).tolist() == [1, 1, 1, 2, 1500]


@pytest.mark.parametrize(("n_mels", "chunk"), [(40, 16000), (80, 48000)])
def test_whisper_log_mel_is_transformers_feature_extractor(n_mels: int, chunk: int) -> None:
    """numpy log-mel (the robot runtime's) vs transformers' WhisperFeatureExtractor: its numpy path to 1e-6;
    its default torch path computes the STFT in float32 (pure tones: 2e-5), so 1e-4 there."""
    transformers = pytest.importorskip("transformers")
    from emo_stream.preprocess import whisper_log_mel

    rng = np.random.default_rng(0)
    waves = [(rng.standard_normal(12345) * 0.1).astype(np.float32), (np.sin(np.arange(chunk + 500) / 7) * 0.3).astype(np.float32)]
    fe = transformers.WhisperFeatureExtractor(
        feature_size=n_mels, sampling_rate=16000, hop_length=160, chunk_length=chunk // 16000, n_fft=400, padding_value=0.0
    )
    got = whisper_log_mel(waves, n_mels, chunk)
    padded = np.zeros((2, chunk), np.float32)
    for i, w in enumerate(waves):
        padded[i, : min(w.size, chunk)] = w[:chunk]
    np.testing.assert_allclose(got, fe._np_extract_fbank_features(padded, "cpu"), atol=1e-6, rtol=0)
    ref = fe(waves, sampling_rate=16000, return_tensors="np", padding="max_length", max_length=chunk, truncation=True)["input_features"]
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)
    assert got.shape == (2, n_mels, chunk // 160) and got.dtype == np.float32
