"""Topic inputs: subscriptions that turn ROS messages into emo_stream samples.

Callbacks run on the executor thread and only validate, convert and
:meth:`~emo_stream.stream.sources.push.PushSource.push` (which never blocks),
so a slow engine can never stall DDS. Synchronisation of video and audio is
done by emo_stream's scheduler on the *header stamps*: a window [t - W, t] is
cut once every stream has delivered data up to t (a stream silent for
``stream_timeout_s`` stops holding it back), so arrival order and transport
delay do not matter.

A message that cannot be used (unsupported encoding, size mismatch, empty
data, a stamp older than the previous one of the same stream) is counted under
``malformed_<stream>_<reason>`` and skipped.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from emo_stream.stream.downscale import downscale
from emo_stream.stream.samples import AUDIO, VIDEO, AudioChunk, VideoFrame
from emo_stream.stream.sources.audio_convert import AudioConverter
from emo_stream.stream.sources.push import PushSource
from emo_stream_ros.conversions import (
    MALFORMED_REASONS,
    NS,
    MalformedInput,
    audio_to_array,
    compressed_to_bgr,
    image_to_bgr,
    stamp_to_ns,
)

#: Audio whose stamp deviates more than this from the end of the previous chunk
#: is a discontinuity (the resampler restarts at the new stamp).
AUDIO_RESYNC_NS = 50_000_000


@dataclass
class InputCounters:
    """Counters of one activation's inputs (read by diagnostics)."""

    images: int = 0
    audio_chunks: int = 0
    audio_samples: int = 0  # at the engine's rate
    malformed: dict[str, int] = field(default_factory=lambda: collections.defaultdict(int))
    last_error: str = ""
    image_frame_id: str = ""

    def reject(self, stream: str, exc: MalformedInput) -> None:
        self.malformed[f"{stream}_{exc.reason}"] += 1
        self.last_error = f"{stream}: {exc}"

    def malformed_total(self) -> int:
        return sum(self.malformed.values())

    def snapshot(self) -> dict[str, int]:
        out = {"images": self.images, "audio_chunks": self.audio_chunks, "audio_samples": self.audio_samples}
        for stream in (VIDEO, AUDIO):
            for reason in MALFORMED_REASONS:
                key = f"{'image' if stream == VIDEO else 'audio'}_{reason}"
                out[f"malformed_{key}"] = self.malformed.get(key, 0)
        return out


class StampOrigin:
    """Maps integer ROS nanoseconds to small float seconds for the pipeline and back.

    The origin is the first stamp seen (of any stream), floored to a whole
    second, so relative times keep nanosecond precision in float64 and media
    offsets stay readable (a clip stamped origin + media time gives t = media
    time + fraction of the origin's second).
    """

    def __init__(self) -> None:
        self._origin: int | None = None
        self._lock = threading.Lock()

    @property
    def origin_ns(self) -> int | None:
        return self._origin

    def to_seconds(self, ns: int) -> float:
        with self._lock:
            if self._origin is None:
                self._origin = ns - ns % NS
        return (ns - self._origin) / 1e9

    def to_ns(self, seconds: float) -> int:
        assert self._origin is not None, "no stamp seen yet"
        return self._origin + int(round(seconds * 1e9))


class TopicInput:
    """Validates and converts image/audio messages and pushes them into ``push``.

    Args:
        push: the pipeline's source.
        origin: shared stamp origin.
        sample_rate: the engine's audio rate (mono float32 out).
        max_frame_side: downscale larger frames (0/None keeps them).
        counters: where counts go.
        warn: called with a message on the first rejection of each kind (throttling is the caller's).
    """

    def __init__(
        self,
        push: PushSource,
        origin: StampOrigin,
        sample_rate: int,
        counters: InputCounters,
        max_frame_side: int | None = None,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.push = push
        self.origin = origin
        self.sample_rate = int(sample_rate)
        self.counters = counters
        self.max_frame_side = max_frame_side or None
        self._warn = warn or (lambda msg: None)
        self._last_image_ns: int | None = None
        self._last_audio_ns: int | None = None
        self._conv = AudioConverter(self.sample_rate)
        self._conv_rate: int | None = None
        self._a_base_ns = 0
        self._a_count = 0
        self._a_expect_ns: int | None = None
        #: (pipeline pixels per message pixel, width, height) of the latest image: external
        #: face boxes (ROS4HRI ROIs, in message pixels) are mapped with it
        self.image_geometry: tuple[float, int, int] = (1.0, 0, 0)

    # -- video ------------------------------------------------------------------------
    def on_image(self, msg: Any) -> None:
        self._image(msg, image_to_bgr)

    def on_compressed(self, msg: Any) -> None:
        self._image(msg, compressed_to_bgr)

    def _image(self, msg: Any, convert: Callable[[Any], np.ndarray]) -> None:
        ns = stamp_to_ns(msg.header.stamp)
        try:
            if self._last_image_ns is not None and ns < self._last_image_ns:
                raise MalformedInput("out_of_order", f"image stamp {ns} ns is older than the previous {self._last_image_ns} ns")
            img = convert(msg)
        except MalformedInput as exc:
            self._reject("image", exc)
            return
        self._last_image_ns = ns
        w0 = img.shape[1]
        img = self._downscale(img)
        self.image_geometry = (img.shape[1] / w0, img.shape[1], img.shape[0])
        self.counters.images += 1
        self.counters.image_frame_id = msg.header.frame_id
        self.push.push(VideoFrame(self.origin.to_seconds(ns), img, self.counters.images - 1))

    def _downscale(self, img: np.ndarray) -> np.ndarray:
        return downscale(img, self.max_frame_side)

    # -- audio --------------------------------------------------------------------------
    def on_audio(self, msg: Any) -> None:
        ns = stamp_to_ns(msg.header.stamp)
        try:
            if self._last_audio_ns is not None and ns < self._last_audio_ns:
                raise MalformedInput("out_of_order", f"audio stamp {ns} ns is older than the previous {self._last_audio_ns} ns")
            pcm, rate, _channels = audio_to_array(msg)
        except MalformedInput as exc:
            self._reject("audio", exc)
            return
        self._last_audio_ns = ns
        in_dur_ns = int(round(pcm.shape[0] * 1e9 / rate))
        if rate == self.sample_rate:
            # No resampling: every chunk keeps its own exact stamp.
            mono = self._conv.convert(pcm, rate)
            self._push_audio(ns, mono)
        else:
            # The resampler holds back a few samples: stamp by counting output
            # samples from the last discontinuity.
            if rate != self._conv_rate or self._a_expect_ns is None or abs(ns - self._a_expect_ns) > AUDIO_RESYNC_NS:
                tail = self._conv.flush()
                if tail.size and self._a_expect_ns is not None:
                    self._push_audio(self._a_base_ns + int(round(self._a_count * 1e9 / self.sample_rate)), tail)
                self._conv_rate, self._a_base_ns, self._a_count = rate, ns, 0
            mono = self._conv.convert(pcm, rate)
            if mono.size:
                self._push_audio(self._a_base_ns + int(round(self._a_count * 1e9 / self.sample_rate)), mono)
                self._a_count += mono.size
        self._a_expect_ns = ns + in_dur_ns
        self.counters.audio_chunks += 1

    def _push_audio(self, ns: int, mono: np.ndarray) -> None:
        if mono.size == 0:
            return
        self.counters.audio_samples += int(mono.size)
        self.push.push(AudioChunk(self.origin.to_seconds(ns), mono, self.sample_rate))

    # -- errors ---------------------------------------------------------------------------
    def _reject(self, stream: str, exc: MalformedInput) -> None:
        key = f"{stream}_{exc.reason}"
        first = self.counters.malformed.get(key, 0) == 0
        self.counters.reject(stream, exc)
        if first:
            self._warn(f"skipping malformed {stream} message ({exc}); further ones are only counted in diagnostics")
