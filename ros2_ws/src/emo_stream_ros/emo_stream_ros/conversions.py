"""Conversions between ROS messages and emo_stream's Python objects.

No cv_bridge (it has no usable wheel): an image is a few lines of numpy, a
CompressedImage is one ``cv2.imdecode``. Every ``*_to_*`` function that reads
input from the wire raises :class:`MalformedInput` with a ``reason`` (one of
:data:`MALFORMED_REASONS`) instead of crashing, so the node can count and skip.

Time: ROS stamps are integer nanoseconds (``sec`` + ``nanosec``). Epoch
nanoseconds (~1.7e18) as float64 seconds keep only ~0.24 us resolution, and
sums/differences of such floats lose more. The node therefore never puts
epoch seconds into the pipeline: it subtracts an integer origin (the first
input stamp of an activation, floored to a whole second) and hands the
pipeline small relative seconds; states are mapped back to exact-enough
integer nanoseconds with :func:`seconds_to_ns` (error < 1 ns for relative
times below ~1e6 s).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from emo_stream.state import EmotionState

#: Why an input message was rejected (diagnostics keys end with these).
MALFORMED_REASONS = ("encoding", "size", "empty", "out_of_order")


class MalformedInput(ValueError):
    """An input message that cannot be used; ``reason`` is one of :data:`MALFORMED_REASONS`."""

    def __init__(self, reason: str, detail: str) -> None:
        assert reason in MALFORMED_REASONS, reason
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


# -- time -------------------------------------------------------------------------------
NS = 1_000_000_000


def stamp_to_ns(stamp: Any) -> int:
    """``builtin_interfaces/Time`` (rclpy or rosbags object) -> integer nanoseconds."""
    return int(stamp.sec) * NS + int(stamp.nanosec)


def ns_to_stamp(ns: int, stamp_type: type | None = None) -> Any:
    """Integer nanoseconds -> ``builtin_interfaces/Time`` (negative clamps to 0)."""
    if stamp_type is None:
        from builtin_interfaces.msg import Time as stamp_type
    ns = max(0, int(ns))
    return stamp_type(sec=ns // NS, nanosec=ns % NS)


def seconds_to_ns(seconds: float) -> int:
    """Relative float seconds -> integer nanoseconds (rounded)."""
    return int(round(seconds * 1e9))


# -- images --------------------------------------------------------------------------------
#: encoding -> (channels, numpy dtype, channel order). 8UCx are taken as BGR(A), like OpenCV.
IMAGE_ENCODINGS: dict[str, tuple[int, str, str]] = {
    "bgr8": (3, "u1", "bgr"),
    "rgb8": (3, "u1", "rgb"),
    "bgra8": (4, "u1", "bgra"),
    "rgba8": (4, "u1", "rgba"),
    "mono8": (1, "u1", "mono"),
    "8UC1": (1, "u1", "mono"),
    "8UC3": (3, "u1", "bgr"),
    "8UC4": (4, "u1", "bgra"),
    "mono16": (1, "u2", "mono"),
    "16UC1": (1, "u2", "mono"),
}


def image_to_bgr(msg: Any) -> np.ndarray:
    """``sensor_msgs/Image`` -> H x W x 3 BGR uint8 (a copy; the message buffer is not kept).

    Checks, in order: empty (no pixels or no data) -> ``empty``; unsupported
    encoding -> ``encoding``; ``step`` smaller than a row or ``data`` not
    ``step * height`` bytes -> ``size``. Row padding (step > row) is handled;
    16-bit images are scaled to 8 bits (big-endian honoured).
    """
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    data = msg.data
    if height == 0 or width == 0 or len(data) == 0:
        raise MalformedInput("empty", f"image {width}x{height} with {len(data)} bytes")
    enc = IMAGE_ENCODINGS.get(msg.encoding)
    if enc is None:
        raise MalformedInput("encoding", f"unsupported encoding {msg.encoding!r}; supported: {', '.join(IMAGE_ENCODINGS)}")
    channels, kind, order = enc
    itemsize = 2 if kind == "u2" else 1
    row = width * channels * itemsize
    if step < row or len(data) != step * height:
        raise MalformedInput("size", f"{msg.encoding} {width}x{height}, step {step}: expected step >= {row} and {step * height} bytes, got {len(data)}")
    buf = np.frombuffer(data, dtype=np.uint8).reshape(height, step)[:, :row]
    if itemsize == 2:
        dt = np.dtype(">u2" if msg.is_bigendian else "<u2")
        img = (np.ascontiguousarray(buf).view(dt).reshape(height, width, channels) >> 8).astype(np.uint8)
    else:
        img = buf.reshape(height, width, channels)
    if order == "bgr":
        return np.ascontiguousarray(img)
    if order == "rgb":
        return np.ascontiguousarray(img[:, :, ::-1])
    if order == "bgra":
        return np.ascontiguousarray(img[:, :, :3])
    if order == "rgba":
        return np.ascontiguousarray(img[:, :, 2::-1])
    return np.ascontiguousarray(np.repeat(img, 3, axis=2))  # mono


def bgr_to_image(img: np.ndarray, stamp_ns: int = 0, frame_id: str = "", encoding: str = "bgr8") -> Any:
    """H x W x 3 BGR uint8 -> ``sensor_msgs/Image`` (``bgr8``, ``rgb8`` or ``mono8``)."""
    from sensor_msgs.msg import Image

    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"expected H x W x 3 uint8 BGR, got {img.shape} {img.dtype}")
    if encoding == "bgr8":
        out = img
    elif encoding == "rgb8":
        out = img[:, :, ::-1]
    elif encoding == "mono8":
        out = (img.astype(np.uint16).sum(axis=2) // 3).astype(np.uint8)[:, :, None]
    else:
        raise ValueError(f"cannot encode {encoding!r}; use bgr8, rgb8 or mono8")
    out = np.ascontiguousarray(out)
    msg = Image()
    msg.header.stamp = ns_to_stamp(stamp_ns)
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(out.shape[0]), int(out.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(out.shape[1] * out.shape[2])
    msg.data = out.tobytes()
    return msg


def compressed_to_bgr(msg: Any) -> np.ndarray:
    """``sensor_msgs/CompressedImage`` (JPEG/PNG/...) -> BGR uint8, via OpenCV."""
    import cv2

    if len(msg.data) == 0:
        raise MalformedInput("empty", "compressed image with no data")
    img = cv2.imdecode(np.frombuffer(msg.data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if img is None or img.size == 0:
        raise MalformedInput("encoding", f"cannot decode compressed image (format {msg.format!r}, {len(msg.data)} bytes)")
    return img


def bgr_to_compressed(img: np.ndarray, stamp_ns: int = 0, frame_id: str = "", fmt: str = "jpeg", quality: int = 90) -> Any:
    """BGR uint8 -> ``sensor_msgs/CompressedImage`` (``jpeg`` or ``png``)."""
    import cv2
    from sensor_msgs.msg import CompressedImage

    ext = {"jpeg": ".jpg", "jpg": ".jpg", "png": ".png"}.get(fmt)
    if ext is None:
        raise ValueError(f"unsupported compressed format {fmt!r}; use jpeg or png")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if ext == ".jpg" else []
    ok, buf = cv2.imencode(ext, img, params)
    if not ok:
        raise ValueError("OpenCV could not encode the image")
    msg = CompressedImage()
    msg.header.stamp = ns_to_stamp(stamp_ns)
    msg.header.frame_id = frame_id
    msg.format = "jpeg" if ext == ".jpg" else "png"
    msg.data = buf.tobytes()
    return msg


# -- audio -----------------------------------------------------------------------------------
#: AudioInfo.sample_format -> numpy dtype of one interleaved sample.
AUDIO_FORMATS: dict[str, str] = {"S16LE": "<i2", "S32LE": "<i4", "F32LE": "<f4", "U8": "u1"}
_RAW_CODINGS = ("", "raw", "pcm", "wave")


def audio_to_array(msg: Any) -> tuple[np.ndarray, int, int]:
    """``emo_msgs/AudioDataStamped`` -> (samples as ``(frames, channels)`` PCM array, rate, channels).

    Raises :class:`MalformedInput`: ``empty`` (no bytes), ``encoding`` (unknown
    sample format or coding, zero channels or rate), ``size`` (byte count not
    a whole number of frames).
    """
    info, data = msg.info, msg.audio.data
    if len(data) == 0:
        raise MalformedInput("empty", "audio chunk with no data")
    dtype = AUDIO_FORMATS.get(str(info.sample_format).upper())
    if dtype is None or str(info.coding_format).lower() not in _RAW_CODINGS:
        raise MalformedInput(
            "encoding",
            f"unsupported audio sample_format {info.sample_format!r} / coding_format {info.coding_format!r}; supported: raw PCM {', '.join(AUDIO_FORMATS)}",
        )
    channels, rate = int(info.channels), int(info.sample_rate)
    if channels < 1 or not 1000 <= rate <= 384000:
        raise MalformedInput("encoding", f"audio with {channels} channels at {rate} Hz")
    frame_bytes = np.dtype(dtype).itemsize * channels
    if len(data) % frame_bytes:
        raise MalformedInput("size", f"{len(data)} bytes is not a whole number of {frame_bytes}-byte {info.sample_format} x{channels} frames")
    # Non-finite float samples are zeroed (and counted) by AudioConverter.
    return np.frombuffer(data, dtype=dtype).reshape(-1, channels), rate, channels


def array_to_audio(samples: np.ndarray, sample_rate: int, stamp_ns: int = 0, frame_id: str = "", sample_format: str = "S16LE") -> Any:
    """Mono float32 in [-1, 1] (or ``(frames, channels)``) -> ``emo_msgs/AudioDataStamped``."""
    from emo_msgs.msg import AudioDataStamped

    x = np.asarray(samples, dtype=np.float32)
    if x.ndim == 1:
        x = x[:, None]
    fmt = sample_format.upper()
    if fmt == "S16LE":
        pcm = np.clip(np.round(x * 32767.0), -32768, 32767).astype("<i2")
    elif fmt == "S32LE":
        pcm = np.clip(np.round(x.astype(np.float64) * 2147483647.0), -2147483648, 2147483647).astype("<i4")
    elif fmt == "F32LE":
        pcm = x.astype("<f4")
    elif fmt == "U8":
        pcm = np.clip(np.round(x * 127.0 + 128.0), 0, 255).astype("u1")
    else:
        raise ValueError(f"unsupported sample format {sample_format!r}; use one of {', '.join(AUDIO_FORMATS)}")
    msg = AudioDataStamped()
    msg.header.stamp = ns_to_stamp(stamp_ns)
    msg.header.frame_id = frame_id
    msg.info.channels = int(x.shape[1])
    msg.info.sample_rate = int(sample_rate)
    msg.info.sample_format = fmt
    msg.info.bitrate = 0
    msg.info.coding_format = "raw"
    msg.audio.data = np.ascontiguousarray(pcm).tobytes()
    return msg


# -- EmotionState -----------------------------------------------------------------------------
def _named(values: Mapping[str, float], cls: type) -> list:
    return [cls(name=str(k), value=float(v)) for k, v in values.items()]


def state_to_msg(
    state: EmotionState,
    *,
    window_start_ns: int,
    window_end_ns: int,
    source_offset_s: float = 0.0,
    frame_id: str = "",
    publish_rationale: bool = False,
    publish_transcript: bool = False,
) -> Any:
    """Python :class:`EmotionState` -> ``emo_msgs/EmotionState``.

    The caller maps the state's window (on ``state.clock``) to ROS nanoseconds.
    ``None`` valence/arousal become NaN, a ``None`` rationale age becomes -1.
    Rationale and transcript are blanked unless their publishing is opted in.
    """
    from emo_msgs.msg import EmotionState as Msg
    from emo_msgs.msg import NamedValue

    msg = Msg()
    msg.schema_version = Msg.SCHEMA_VERSION
    msg.header.stamp = ns_to_stamp(window_end_ns)
    msg.header.frame_id = frame_id
    msg.window_start = ns_to_stamp(window_start_ns)
    msg.window_end = ns_to_stamp(window_end_ns)
    msg.source_clock = state.clock
    msg.source_offset_s = float(source_offset_s)
    msg.sequence = int(state.sequence)
    msg.person_id = state.person_id
    msg.label_set = state.label_set
    msg.labels = list(state.labels)
    msg.probabilities = [float(p) for p in state.probabilities]
    msg.top_label = state.top_label
    msg.confidence = float(state.confidence)
    msg.valence = math.nan if state.valence is None else float(state.valence)
    msg.arousal = math.nan if state.arousal is None else float(state.arousal)
    msg.modalities = list(state.modalities)
    msg.rationale = state.rationale if publish_rationale else ""
    msg.rationale_age_s = -1.0 if state.rationale_age_s is None else float(state.rationale_age_s)
    msg.latency_ms = _named(state.latency_ms, NamedValue)
    msg.model_id = state.model_id
    msg.flags = list(state.flags)
    msg.signals = _named(state.signals, NamedValue)
    msg.transcript = state.transcript if publish_transcript else ""
    return msg


def msg_to_state(msg: Any, *, source_time: bool = False) -> EmotionState:
    """``emo_msgs/EmotionState`` (rclpy or rosbags object) -> Python :class:`EmotionState`.

    Times are float ROS seconds (``clock="ros"``), or with ``source_time`` the
    source clock's seconds (``ROS - source_offset_s``, ``clock=msg.source_clock``).
    Float epoch seconds have ~0.24 us resolution; use the message's integer
    stamps where that matters.
    """
    offset = float(msg.source_offset_s) if source_time else 0.0
    start = stamp_to_ns(msg.window_start) / 1e9 - offset
    end = stamp_to_ns(msg.window_end) / 1e9 - offset

    def opt(x: float) -> float | None:
        return None if not math.isfinite(x) else float(x)

    return EmotionState(
        stamp=end,
        window_start=start,
        window_end=end,
        sequence=int(msg.sequence),
        label_set=msg.label_set,
        labels=tuple(msg.labels),
        probabilities=tuple(float(p) for p in msg.probabilities),
        top_label=msg.top_label,
        confidence=float(msg.confidence),
        valence=opt(msg.valence),
        arousal=opt(msg.arousal),
        modalities=tuple(msg.modalities),
        rationale=msg.rationale,
        rationale_age_s=None if msg.rationale_age_s < 0 or not math.isfinite(msg.rationale_age_s) else float(msg.rationale_age_s),
        latency_ms={nv.name: float(nv.value) for nv in msg.latency_ms},
        model_id=msg.model_id,
        flags=tuple(msg.flags),
        signals={nv.name: float(nv.value) for nv in msg.signals},
        clock=msg.source_clock if source_time else "ros",
        transcript=msg.transcript,
        # Bags recorded before person_id existed have no such field: the primary person.
        person_id=str(getattr(msg, "person_id", "")),
    )


def key_values(d: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> list:
    """A mapping -> ``diagnostic_msgs/KeyValue`` list (floats with 4 significant decimals)."""
    from diagnostic_msgs.msg import KeyValue

    items = d.items() if isinstance(d, Mapping) else d
    out = []
    for k, v in items:
        if isinstance(v, float):
            v = "nan" if not math.isfinite(v) else f"{v:.4g}" if abs(v) < 1e4 else f"{v:.1f}"
        out.append(KeyValue(key=str(k), value=str(v)))
    return out


def diagnostic_values(status: Any) -> dict[str, str]:
    """``diagnostic_msgs/DiagnosticStatus`` -> {key: value} (for tests and tools)."""
    return {kv.key: kv.value for kv in status.values}


__all__: Sequence[str] = (
    "MALFORMED_REASONS",
    "MalformedInput",
    "array_to_audio",
    "audio_to_array",
    "bgr_to_compressed",
    "bgr_to_image",
    "compressed_to_bgr",
    "diagnostic_values",
    "image_to_bgr",
    "key_values",
    "msg_to_state",
    "ns_to_stamp",
    "seconds_to_ns",
    "stamp_to_ns",
    "state_to_msg",
)
