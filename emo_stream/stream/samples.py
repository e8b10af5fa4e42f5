"""Timestamped samples that flow from sources into the timeline.

Every sample carries its *capture* time (media time for files, the host's
monotonic clock for devices, header stamps for ROS): windows are cut by these
timestamps, never by arrival order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class VideoFrame:
    """One decoded picture.

    ``image`` is H x W x 3 uint8 in BGR order (OpenCV's convention, so face
    detectors and drawing code take it as is). ``index`` counts frames delivered
    by the source, so gaps reveal dropped frames.
    """

    t: float
    image: np.ndarray
    index: int


@dataclass(frozen=True, slots=True)
class AudioChunk:
    """Consecutive mono float32 samples in [-1, 1]; ``t`` is the first sample's time."""

    t: float
    samples: np.ndarray
    sample_rate: int

    @property
    def duration(self) -> float:
        return self.samples.shape[0] / self.sample_rate

    @property
    def end(self) -> float:
        return self.t + self.duration


@dataclass(frozen=True, slots=True)
class SourceEvent:
    """Something a consumer should know about the input at time ``t``.

    ``kind`` becomes a state flag for the windows that contain ``t``:
    ``corrupt_input`` (a packet/frame could not be decoded and was skipped),
    ``disconnected`` / ``reconnected`` (a device went away / came back),
    ``capture_overflow`` (a live capture queue dropped samples).
    """

    t: float
    kind: str
    detail: str = ""


Sample = VideoFrame | AudioChunk | SourceEvent

#: Stream names a source can provide.
VIDEO = "video"
AUDIO = "audio"
