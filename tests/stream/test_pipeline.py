import threading
import time

import numpy as np
import pytest

from emo_stream.config import StreamConfig
from emo_stream.engines import make_engine
from emo_stream.engines.base import Engine, EngineOutput
from emo_stream.labels import get_label_set
from emo_stream.pipeline import Pipeline
from emo_stream.state import read_jsonl
from emo_stream.stream.samples import AudioChunk, VideoFrame
from emo_stream.stream.sinks import CallbackSink, JsonlSink
from emo_stream.stream.sources.push import PushSource

CFG = StreamConfig().replace(engine={"name": "baseline"})


class ListSink(CallbackSink):
    def __init__(self):
        self.states = []
        super().__init__(self.states.append)


class ScriptedEngine(Engine):
    """Engine whose behaviour per window is scripted: sleep, raise, or answer."""

    def __init__(self, delay=0.0, fail_on=(), rationale_every=1):
        self.label_set = get_label_set("mer2023")
        self.model_id = "scripted"
        self.delay, self.fail_on, self.rationale_every = delay, set(fail_on), rationale_every
        self.seen = []

    def process(self, window):
        self.seen.append(window)
        if window.index in self.fail_on:
            raise RuntimeError("boom")
        time.sleep(self.delay)
        p = np.zeros(6)
        p[window.index % 6] = 1.0
        fresh = window.index % self.rationale_every == 0
        return EngineOutput(
            p,
            valence=0.1,
            arousal=-0.1,
            modalities=window.modalities,
            rationale=f"r{window.index}" if fresh else "",
            rationale_stamp=window.end if fresh else None,
        )


def test_lossless_file_mode_emits_every_hop_in_order(make_source, tmp_path):
    src = make_source(duration=11.0, fps=25)
    sink = ListSink()
    path = tmp_path / "s.jsonl"
    stats = Pipeline([src], make_engine(CFG), [sink, JsonlSink(path)], CFG).run()
    states = sink.states
    assert stats.mode == "lossless" and stats.windows_dropped == 0
    assert len(states) == 22  # ends at 0.5 ... 11.0
    assert [s.sequence for s in states] == list(range(22))
    assert [s.stamp for s in states] == pytest.approx([0.5 * (k + 1) for k in range(22)])
    assert all(s.modalities == ("video", "audio") for s in states)
    # The baseline engine says what it is and measures real signals.
    s = states[-1]
    assert "not-an-emotion-model" in s.model_id and "not_an_emotion_model" in s.flags
    assert np.allclose(s.probabilities, 1 / 6) and s.valence is None
    assert s.signals["motion_energy"] > 0  # synthetic frames change brightness every frame
    assert s.signals["audio_dbfs"] == pytest.approx(20 * np.log10(0.5 / np.sqrt(2)), abs=0.1)
    assert s.signals["voiced_ratio"] == 1.0  # a loud 220 Hz tone is low-ZCR and loud
    assert read_jsonl(str(path)) == states
    assert src.opened and src.closed


def test_flags_from_source_events_reach_the_state(make_source):
    sink = ListSink()
    Pipeline([make_source(duration=2.0, events=[(1.2, "corrupt_input")])], make_engine(CFG), [sink], CFG).run()
    flagged = [s.window_end for s in sink.states if "corrupt_input" in s.flags]
    assert flagged == pytest.approx([1.5, 2.0])  # the windows that contain t=1.2


def test_rationale_is_empty_when_not_refreshed_and_age_grows(make_source):
    sink = ListSink()
    Pipeline([make_source(duration=3.0)], ScriptedEngine(rationale_every=3), [sink], CFG).run()
    got = [(s.rationale, s.rationale_age_s) for s in sink.states]
    assert got[:4] == [("r0", 0.0), ("", 0.5), ("", 1.0), ("r3", 0.0)]


def test_engine_errors_are_flagged_states_not_a_crash(make_source):
    sink = ListSink()
    stats = Pipeline([make_source(duration=2.0)], ScriptedEngine(fail_on={1}), [sink], CFG).run()
    assert stats.engine_errors == 1 and len(sink.states) == 4
    bad = sink.states[1]
    assert "engine_error" in bad.flags and bad.confidence == pytest.approx(1 / 6)


def test_persistently_failing_engine_stops_the_stream(make_source):
    with pytest.raises(RuntimeError, match="consecutive"):
        Pipeline([make_source(duration=20.0)], ScriptedEngine(fail_on=set(range(100))), [], CFG).run()


def test_max_states_and_audio_only_source(make_source):
    sink = ListSink()
    Pipeline([make_source(duration=5.0, video=False)], make_engine(CFG), [sink], CFG).run(max_states=3)
    assert len(sink.states) == 3 and all(s.modalities == ("audio",) for s in sink.states)


def _push_live(src, seconds, fps=30, rate=16000, chunk_s=0.02, stop=None):
    """Push frames and audio in real time on the monotonic clock (a camera + mic)."""
    t0 = time.monotonic()
    i = 0
    next_audio = t0
    while time.monotonic() - t0 < seconds and not (stop and stop.is_set()):
        now = time.monotonic()
        src.push(VideoFrame(now, np.zeros((48, 64, 3), np.uint8), i))
        while next_audio + chunk_s <= now:
            src.push(AudioChunk(next_audio, np.zeros(int(chunk_s * rate), np.float32), rate))
            next_audio += chunk_s
        i += 1
        time.sleep(1 / fps)
    src.end()


@pytest.mark.slow
def test_realtime_mode_keeps_up_at_the_hop_rate():
    cfg = CFG.replace(window={"hop_s": 0.2, "length_s": 1.0})
    src = PushSource({"video", "audio"})
    sink = ListSink()
    pusher = threading.Thread(target=_push_live, args=(src, 2.0))
    pusher.start()
    stats = Pipeline([src], ScriptedEngine(), [sink], cfg).run()
    pusher.join()
    assert stats.mode == "realtime" and stats.windows_dropped == 0
    assert len(sink.states) >= 8  # ~2 s / 0.2 s
    seqs = [s.sequence for s in sink.states]
    assert seqs == sorted(seqs) and seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    s = sink.states[-1]
    assert s.clock == "monotonic" and "since_window_end" in s.latency_ms
    assert s.latency_ms["since_window_end"] >= 0


@pytest.mark.slow
def test_realtime_overload_drops_oldest_windows_and_counts_them():
    cfg = CFG.replace(window={"hop_s": 0.1, "length_s": 0.5}, buffers={"max_pending_windows": 1})
    src = PushSource({"video", "audio"})
    sink = ListSink()
    engine = ScriptedEngine(delay=0.35)  # 3.5 hops per window
    pusher = threading.Thread(target=_push_live, args=(src, 2.5))
    pusher.start()
    stats = Pipeline([src], engine, [sink], cfg).run()
    pusher.join()
    assert stats.windows_dropped > 0
    seqs = [s.sequence for s in sink.states]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert len(seqs) + stats.windows_dropped == stats.windows_cut  # every cut window is accounted for
    assert max(np.diff(seqs)) > 1  # gaps = dropped windows, visible to consumers


def test_stop_from_another_thread_ends_a_live_stream():
    src = PushSource({"video"})
    stop_push = threading.Event()
    pusher = threading.Thread(target=_push_live, args=(src, 30.0), kwargs={"stop": stop_push})
    pusher.start()
    pipe = Pipeline([src], ScriptedEngine(), [], CFG)
    threading.Timer(1.0, pipe.stop).start()
    t0 = time.monotonic()
    pipe.run()
    stop_push.set()
    pusher.join()
    assert time.monotonic() - t0 < 10


class ObservingEngine(ScriptedEngine):
    """Records what the pipeline tells it: the mode, then every sample as it arrives."""

    def __init__(self):
        super().__init__()
        self.modes, self.observed = [], []

    def prepare(self, *, realtime):
        self.modes.append(realtime)

    def observe(self, sample):
        self.observed.append(sample)

    def cpu_seconds(self):
        return {"face": 0.5}


def test_engine_is_told_the_mode_and_observes_every_sample_before_its_window(make_source):
    src = make_source(duration=3.0, fps=10)
    engine = ObservingEngine()
    seen_at_window = []
    original = engine.process

    def process(window):
        seen_at_window.append((window.end, max(s.t for s in engine.observed)))
        return original(window)

    engine.process = process
    stats = Pipeline([src], engine, [ListSink()], CFG).run()
    assert engine.modes == [False]  # lossless
    assert [type(s).__name__ for s in engine.observed].count("VideoFrame") == 30
    times = [s.t for s in engine.observed]
    assert times == sorted(times)  # capture order
    # lossless: every sample up to the window end was observed before the window was processed
    assert all(newest >= end - 0.1 - 1e-9 for end, newest in seen_at_window)
    assert stats.stage_cpu_s["face"] == 0.5 and {"window", "capture"} <= set(stats.stage_cpu_s)


def test_realtime_engine_observes_from_the_pump_threads():
    cfg = CFG.replace(window={"hop_s": 0.2, "length_s": 1.0})
    src = PushSource({"video", "audio"})
    engine = ObservingEngine()
    pusher = threading.Thread(target=_push_live, args=(src, 1.0))
    pusher.start()
    stats = Pipeline([src], engine, [ListSink()], cfg).run()
    pusher.join()
    assert engine.modes == [True] and stats.mode == "realtime"
    assert sum(isinstance(s, VideoFrame) for s in engine.observed) >= 10
    assert any(isinstance(s, AudioChunk) for s in engine.observed)
