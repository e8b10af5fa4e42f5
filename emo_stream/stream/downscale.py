"""Frame downscaling to a longest side, the one implementation (issue 15) used by
every source with ``source.max_frame_side`` (file, camera, ROS topics).

One place so that a frame from a file, a camera or a ROS topic comes out the same
size for the same limit (rounding, the 1-pixel floor, INTER_AREA), which is what
makes states of a recorded bag comparable with the live run.
"""

from __future__ import annotations

import numpy as np


def scaled_size(w: int, h: int, max_side: int | None) -> tuple[int, int]:
    """``(w, h)`` shrunk so the longer side is at most ``max_side`` (aspect kept; never enlarged)."""
    if max_side is None or max(w, h) <= max_side:
        return w, h
    s = max_side / max(w, h)
    return max(1, round(w * s)), max(1, round(h * s))


def downscale(img: np.ndarray, max_side: int | None) -> np.ndarray:
    """``img`` (H x W [x C]) resized with INTER_AREA to :func:`scaled_size`; the same array when it fits."""
    h, w = img.shape[:2]
    size = scaled_size(w, h, max_side)
    if size == (w, h):
        return img
    import cv2  # OpenCV is an extra: only a frame that needs shrinking needs it

    return cv2.resize(img, size, interpolation=cv2.INTER_AREA)
