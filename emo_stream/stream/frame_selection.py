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


def settled_uniform_picks(frames: Sequence[VideoFrame], k: int, start: float, end: float) -> list[VideoFrame]:
    """The leading frames :func:`select_uniform` will pick for the window [start, end] whatever frames arrive
    after ``frames`` (those of the window that exist so far, in time order).

    Why: an engine can encode a later window's frames before that window is cut (the temporal view's
    older frames of a sliding window). The i-th pick is the frame nearest to the i-th bin centre; once a
    frame at or after that centre exists, no later frame is nearer (ties go to the earlier frame), so the
    pick is settled. Empty while the window holds at most K frames: then it takes every frame instead.
    """
    if len(frames) <= k:
        return []
    times = np.fromiter((f.t for f in frames), dtype=np.float64, count=len(frames))
    targets = start + (np.arange(k) + 0.5) * (end - start) / k
    picked: list[int] = []
    for t in targets:
        if t > times[-1]:
            break
        i = int(np.argmin(np.abs(times - t)))
        if not picked or picked[-1] != i:
            picked.append(i)
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
