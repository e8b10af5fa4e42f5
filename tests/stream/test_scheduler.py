import numpy as np
import pytest

from emo_stream.config import BufferConfig, WindowConfig
from emo_stream.stream.frame_selection import select_uniform
from emo_stream.stream.samples import AudioChunk, SourceEvent, VideoFrame
from emo_stream.stream.scheduler import Scheduler
from emo_stream.stream.timeline import Timeline

RATE = 16000


class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def setup(streams=("video", "audio"), live=False, **wkw):
    clock = FakeClock()
    tl = Timeline(history_s=6, max_frames=300, sample_rate=RATE)
    sch = Scheduler(tl, WindowConfig(**wkw), BufferConfig(), streams, live=live, wall_clock=clock)
    return tl, sch, clock


def feed(tl, sch, t_from, t_to, fps=10, chunk_s=0.1, video=True, audio=True):
    for i in range(int(round((t_to - t_from) * fps))):
        t = t_from + i / fps
        if video:
            tl.push(VideoFrame(t, np.zeros((2, 2, 3), np.uint8), i))
            sch.note_arrival("video")
        if audio and abs((t / chunk_s) - round(t / chunk_s)) < 1e-6:
            tl.push(AudioChunk(t, np.ones(int(chunk_s * RATE), np.float32), RATE))
            sch.note_arrival("audio")


def test_windows_on_a_fixed_grid_with_partial_start():
    tl, sch, _ = setup(length_s=2.0, hop_s=0.5, frames_per_window=4)
    feed(tl, sch, 0.0, 3.0)
    ws = sch.ready_windows()
    sch.end_all()
    ws += sch.ready_windows()
    assert [w.end for w in ws] == pytest.approx([0.5, 1.0, 1.5, 2.0, 2.5, 3.0])
    assert [w.index for w in ws] == list(range(6))
    assert ws[-1].final and not any(w.final for w in ws[:-1])  # engines flush on the last one
    assert ws[0].start == 0.0 and ws[-1].start == pytest.approx(1.0)  # partial, then full W
    full = ws[-1]
    assert full.n_frames == 20 and len(full.frames) == 4
    assert all(full.start <= f.t < full.end for f in full.frames)
    assert full.audio.samples.shape == (2 * RATE,) and full.audio.coverage == pytest.approx(1.0)
    assert full.modalities == {"video", "audio"} and full.flags == []


def test_input_running_past_the_grid_gets_a_final_window_at_its_end():
    tl, sch, _ = setup(length_s=2.0, hop_s=0.5)
    feed(tl, sch, 0.0, 3.3)  # frames up to 3.2 s, audio up to 3.3 s
    ws = sch.ready_windows()
    sch.end_all()
    tail = sch.ready_windows()
    assert [w.end for w in ws + tail] == pytest.approx([0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.3])
    assert [w.index for w in ws + tail] == list(range(7))
    assert tail[-1].final and tail[-1].start == pytest.approx(1.3)
    assert tail[-1].frames[-1].t == pytest.approx(3.2)
    assert sch.ready_windows() == []  # nothing after the final window


def test_no_partial_windows_when_disabled():
    tl, sch, _ = setup(length_s=2.0, hop_s=0.5, emit_partial=False)
    feed(tl, sch, 0.0, 3.0)
    sch.end_all()
    ends = [w.end for w in sch.ready_windows()]
    assert ends == pytest.approx([2.0, 2.5, 3.0])


def test_watermark_waits_for_the_slowest_stream():
    tl, sch, _ = setup(hop_s=0.5)
    feed(tl, sch, 0.0, 2.0, audio=False)  # video up to 1.9 s, no audio yet
    assert sch.ready_windows() == []
    feed(tl, sch, 0.0, 1.0, video=False)  # audio up to 1.0 s
    # A file's window ending at 1.0 waits for data beyond 1.0 + slack (it may be the final one).
    assert [w.end for w in sch.ready_windows()] == pytest.approx([0.5])
    feed(tl, sch, 1.0, 1.2, video=False)
    assert [w.end for w in sch.ready_windows()] == pytest.approx([1.0])


def test_stalled_live_stream_stops_blocking_and_is_flagged():
    tl, sch, clock = setup(live=True, hop_s=0.5)
    feed(tl, sch, 0.0, 2.0, audio=False)
    sch.note_arrival("audio")  # the mic said hello once, then went silent
    assert sch.ready_windows() == []
    clock.t += 5.0  # > stream_timeout_s; video keeps arriving
    feed(tl, sch, 2.0, 2.6, audio=False)
    ws = sch.ready_windows()
    assert ws and all("audio_stalled" in w.flags and "no_audio" in w.flags for w in ws)


def test_missing_expected_stream_is_flagged_but_unexpected_is_not():
    tl, sch, _ = setup(streams=("video",))
    feed(tl, sch, 0.0, 1.0, audio=False)
    sch.end_all()
    ws = sch.ready_windows()
    assert ws and all(w.audio is None and w.flags == [] for w in ws)


def test_memory_flat_over_a_long_stream():
    tl, sch, _ = setup(hop_s=0.5)
    n = 0
    for k in range(300):  # 300 s of 10 fps video + audio
        feed(tl, sch, k, k + 1.0)
        n += len(sch.ready_windows())
        assert tl.n_frames <= 10 * 4  # ~ W + H + a little, never the whole history
    assert n == 599


def test_uniform_selection_spreads_over_gaps():
    frames = [VideoFrame(t, None, i) for i, t in enumerate([0.0, 0.1, 0.2, 1.8, 1.9])]
    picked = select_uniform(frames, 2, 0.0, 2.0)
    assert [f.t for f in picked] == [0.2, 1.8]  # one from each half, not the first two


def test_grid_origin_is_frozen_after_the_first_window():
    tl, sch, _ = setup(streams=("video",), hop_s=0.5)
    feed(tl, sch, 1.0, 2.0, audio=False)
    assert [w.end for w in sch.ready_windows()] == pytest.approx([1.5])
    tl.push(AudioChunk(0.2, np.ones(1600, np.float32), RATE))  # a late stream with an earlier stamp
    assert tl.first_t == pytest.approx(0.2)
    feed(tl, sch, 2.0, 3.0, audio=False)
    assert [w.end for w in sch.ready_windows()] == pytest.approx([2.0, 2.5])  # same grid


def _drive(tl, sch, samples, poll_every=1):
    """Push samples as the lossless pipeline does: cut after every push, then end and cut the rest."""
    out = []
    for i, sample in enumerate(samples):
        tl.push(sample)
        if i % poll_every == 0:
            out += sch.ready_windows()
    sch.end_all()
    out += sch.ready_windows()
    assert sch.ready_windows() == []
    return out


def _check_end(ws, hop):
    assert ws, "no window at all"
    assert [w.final for w in ws].count(True) == 1 and ws[-1].final
    ends = [w.end for w in ws]
    assert all(b > a for a, b in zip(ends, ends[1:])), ends  # in order, nothing twice
    assert [w.index for w in ws] == sorted({w.index for w in ws})
    for w in ws[:-1]:
        assert (w.end / hop) == pytest.approx(round(w.end / hop))  # on the grid


@pytest.mark.parametrize("live", [False, True])
@pytest.mark.parametrize("duration", [2.99, 3.0, 3.02, 3.05, 3.1, 3.29, 5.3, 6.05, 7.1, 0.04, 0.5, 0.55])
@pytest.mark.parametrize("chunk_s", [0.01, 0.032, 0.05, 0.1])
def test_audio_only_end_just_past_a_hop_multiple_gets_one_final_window(duration, chunk_s, live):
    # Issue 13: ends 0-0.1 s after a hop multiple (LibriVox 6.05 s, 7.1 s) raised IndexError.
    tl, sch, _ = setup(streams=("audio",), live=live, hop_s=0.5)
    n_total = int(round(duration * RATE))
    step = int(round(chunk_s * RATE))
    chunks = [AudioChunk(i / RATE, np.ones(min(step, n_total - i), np.float32), RATE) for i in range(0, n_total, step)]
    ws = _drive(tl, sch, chunks)
    _check_end(ws, 0.5)
    assert ws[-1].end >= duration - 0.1 - 1e-9  # the end of the input has a state
    on_grid = ws[-1].end / 0.5 == pytest.approx(round(ws[-1].end / 0.5))
    if not live and len(ws) > 1 and not on_grid:  # files: a tail never trails the previous window by < slack
        assert ws[-1].end - ws[-2].end > 0.1 - 1e-9


@pytest.mark.parametrize("duration", [3.0, 3.04, 3.08, 3.12, 2.96])
def test_video_and_audio_ending_near_the_grid(duration):
    tl, sch, _ = setup(hop_s=0.5)
    feed(tl, sch, 0.0, duration, fps=25, chunk_s=0.04)
    sch.end_all()
    ws = sch.ready_windows()
    assert ws and ws[-1].final


@pytest.mark.parametrize(
    "name",
    [
        "librivox_0870.wav",
        "librivox_0880.wav",
        "librivox_0890.wav",
        "librivox_0920.wav",
        "librivox_0930.wav",
        "speech_stereo_44k.wav",
        "astronaut_speech.mp4",
        "astronaut_3s_noaudio.mp4",
    ],
)
def test_project_media_end_with_exactly_one_final_window(name, media):
    """The real files and their real durations, through the real file sources (decode only, no engine)."""
    from emo_stream.config import StreamConfig
    from emo_stream.stream.sources.factory import open_sources

    cfg = StreamConfig()
    (src,) = open_sources(str(media / name), cfg)
    with src:
        tl = Timeline(cfg.buffers.history_s, cfg.buffers.max_frames, cfg.audio.sample_rate)
        sch = Scheduler(tl, cfg.window, cfg.buffers, src.streams)
        ws = _drive(tl, sch, src.samples())
    _check_end(ws, cfg.window.hop_s)


@pytest.mark.parametrize("duration", [1.099, 1.5, 1.3])
def test_an_event_at_the_last_sample_reaches_the_final_window(duration):
    """A cut WAV ends 1.099 s into a 0.5 s grid: the final window is the grid's 1.0 s one, and the
    ``truncated`` event its source reports at the start of the last chunk (1.088 s) lies past that
    window's end. The final window owns it, so the last state says the input stopped early (issue 13)."""
    tl, sch, _ = setup(streams=("audio",), hop_s=0.5)
    n_total, step = int(round(duration * RATE)), 176  # 11 ms chunks, like the WAV decoder's
    samples = [AudioChunk(i / RATE, np.ones(min(step, n_total - i), np.float32), RATE) for i in range(0, n_total, step)]
    samples.append(SourceEvent(samples[-1].t, "truncated", "cut"))
    ws = _drive(tl, sch, samples)
    assert "truncated" in ws[-1].flags
    assert not any("truncated" in w.flags for w in ws[:-1])
