"""Turn decoded pictures the way a player shows them (phone video rotation).

Phones record in the sensor's landscape orientation and store how to show the
picture in the container: a *display matrix* (MP4/MOV ``tkhd`` matrix,
Matroska projection, older FFmpeg's ``rotate`` tag). A portrait clip decodes
sideways unless that matrix is applied, and a face lying on its side is not
found by a frontal face detector. ``ffmpeg``/``ffplay`` apply it by default
(``-autorotate``); this module applies it the same way, with the same
decisions, so the pipeline and the demo see what a player shows.

The matrix is read from each decoded frame's side data (FFmpeg >= 7 attaches
the stream's display matrix to every frame; PyAV exposes it as
``frame.side_data``), with the stream's ``rotate`` tag as a fallback for older
FFmpeg builds. Only right angles and mirrorings are applied; a matrix with
another angle (never written by phones) is rounded to the nearest right angle,
as a picture must stay a rectangle of whole pixels.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import av
import numpy as np


@dataclass(frozen=True)
class Orientation:
    """How to turn a decoded picture into the displayed one.

    Attributes:
        quarter_turns: counter-clockwise quarter turns (``np.rot90``'s ``k``, 0-3).
        flip_v, flip_h: mirror vertically / horizontally after turning.
        degrees: the display rotation as ``ffprobe`` reports it (counter-clockwise).
    """

    quarter_turns: int = 0
    flip_v: bool = False
    flip_h: bool = False
    degrees: int = 0

    @property
    def identity(self) -> bool:
        return self.quarter_turns == 0 and not self.flip_v and not self.flip_h

    @property
    def swaps_axes(self) -> bool:
        """True when the displayed picture is the decoded one's height x width."""
        return self.quarter_turns % 2 == 1

    def display_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) of the displayed picture for a decoded ``width`` x ``height`` one."""
        return (height, width) if self.swaps_axes else (width, height)

    def apply(self, image: np.ndarray) -> np.ndarray:
        """The displayed picture (a new C-contiguous array; ``image`` is returned as is when identity)."""
        if self.identity:
            return image
        out = np.rot90(image, self.quarter_turns) if self.quarter_turns else image
        if self.flip_v:
            out = out[::-1]
        if self.flip_h:
            out = out[:, ::-1]
        return np.ascontiguousarray(out)

    def describe(self) -> str:
        parts = [f"rotated {self.degrees} degrees"] if self.quarter_turns else []
        parts += ["mirrored vertically"] * self.flip_v + ["mirrored horizontally"] * self.flip_h
        return ", ".join(parts) or "upright"


IDENTITY = Orientation()


def from_display_matrix(m: tuple[int, ...]) -> Orientation:
    """The orientation FFmpeg's ``-autorotate`` applies for a 3x3 display matrix (row-major, 16.16 fixed point).

    Mirrors fftools' choice of ``transpose``/``hflip``/``vflip`` filters: theta
    is the clockwise display angle; the sign of the matrix entries tells the
    mirrored variants apart.
    """
    sx, sy = math.hypot(m[0], m[3]), math.hypot(m[1], m[4])
    if sx == 0 or sy == 0:
        return IDENTITY  # a degenerate matrix: nothing sensible to apply
    ccw = -math.degrees(math.atan2(m[1] / sy, m[0] / sx))  # av_display_rotation_get
    theta = (-round(ccw)) % 360  # clockwise, as fftools' get_rotation
    quarter = round(theta / 90) % 4
    degrees = int(round(ccw))
    if quarter == 1:  # 90 clockwise: transpose=cclock_flip or clock
        return _make(1, flip_v=True, degrees=degrees) if m[3] > 0 else _make(3, degrees=degrees)
    if quarter == 2:  # hflip and/or vflip
        return _make(0, flip_v=m[4] < 0, flip_h=m[0] < 0, degrees=degrees)
    if quarter == 3:  # 270 clockwise: transpose=clock_flip or cclock
        return _make(3, flip_v=True, degrees=degrees) if m[3] < 0 else _make(1, degrees=degrees)
    return _make(0, flip_v=m[4] < 0, degrees=0)


def _make(quarter_turns: int, flip_v: bool = False, flip_h: bool = False, degrees: int = 0) -> Orientation:
    """One canonical spelling: mirroring both ways is a half turn."""
    if flip_v and flip_h:
        quarter_turns, flip_v, flip_h = (quarter_turns + 2) % 4, False, False
    return Orientation(quarter_turns, flip_v, flip_h, degrees)


def from_rotate_tag(value: str | None) -> Orientation:
    """The orientation for an old-style ``rotate`` stream tag (clockwise degrees)."""
    try:
        cw = int(round(float(value))) % 360 if value is not None else 0
    except ValueError:
        return IDENTITY
    quarter = round(cw / 90) % 4
    return IDENTITY if quarter == 0 else _make((4 - quarter) % 4, degrees=-cw if cw <= 180 else 360 - cw)


def _matrix_of(frame: av.VideoFrame) -> tuple[int, ...] | None:
    side = getattr(frame, "side_data", None)
    if side is None:
        return None
    try:
        for item in side:
            if "DISPLAYMATRIX" in str(getattr(item, "type", "")).upper():
                raw = bytes(item)
                if len(raw) >= 36:
                    return struct.unpack("<9i", raw[:36])
    except (TypeError, ValueError):  # older PyAV: side data not iterable as objects
        return None
    return None


def frame_orientation(frame: av.VideoFrame, stream: av.stream.Stream | None = None) -> Orientation:
    """How ``frame`` is to be shown: its display matrix, else ``stream``'s ``rotate`` tag, else upright."""
    m = _matrix_of(frame)
    if m is not None:
        return from_display_matrix(m)
    if stream is not None:
        tags = getattr(stream, "metadata", None) or {}
        return from_rotate_tag(tags.get("rotate"))
    return IDENTITY
