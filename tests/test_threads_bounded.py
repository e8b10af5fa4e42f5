"""OS threads stay bounded however many frames and windows stream (issue 14: a paced soak grew 122 -> 411).

The leak was native (Python threads stayed at 10): every decoded picture built
its own swscale context with a slice-thread pool, and the picture's array (a
view of the converted frame) kept that pool alive for as long as the timeline
or a result buffer held the picture. So the checks count OS threads
(``/proc/self/task``), with the pictures held, over many frames and windows.
"""

from __future__ import annotations

import os

import pytest

from emo_stream.stream.samples import VideoFrame
from emo_stream.stream.sources.media_file import MediaFileSource


def os_threads() -> int:
    return len(os.listdir("/proc/self/task"))


@pytest.mark.parametrize("max_side", [None, 96])  # converted only / converted and downscaled
def test_decoding_starts_no_thread_pool_per_picture(media, max_side):
    before = os_threads()
    held, peak = [], 0
    with MediaFileSource(media / "astronaut_speech.mp4", max_frame_side=max_side) as src:
        for s in src.samples():
            if isinstance(s, VideoFrame):
                held.append(s.image)  # like the timeline: every picture still referenced
                peak = max(peak, os_threads())
    assert len(held) > 150
    # decoder frame threads (<= cores + 1) are the only ones a file source may add; before the
    # fix each picture added one per core until the garbage collector freed its converter
    assert peak - before <= os.cpu_count() + 2, f"{peak - before} OS threads at the peak over {len(held)} pictures"


@pytest.mark.slow
def test_default_engine_threads_flat_over_many_windows(media):
    """The real default engine, lossless, over ~29 windows (hop 0.25 s): OS threads after warm-up never grow."""
    from emo_stream.config import StreamConfig
    from emo_stream.engines import make_engine
    from emo_stream.pipeline import Pipeline
    from emo_stream.stream.sinks import CallbackSink
    from emo_stream.stream.sources.factory import open_sources

    cfg = StreamConfig().replace(window={"hop_s": 0.25}, engine={"name": "default", "options": {"rationale": "off"}})
    counts: list[int] = []
    with make_engine(cfg) as engine:
        Pipeline(open_sources(str(media / "astronaut_speech.mp4"), cfg), engine, [CallbackSink(lambda s: counts.append(os_threads()))], cfg).run()
    assert len(counts) >= 25
    warm = counts[len(counts) // 4]  # workers and pools all started by then
    assert max(counts) - warm <= 4, f"OS threads per state: {counts}"
