"""Model-input preprocessing as plain numpy functions (in the style of openai/whisper's audio.py).

The torch encoders (:mod:`emo_stream.model.encoders`) and the exported runtime
(:mod:`emo_stream.runtime.exported`, which must run on a robot without torch)
both call these, so their inputs are the same arrays by construction, not by a
parity test that can drift. Nothing here imports torch, transformers or OpenCV.

* :func:`resize_antialiased` -- the separable, antialiased bilinear/bicubic
  resampling of PIL (and of ``torch.nn.functional.interpolate(...,
  antialias=True)``, which follows PIL): when shrinking, the filter's support
  widens by the scale factor so every input pixel contributes; bicubic uses
  a = -0.5.
* :func:`images_to_pixels` -- BGR uint8 frames -> (N, 3, S, S) float32 RGB,
  cropped to optional boxes, resized, scaled to [0, 1] and normalised.
* :func:`center_square_box` -- the stand-in face crop when there is no detector.
* :func:`hubert_inputs` -- mono waves -> padded ``input_values`` + ``lengths``.
* :func:`whisper_log_mel` -- mono 16 kHz waves -> Whisper's log-mel
  ``input_features`` (openai/whisper's ``log_mel_spectrogram`` with
  transformers' ``WhisperFeatureExtractor`` padding: zero-padded to the chunk,
  Slaney mel filters, log10 clamped 8 below the maximum, scaled).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from emo_stream.errors import ConfigError

INTERPOLATIONS = ("bilinear", "bicubic")
Box = tuple[int, int, int, int]


def center_square_box(height: int, width: int, fraction: float = 1.0) -> Box:
    """(x0, y0, x1, y1) of the centred square whose side is ``fraction`` x the shorter side."""
    if not 0 < fraction <= 1:
        raise ConfigError(f"crop fraction must be in (0, 1], got {fraction}")
    side = max(1, int(round(min(height, width) * fraction)))
    x0 = (width - side) // 2
    y0 = (height - side) // 2
    return x0, y0, x0 + side, y0 + side


def _filter(mode: str) -> tuple[float, object]:
    if mode == "bilinear":
        return 1.0, lambda x: np.clip(1.0 - np.abs(x), 0.0, None)
    a = -0.5  # PIL's (and torch's antialiased) bicubic

    def cubic(x: np.ndarray) -> np.ndarray:
        x = np.abs(x)
        return np.where(x < 1.0, ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0, np.where(x < 2.0, (((x - 5.0) * x + 8.0) * x - 4.0) * a, 0.0))

    return 2.0, cubic


def resample_taps(in_size: int, out_size: int, mode: str = "bicubic") -> tuple[np.ndarray, np.ndarray]:
    """One axis of the antialiased resize: (indices, weights), both (out_size, K); each row's weights sum to 1.

    PIL's ``precompute_coeffs``: output pixel ``i`` is centred at
    ``(i + 0.5) * scale`` in input coordinates; the filter is stretched by
    ``max(scale, 1)`` and the taps inside its support are normalised. Rows
    with fewer than K taps are padded with index 0 and weight 0, so a resize
    is a gather and a sum (K ~ 2 x support x scale, a dozen for 640 -> 224).
    """
    if mode not in INTERPOLATIONS:
        raise ConfigError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {mode!r}")
    if in_size < 1 or out_size < 1:
        raise ValueError(f"sizes must be positive, got {in_size} -> {out_size}")
    support, fn = _filter(mode)
    scale = in_size / out_size
    stretch = max(scale, 1.0)
    support *= stretch
    rows: list[tuple[int, np.ndarray]] = []
    for i in range(out_size):
        center = (i + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), in_size)
        w = fn((np.arange(lo, hi, dtype=np.float64) - center + 0.5) / stretch)  # type: ignore[operator]
        total = w.sum()
        rows.append((lo, w / total if total != 0 else w))
    k = max(len(w) for _, w in rows)
    idx = np.zeros((out_size, k), dtype=np.intp)
    wts = np.zeros((out_size, k), dtype=np.float32)
    for i, (lo, w) in enumerate(rows):
        idx[i, : len(w)] = np.arange(lo, lo + len(w))
        wts[i, : len(w)] = w
    return idx, wts


@functools.lru_cache(maxsize=64)
def _cached_taps(in_size: int, out_size: int, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """:func:`resample_taps`, kept per (sizes, mode), read-only: a stream resizes the same frame size every
    window, and building the taps (a Python loop over output pixels) was half of a 720x528 -> 224 resize."""
    idx, wts = resample_taps(in_size, out_size, mode)
    idx.setflags(write=False)
    wts.setflags(write=False)
    return idx, wts


def resize_antialiased(image: np.ndarray, height: int, width: int, mode: str = "bicubic") -> np.ndarray:
    """(H, W, C) float image -> (height, width, C) float32, antialiased; values are not clipped.

    Horizontal pass first, then vertical, as PIL and torch do.
    """
    img = np.asarray(image, dtype=np.float32)
    if img.ndim != 3:
        raise ValueError(f"expected an (H, W, C) image, got shape {img.shape}")
    h, w = img.shape[:2]
    out = img
    if w != width:
        idx, wts = _cached_taps(w, width, mode)
        out = np.einsum("hokc,ok->hoc", out[:, idx, :], wts)
    if h != height:
        idx, wts = _cached_taps(h, height, mode)
        out = np.einsum("okwc,ok->owc", out[idx, :, :], wts)
    return np.ascontiguousarray(out, dtype=np.float32)


def _check_image(i: int, img: object) -> np.ndarray:
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3 or img.shape[0] < 1 or img.shape[1] < 1:
        raise ValueError(f"image {i} must be a uint8 (H, W, 3) BGR array, got {getattr(img, 'dtype', type(img))} {getattr(img, 'shape', '')}")
    return img


def crop_to_box(img: np.ndarray, box: Box) -> np.ndarray:
    """``img`` cropped to (x0, y0, x1, y1), clipped to the image; ValueError for an empty crop."""
    x0, y0, x1, y1 = box
    h, w = img.shape[:2]
    x0, x1 = max(0, int(x0)), min(w, int(x1))
    y0, y1 = max(0, int(y0)), min(h, int(y1))
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"crop box {box} is empty for an image of {w}x{h}")
    return img[y0:y1, x0:x1]


def images_to_pixels(
    images: Sequence[np.ndarray],
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    boxes: Sequence[Box | None] | None = None,
    interpolation: str = "bicubic",
) -> np.ndarray:
    """BGR uint8 (H, W, 3) frames -> (N, 3, size, size) float32, RGB, normalised.

    Each image is optionally cropped to its box (clipped to the image), resized
    to ``size`` x ``size`` with antialiased ``interpolation`` (PIL's
    resampling, which torchvision's ``Resize`` uses on PIL images; the aspect
    ratio is not kept, as BLIP-2's eval processor and MER2023's
    ``Resize((224, 224))`` do not keep it), clipped to [0, 255], scaled to
    [0, 1] and normalised with ``mean``/``std``.
    """
    if interpolation not in INTERPOLATIONS:
        raise ConfigError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {interpolation!r}")
    if boxes is not None and len(boxes) != len(images):
        raise ValueError(f"{len(boxes)} boxes for {len(images)} images")
    out = np.zeros((len(images), 3, size, size), dtype=np.float32)
    for i, img in enumerate(images):
        img = _check_image(i, img)
        if boxes is not None and boxes[i] is not None:
            img = crop_to_box(img, boxes[i])  # type: ignore[arg-type]
        rgb = img[:, :, ::-1].astype(np.float32)
        if rgb.shape[:2] != (size, size):
            rgb = np.clip(resize_antialiased(rgb, size, size, interpolation), 0.0, 255.0)
        out[i] = rgb.transpose(2, 0, 1)
    m = np.asarray(mean, dtype=np.float32).reshape(1, 3, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(1, 3, 1, 1)
    return ((out / np.float32(255.0)) - m) / s


def hubert_inputs(waves: Sequence[np.ndarray], normalize: bool, min_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Mono float waves -> (``input_values`` (N, T) float32 zero-padded, ``lengths`` (N,) int64).

    Each wave is normalised to zero mean and unit variance when the backbone
    was trained that way (``normalize``), then padded to at least
    ``min_samples`` (the conv feature extractor's receptive field).
    """
    out = []
    for a in waves:
        a = np.asarray(a, dtype=np.float32).reshape(-1)
        if normalize and a.size > 1:
            a = (a - a.mean()) / np.sqrt(a.var() + 1e-7)
        if a.size < min_samples:
            a = np.pad(a, (0, min_samples - a.size))
        out.append(a.astype(np.float32))
    if not out:
        raise ValueError("no audio given")
    lengths = np.asarray([a.size for a in out], dtype=np.int64)
    values = np.zeros((len(out), int(lengths.max())), dtype=np.float32)
    for i, a in enumerate(out):
        values[i, : a.size] = a
    return values, lengths


def clean_wave(x: np.ndarray) -> np.ndarray:
    """Samples as a flat float32 array with NaN/inf replaced by 0 (one bad sample must not poison a window)."""
    a = np.asarray(x, dtype=np.float32).reshape(-1)
    if not np.all(np.isfinite(a)):
        a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
    return a


def resample_linear(x: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """Linear-interpolation resampling (adequate for speech features; not a band-limited resampler)."""
    if src_rate == dst_rate or x.size == 0:
        return x.astype(np.float32)
    n_out = max(1, int(round(x.size * dst_rate / src_rate)))
    t_out = np.arange(n_out) * (src_rate / dst_rate)
    return np.interp(t_out, np.arange(x.size), x).astype(np.float32)


def conv_receptive_field(kernels: Sequence[int], strides: Sequence[int]) -> int:
    """Input samples a stack of 1-D convs needs for one output frame (HuBERT's shortest valid input)."""
    rf, jump = 1, 1
    for k, s in zip(kernels, strides):
        rf += (int(k) - 1) * jump
        jump *= int(s)
    return rf


def hubert_frames(lengths: np.ndarray, kernels: Sequence[int], strides: Sequence[int]) -> np.ndarray:
    """Frames a stack of 1-D convs (HuBERT's feature extractor) makes from ``lengths`` samples
    (transformers' ``_get_feat_extract_output_lengths``); 0 for inputs shorter than the receptive field."""
    n = np.asarray(lengths, dtype=np.int64)
    for k, s in zip(kernels, strides):
        n = (n - int(k)) // int(s) + 1
    return np.maximum(n, 0)


WHISPER_N_FFT = 400
WHISPER_HOP = 160
WHISPER_RATE = 16000


def slaney_mel_filters(n_mels: int, n_fft: int = WHISPER_N_FFT, sample_rate: int = WHISPER_RATE) -> np.ndarray:
    """(n_mels, 1 + n_fft // 2) triangular mel filters, Slaney scale and area normalisation (librosa's
    ``filters.mel`` defaults; what Whisper's ``mel_filters.npz`` holds and transformers computes)."""

    def hz_to_mel(f: np.ndarray) -> np.ndarray:
        f = np.asarray(f, dtype=np.float64)
        lin = 3.0 * f / 200.0
        return np.where(f >= 1000.0, 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) * (27.0 / np.log(6.4)), lin)

    def mel_to_hz(m: np.ndarray) -> np.ndarray:
        m = np.asarray(m, dtype=np.float64)
        return np.where(m >= 15.0, 1000.0 * np.exp(np.log(6.4) / 27.0 * (m - 15.0)), 200.0 * m / 3.0)

    fft_freqs = np.linspace(0.0, sample_rate / 2, 1 + n_fft // 2)
    edges = mel_to_hz(np.linspace(hz_to_mel(np.array(0.0)), hz_to_mel(np.array(sample_rate / 2)), n_mels + 2))
    diff = np.diff(edges)
    slopes = edges[None, :] - fft_freqs[:, None]
    down = -slopes[:, :-2] / diff[:-1]
    up = slopes[:, 2:] / diff[1:]
    fb = np.maximum(0.0, np.minimum(down, up))  # (freq bins, n_mels)
    fb *= 2.0 / (edges[2 : n_mels + 2] - edges[:n_mels])
    return fb.T


def whisper_log_mel(waves: Sequence[np.ndarray], n_mels: int, chunk_samples: int) -> np.ndarray:
    """Mono 16 kHz waves -> (N, n_mels, chunk_samples // 160) float32 log-mel, each wave cut or zero-padded
    to ``chunk_samples`` first (transformers' ``padding="max_length", truncation=True``).

    Periodic Hann window of 400, hop 160, centred frames (reflect padding), power spectrum, the last frame
    dropped, ``log10(max(mel, 1e-10))`` floored at 8 below the wave's maximum, then ``(x + 4) / 4``.
    Computed in float64, so float32 implementations agree to ~1e-6.
    """
    if not waves:
        raise ValueError("no audio given")
    filters = slaney_mel_filters(n_mels)
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(WHISPER_N_FFT) / WHISPER_N_FFT)
    n_frames = chunk_samples // WHISPER_HOP
    out = np.zeros((len(waves), n_mels, n_frames), dtype=np.float32)
    half = WHISPER_N_FFT // 2
    for i, w in enumerate(waves):
        x = np.zeros(chunk_samples, dtype=np.float64)
        a = np.asarray(w, dtype=np.float64).reshape(-1)[:chunk_samples]
        x[: a.size] = a
        x = np.pad(x, (half, half), mode="reflect")
        starts = np.arange(n_frames + 1) * WHISPER_HOP
        frames = x[starts[:, None] + np.arange(WHISPER_N_FFT)[None, :]] * window
        power = np.abs(np.fft.rfft(frames, axis=1)) ** 2  # (frames + 1, bins)
        mel = filters @ power[:-1].T
        log = np.log10(np.maximum(mel, 1e-10))
        log = np.maximum(log, log.max() - 8.0)
        out[i] = (log + 4.0) / 4.0
    return out


def frames_for_hop(lengths: np.ndarray, hop: int, max_frames: int) -> np.ndarray:
    """Frames of a hop-``hop`` front end covering ``lengths`` samples, in [1, max_frames] (Whisper: hop 320)."""
    n = (np.asarray(lengths, dtype=np.int64) + hop - 1) // hop
    return np.clip(n, 1, max_frames)


__all__ = [
    "INTERPOLATIONS",
    "center_square_box",
    "clean_wave",
    "conv_receptive_field",
    "crop_to_box",
    "frames_for_hop",
    "hubert_frames",
    "hubert_inputs",
    "images_to_pixels",
    "resample_linear",
    "resample_taps",
    "resize_antialiased",
    "slaney_mel_filters",
    "whisper_log_mel",
]
