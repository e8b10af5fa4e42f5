"""Which K frames of a window the engine sees.

Selection is by timestamp, not by index, so a window with dropped frames still
gets frames spread over its whole span. Selectors return at most K distinct
frames in time order; an engine that needs exactly K (a VideoMAE clip) pads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from emo_stream.stream.samples import VideoFrame

FrameSelector = Callable[[Sequence[VideoFrame], int, float, float], list[VideoFrame]]


def select_uniform(frames: Sequence[VideoFrame], k: int, start: float, end: float) -> list[VideoFrame]:
    """Frames nearest to K evenly spaced instants (bin centres) of [start, end]."""
    if not frames:
        return []
    if len(frames) <= k:
        return list(frames)
    times = np.fromiter((f.t for f in frames), dtype=np.float64, count=len(frames))
    targets = start + (np.arange(k) + 0.5) * (end - start) / k
    picked = sorted({int(np.argmin(np.abs(times - t))) for t in targets})
    return [frames[i] for i in picked]


def select_latest(frames: Sequence[VideoFrame], k: int, start: float, end: float) -> list[VideoFrame]:
    """The K most recent frames (lowest staleness, e.g. for a face-only engine)."""
    return list(frames[-k:])


#: Keyed by the names config.FRAME_SELECTIONS validates (config sits below the
#: stream layer, so it holds the names and this module the functions;
#: tests/test_architecture.py checks the two agree).
FRAME_SELECTORS: dict[str, FrameSelector] = {
    "uniform": select_uniform,
    "latest": select_latest,
}
