"""Property-based tests of the timeline and scheduler (issue 13 item 3).

Hypothesis generates whole streams: one or two streams, random interleavings of
their arrivals, gaps, duplicated and out-of-order stamps, any duration, random
polling, streams ending one at a time, file (lossless) or live scheduling. Each
run is checked against the invariants the rest of the project relies on:

* windows come in order, each once, with contiguous indices, on the hop grid
  (only the final window may end off the grid, at the last sample);
* a window is never cut before every live stream delivered data up to its end;
* selected frames and audio lie inside their window;
* the timeline stays within its configured bounds after every push;
* the end of the stream is always handled: exactly one final window, the last.

Runs are derandomised (the same examples every time, so CI cannot flake);
``EMO_STREAM_HYPOTHESIS=explore`` runs many more, random, examples locally.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emo_stream.config import BufferConfig, WindowConfig
from emo_stream.stream.samples import AUDIO, VIDEO, AudioChunk, SourceEvent, VideoFrame
from emo_stream.stream.scheduler import FINAL_WINDOW_SLACK_S, Scheduler
from emo_stream.stream.timeline import Timeline

pytestmark = pytest.mark.slow  # Hypothesis runs whole generated streams: seconds per test

RATE = 8000  # low rate: the properties do not depend on it and windows stay cheap
EXPLORE = os.environ.get("EMO_STREAM_HYPOTHESIS") == "explore"
SETTINGS = settings(
    max_examples=3000 if EXPLORE else 150,
    derandomize=not EXPLORE,
    deadline=None,
    database=None,  # no .hypothesis folder in the working tree
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
IMG = np.zeros((2, 2, 3), np.uint8)


class Clock:
    """Wall clock for live scheduling: follows the capture time of the last arrival."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


# -- strategies -------------------------------------------------------------------
def _steps(draw, n: int, normal: float) -> list[float]:
    """Time steps between consecutive samples: mostly regular, some jitter, repeats, reversals and gaps."""
    kinds = st.sampled_from(["normal"] * 6 + ["jitter", "duplicate", "backwards", "gap"])
    out = []
    for _ in range(n):
        kind = draw(kinds)
        if kind == "normal":
            out.append(normal)
        elif kind == "jitter":
            out.append(normal * draw(st.floats(0.5, 1.5)))
        elif kind == "duplicate":
            out.append(0.0)
        elif kind == "backwards":
            out.append(-draw(st.floats(0.001, 0.5)))
        else:
            out.append(draw(st.floats(0.2, 4.0)))
    return out


@st.composite
def stream_case(draw):
    streams = draw(st.sampled_from([(VIDEO,), (AUDIO,), (VIDEO, AUDIO)]))
    hop = draw(st.sampled_from([0.05, 0.1, 0.25, 0.5, 1.0]) | st.floats(0.05, 1.5))
    length = draw(st.sampled_from([hop, 2.0]) | st.floats(0.05, 3.0))
    window = WindowConfig(
        length_s=length,
        hop_s=hop,
        frames_per_window=draw(st.integers(1, 8)),
        frame_selection=draw(st.sampled_from(["uniform", "latest"])),
        emit_partial=draw(st.booleans()),
    )
    history = length + hop + draw(st.floats(0.0, 3.0))
    buffers = BufferConfig(history_s=history, max_frames=draw(st.integers(1, 200)))
    t0 = draw(st.sampled_from([0.0, 1.234, 86400.5]))
    per_stream: dict[str, list] = {}
    if VIDEO in streams:
        period = 1.0 / draw(st.sampled_from([1, 10, 25, 30, 120]))
        n = draw(st.integers(0, 120))
        t, frames = t0 + draw(st.floats(0.0, 0.5)), []
        for i, step in enumerate(_steps(draw, n, period)):
            frames.append(VideoFrame(t, IMG, i))
            t += step
        per_stream[VIDEO] = frames
    if AUDIO in streams:
        chunk = draw(st.sampled_from([0.01, 0.032, 0.1, 0.5]))
        n = draw(st.integers(0, 120))
        t, chunks = t0 + draw(st.floats(0.0, 0.5)), []
        for step in _steps(draw, n, chunk):
            size = max(1, int(round(chunk * RATE * draw(st.sampled_from([1.0, 1.0, 0.5, 2.0])))))
            chunks.append(AudioChunk(t, np.ones(size, np.float32), RATE))
            t += step
        per_stream[AUDIO] = chunks
    # A random interleaving of the streams' arrivals (arrival order is not capture order).
    queues = {s: list(v) for s, v in per_stream.items()}
    arrivals = []
    while any(queues.values()):
        s = draw(st.sampled_from(sorted(k for k, v in queues.items() if v)))
        arrivals.append((s, queues[s].pop(0)))
    if arrivals and draw(st.booleans()):
        at = draw(st.integers(0, len(arrivals) - 1))
        arrivals.insert(at, (None, SourceEvent(arrivals[at][1].t, "corrupt_input")))
    polls = draw(st.lists(st.booleans(), min_size=len(arrivals), max_size=len(arrivals)))
    end_order = draw(st.permutations(streams))
    return {
        "streams": streams,
        "window": window,
        "buffers": buffers,
        "arrivals": arrivals,
        "polls": polls,
        "end_order": end_order,
        "live": draw(st.booleans()),
        "poll_between_ends": draw(st.booleans()),
    }


# -- the run and its checks -------------------------------------------------------
def _run(case):
    window, buffers = case["window"], case["buffers"]
    clock = Clock()
    tl = Timeline(buffers.history_s, buffers.max_frames, RATE)
    sch = Scheduler(tl, window, buffers, case["streams"], live=case["live"], wall_clock=clock)
    audio_cap = tl._max_audio_samples + max((len(s.samples) for _, s in case["arrivals"] if isinstance(s, AudioChunk)), default=0)
    ended: set[str] = set()
    cut: list = []

    def poll():
        latest = dict(tl.latest)
        stalled = sch.stalled()
        got = sch.ready_windows()
        for w in got:
            if not w.final:  # cut only once every stream still delivering reached its end
                for s in set(case["streams"]) - ended - stalled:
                    assert latest.get(s, -math.inf) >= w.end - 1e-9, (s, latest, w.end)
        cut.extend(got)

    for (stream, sample), do_poll in zip(case["arrivals"], case["polls"]):
        tl.push(sample)
        if stream is not None:
            clock.t = max(clock.t, sample.t)
            sch.note_arrival(stream)
        # Memory stays within the configured bounds after every push.
        assert tl.n_frames <= buffers.max_frames
        assert tl.n_audio_samples <= audio_cap
        assert all(f.t >= tl.newest - buffers.history_s - 1e-9 for f in tl._frames)
        assert [f.t for f in tl._frames] == sorted(f.t for f in tl._frames)
        if do_poll:
            poll()
    for stream in case["end_order"]:
        sch.end_stream(stream)
        ended.add(stream)
        if case["poll_between_ends"]:
            poll()
    poll()
    for _ in range(2):
        assert sch.ready_windows() == []  # nothing after the final window
    return tl, sch, cut


def _check(case, tl, sch, cut):
    window = case["window"]
    hop, length = window.hop_s, window.length_s
    if tl.first_t is None:  # nothing was ever accepted: nothing to report
        assert cut == []
        return
    # The end of stream is always handled: exactly one final window, and it is the last.
    assert cut and cut[-1].final and sum(w.final for w in cut) == 1
    t0 = sch.t0
    indices = [w.index for w in cut]
    assert indices == list(range(indices[0], indices[0] + len(indices)))  # in order, none twice, no holes
    ends = [w.end for w in cut]
    assert all(b > a for a, b in zip(ends, ends[1:]))
    first_full = math.ceil(length / hop - 1e-9) - 1
    for w in cut:
        grid_end = t0 + (w.index + 1) * hop
        if w.final:
            assert w.end <= grid_end + 1e-6  # on the grid, or a tail before the next grid point
            assert w.end <= tl.newest + min(hop / 2, FINAL_WINDOW_SLACK_S) + 1e-9
        else:
            assert math.isclose(w.end, grid_end, rel_tol=0, abs_tol=1e-6)
            if not window.emit_partial:
                assert w.index >= first_full
        assert math.isclose(w.start, max(t0, w.end - length), abs_tol=1e-9)
        # Samples lie inside their window (the final tail also holds the frame stamped at its end).
        top = w.end + (1e-6 if w.final else 0.0)
        assert all(w.start <= f.t < top for f in w.frames)
        assert [f.t for f in w.frames] == sorted(f.t for f in w.frames)
        assert len(w.frames) <= min(window.frames_per_window, w.n_frames)
        if w.audio is not None:
            assert w.audio.start == w.start
            assert w.audio.samples.shape == (int(round((w.end - w.start) * RATE)),)
            assert 0.0 < w.audio.coverage <= 1.0
    if not window.emit_partial and len(cut) > 1:
        assert indices[0] >= first_full


@SETTINGS
@given(stream_case())
def test_scheduler_invariants_hold_for_any_stream(case):
    _check(case, *_run(case))


@SETTINGS
@given(
    n=st.integers(1, 400),
    hop=st.sampled_from([0.05, 0.1, 0.5, 1.0]),
    chunk=st.sampled_from([0.01, 0.032, 0.04, 0.1, 0.25]),
    tail=st.floats(0.0, 0.2),
    live=st.booleans(),
)
def test_any_duration_ends_with_exactly_one_final_window(n, hop, chunk, tail, live):
    """In-order audio of any length (in particular just past a hop multiple) ends with one final state."""
    window = WindowConfig(length_s=2.0, hop_s=hop)
    buffers = BufferConfig(history_s=2.0 + hop + 1.0)
    tl = Timeline(buffers.history_s, buffers.max_frames, RATE)
    sch = Scheduler(tl, window, buffers, (AUDIO,), live=live, wall_clock=lambda: 0.0)
    duration = round(n * hop * 0.25, 6) + tail  # lands on, just past and far from hop multiples
    total = max(1, int(round(duration * RATE)))
    step = int(round(chunk * RATE))
    cut = []
    for i in range(0, total, step):
        tl.push(AudioChunk(i / RATE, np.ones(min(step, total - i), np.float32), RATE))
        sch.note_arrival(AUDIO)
        cut += sch.ready_windows()
    sch.end_all()
    cut += sch.ready_windows()
    assert sum(w.final for w in cut) == 1 and cut[-1].final
    assert [w.index for w in cut] == list(range(len(cut)))
    assert cut[-1].end >= total / RATE - min(hop / 2, 0.1) - 1e-9  # the end of the input has a state
    assert all(math.isclose(w.end, (w.index + 1) * hop, abs_tol=1e-6) for w in cut[:-1])
