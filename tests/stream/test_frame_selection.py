"""Frame selection: what a window will pick, known before the window is cut (settled_uniform_picks)."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from emo_stream.stream.frame_selection import select_uniform, settled_uniform_picks
from emo_stream.stream.samples import VideoFrame


def _frames(times: list[float]) -> list[VideoFrame]:
    return [VideoFrame(t, np.zeros((2, 2, 3), np.uint8), i) for i, t in enumerate(times)]


@settings(max_examples=300, deadline=None)
@given(
    gaps=st.lists(st.floats(0.005, 0.3), min_size=1, max_size=80),
    k=st.integers(1, 12),
    span=st.floats(0.2, 4.0),
    cut=st.floats(0.0, 1.0),
)
def test_settled_picks_are_what_the_window_selects_whatever_arrives_later(gaps, k, span, cut) -> None:
    """Any arrival prefix (frames with dropped stretches, any rate): the settled picks are the leading picks
    of the selection over the window's final frames."""
    times = list(np.cumsum(gaps))
    start, end = times[0], times[0] + span
    frames = [f for f in _frames(times) if start <= f.t < end]
    final = select_uniform(frames, k, start, end)
    arrived = frames[: int(round(cut * len(frames)))]
    settled = settled_uniform_picks(arrived, k, start, end)
    assert settled == final[: len(settled)]
    if len(arrived) > k and final:  # a settled prefix exists once the first bin centre is passed
        first_centre = start + 0.5 * span / k
        assert bool(settled) == (arrived[-1].t >= first_centre)


def test_a_window_still_holding_at_most_k_frames_has_no_settled_picks() -> None:
    """While it has <= K frames the selection is every frame, which later frames change."""
    frames = _frames([0.0, 0.1, 0.2, 0.3])
    assert settled_uniform_picks(frames, 4, 0.0, 2.0) == []
    # more than K: the centres 0.067 and 0.2 are passed (settled), 0.333 is not (a frame at 0.33 would win)
    assert settled_uniform_picks(frames, 3, 0.0, 0.4) == select_uniform(frames, 3, 0.0, 0.4)[:2] == [frames[1], frames[2]]


def test_24_fps_sliding_window_settles_the_bins_already_passed() -> None:
    """24 fps, window [1, 3) with K 8 (bins of 0.25 s): with frames up to 2.0 s, the picks for the bin
    centres 1.125 .. 1.875 (four of them) are settled, the rest are not."""
    frames = [f for f in _frames([i / 24 for i in range(200)]) if 1.0 <= f.t < 2.0 + 1e-9]
    settled = settled_uniform_picks(frames, 8, 1.0, 3.0)
    assert [round(f.t, 3) for f in settled] == [1.125, 1.375, 1.625, 1.875]
