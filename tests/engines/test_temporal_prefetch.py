"""The exported Emotion-LLaMA's temporal prefetch: the frames it encodes between windows are the ones the
scheduler then hands the next window (real Scheduler + Timeline, 24 fps, the small model's view layout)."""

import numpy as np
import pytest

from emo_stream.config import BufferConfig, WindowConfig
from emo_stream.engines.emotion_llama_export import next_window_picks
from emo_stream.model.configs.emotion_llama import EmotionLlamaConfig
from emo_stream.stream.samples import VideoFrame
from emo_stream.stream.scheduler import Scheduler
from emo_stream.stream.timeline import Timeline


def _windows_and_arrivals(cfg: WindowConfig, fps: float, seconds: float, drop_every: int = 0):
    """Cut windows as frames arrive; each window with the frames that had arrived when it was cut."""
    tl = Timeline(history_s=6, max_frames=300, sample_rate=16000)
    sch = Scheduler(tl, cfg, BufferConfig(), ("video",), live=False)
    seen: list[VideoFrame] = []
    out = []
    for i in range(int(seconds * fps)):
        if drop_every and i % drop_every == drop_every - 1:
            continue
        f = VideoFrame(round(i / fps, 6), np.zeros((2, 2, 3), np.uint8), i)
        tl.push(f)
        sch.note_arrival("video")
        seen.append(f)
        out += [(w, list(seen)) for w in sch.ready_windows()]
    return out


@pytest.mark.parametrize("drop_every", [0, 7])
@pytest.mark.parametrize(("length_s", "hop_s"), [(2.0, 0.5), (2.0, 0.25), (3.0, 1.0)])
def test_predicted_frames_are_the_next_windows_selected_frames(length_s, hop_s, drop_every) -> None:
    cfg = WindowConfig(length_s=length_s, hop_s=hop_s, frames_per_window=8)
    cut = _windows_and_arrivals(cfg, 24.0, 8.0, drop_every)
    assert len(cut) >= 6
    older = EmotionLlamaConfig.small().temporal_view.frame_indices(8)[0]  # the view's older frame (index 1 of 8)
    for (w, seen), (nxt, _) in zip(cut, cut[1:]):
        predicted = next_window_picks(seen, w, cfg)
        assert predicted == list(nxt.frames[: len(predicted)]), (w.end, [f.t for f in predicted], [f.t for f in nxt.frames])
        # the small model's older temporal frame is always known one window ahead: it is prefetched for every window
        assert len(predicted) > older, (w.end, len(predicted))


def test_nothing_is_predicted_for_a_next_window_of_at_most_k_frames() -> None:
    """3 fps: the next window holds <= 8 frames, so it takes all of them and nothing is settled early."""
    cfg = WindowConfig(length_s=2.0, hop_s=0.5, frames_per_window=8)
    cut = _windows_and_arrivals(cfg, 3.0, 6.0)
    assert cut and all(next_window_picks(seen, w, cfg) == [] for w, seen in cut)
