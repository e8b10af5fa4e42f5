"""Incremental perception workers: ordering, bounded buffers, lossless determinism,
latest-wins reasoner, faces at reduced detection resolution, resampled voice.

Real models and media where a model is involved (RetinaFace, FER, silero); the
queueing tests use plain functions so their timing is controlled by events, not
sleeps (no wall-clock asserts).
"""

from __future__ import annotations

import threading

import av
import numpy as np
import pytest

from emo_stream.perception.expression import ExpressionRecognizer
from emo_stream.perception.face import FaceDetectorConfig, make_face_detector
from emo_stream.perception.prosody import ProsodyTracker
from emo_stream.perception.vad import VoiceActivityDetector
from emo_stream.perception.workers import FaceAnalyzer, LatestWins, SampleWorker, TimedBuffer, VoiceAnalyzer
from emo_stream.stream.samples import AudioChunk, VideoFrame
from emo_stream.stream.sources.audio_convert import AudioConverter
from emo_stream.threads import StageClock, plan_threads


# -- TimedBuffer ---------------------------------------------------------------------
def test_timed_buffer_is_bounded_by_count_and_age_and_stays_sorted():
    buf: TimedBuffer[int] = TimedBuffer(max_items=5, horizon_s=1.0)
    for i in range(20):
        buf.append(i * 0.1, i)
    assert len(buf) == 5 and buf.between(-1, 10) == [15, 16, 17, 18, 19]
    assert not buf.append(0.5, 99) and buf.out_of_order == 1  # older than the newest: refused
    buf.append(5.0, 50)  # a jump ahead drops everything older than the horizon
    assert buf.between(-1, 10) == [50]
    assert buf.between(5.0, 5.0) == [] and buf.between(5.0, 5.1) == [50]  # [start, end)


# -- SampleWorker ----------------------------------------------------------------------
def test_sample_worker_handles_items_once_in_order_and_blocks_when_full():
    seen, gate = [], threading.Event()

    def handle(x):
        gate.wait()
        seen.append(x)

    clock = StageClock()
    w = SampleWorker("t", handle, clock, "stage", capacity=2, blocking=True)
    w.submit(0)  # taken by the worker, which waits on the gate
    w.submit(1)
    w.submit(2)  # queue full now
    blocked = threading.Thread(target=w.submit, args=(3,))
    blocked.start()
    blocked.join(timeout=0.2)
    assert blocked.is_alive()  # back-pressure: the submitter waits, nothing is dropped
    gate.set()
    blocked.join()
    assert w.wait_idle(timeout=10)
    assert seen == [0, 1, 2, 3] and w.dropped == 0 and w.handled == 4
    assert clock.calls()["stage"] == 4
    w.close()


def test_live_sample_worker_never_blocks_and_drops_the_oldest():
    gate, started = threading.Event(), threading.Event()
    seen = []
    w = SampleWorker("t", lambda x: (started.set(), gate.wait(), seen.append(x)), StageClock(), "s", capacity=2, blocking=False)
    results = [w.submit(0)]
    assert started.wait(10)  # 0 is being handled; 1..5 compete for 2 slots
    results += [w.submit(i) for i in range(1, 6)]
    gate.set()
    assert w.wait_idle(timeout=10)
    assert w.dropped == 3 and results.count(False) == 3
    assert seen[0] == 0 and seen[-2:] == [4, 5]  # newest kept, order preserved
    w.close()


def test_a_failing_item_is_counted_and_the_worker_carries_on():
    seen = []

    def handle(x):
        if x == 1:
            raise ValueError("bad frame")
        seen.append(x)

    w = SampleWorker("t", handle, StageClock(), "s", capacity=4, blocking=True)
    for i in range(3):
        w.submit(i)
    assert w.wait_idle(timeout=10)
    assert seen == [0, 2] and w.errors == 1 and isinstance(w.last_error, ValueError)
    w.close()


# -- LatestWins -------------------------------------------------------------------------
def test_latest_wins_runs_the_newest_job_only_and_reports_its_stamp():
    started, gate = threading.Event(), threading.Event()
    ran = []

    def compute(job):
        ran.append(job)
        started.set()
        gate.wait()
        return job.upper()

    lw = LatestWins("t", compute, StageClock(), "llm")
    assert lw.latest() is None
    lw.submit("a", 1.0)
    assert started.wait(10)
    for i, job in enumerate(["b", "c", "d"]):  # arrive while "a" runs: only "d" survives
        lw.submit(job, 2.0 + i)
    gate.set()
    assert lw.wait_idle(timeout=10)
    assert ran == ["a", "d"] and lw.replaced == 2
    assert lw.latest() == ("D", "d", 4.0)
    lw.close()


# -- FaceAnalyzer (real RetinaFace + FER) ---------------------------------------------------
@pytest.fixture(scope="module")
def recognizer():
    return ExpressionRecognizer()


def _megamind_frames(media, n=60):
    """The first ``n`` frames in presentation order (the AVI decodes them slightly reordered)."""
    raw = []
    with av.open(str(media / "megamind.avi")) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i >= n:
                break
            raw.append((float(f.time), f.to_ndarray(format="bgr24")))
    raw.sort(key=lambda x: x[0])
    return [VideoFrame(t, img, i) for i, (t, img) in enumerate(raw)]


def test_face_analyzer_samples_at_its_rate_and_is_deterministic(media, recognizer):
    frames = _megamind_frames(media, 48)  # 2 s at 24 fps
    runs = []
    for _ in range(2):
        buf = TimedBuffer(max_items=64, horizon_s=10.0)
        fa = FaceAnalyzer(make_face_detector(FaceDetectorConfig(max_side=320)), recognizer, buf, fps=8.0)
        picked = [f for f in frames if fa.wants(f)]
        for f in picked:
            fa.analyze(f)
        runs.append([(r.index, r.box, None if r.probs is None else r.probs.round(6).tolist()) for r in buf.between(-1, 99)])
    span = frames[-1].t - frames[0].t
    assert len(runs[0]) == pytest.approx(span * 8, abs=2)  # ~8 of 24 frames per second
    assert runs[0] == runs[1]


@pytest.mark.slow
def test_detection_at_320_finds_the_faces_full_resolution_finds(media, recognizer):
    """Issue 14 item 5 on real frames: no face lost by detecting on a 320-px copy."""
    frames = _megamind_frames(media, 240)[::6]
    full = make_face_detector(FaceDetectorConfig(max_side=8192))
    small = make_face_detector(FaceDetectorConfig(max_side=320))
    found_full = sum(bool(full.detect(f.image)) for f in frames)
    found_small = sum(bool(small.detect(f.image)) for f in frames)
    assert found_full >= 0.5 * len(frames)
    assert found_small >= found_full


def test_tracking_reuses_the_last_box_between_detections(media, recognizer):
    frames = _megamind_frames(media, 24)
    buf = TimedBuffer(max_items=64, horizon_s=10.0)
    fa = FaceAnalyzer(make_face_detector(FaceDetectorConfig(max_side=320)), recognizer, buf, fps=24.0, detect_every=4, track_max_s=1.0)
    for f in frames:
        fa.analyze(f)
    res = buf.between(-1, 99)
    tracked = sum(r.tracked for r in res)
    # every 4th frame is detected (plus re-detections while no face was held)
    assert len(res) == 24 and fa.detections + tracked == 24 and 6 <= fa.detections <= 9
    assert all(r.probs is not None for r in res if r.tracked)  # tracked frames still get an expression


# -- VoiceAnalyzer: any audio.sample_rate ---------------------------------------------------
def _speech(media):
    with av.open(str(media / "librivox_0880.wav")) as c:
        conv = AudioConverter(44100)
        parts = [conv.convert_frame(f) for f in c.decode(audio=0)]
        parts.append(conv.flush())
    return np.concatenate(parts)


def _voice_run(samples, rate, chunk_s=0.032):
    va = VoiceAnalyzer(VoiceActivityDetector(), ProsodyTracker(), StageClock())
    n = int(chunk_s * rate)
    for i in range(0, samples.shape[0], n):
        va.analyze(AudioChunk(i / rate, samples[i : i + n], rate))
    va.finish()
    return va


def test_voice_analyzer_resamples_any_rate_to_16k_with_the_same_speech(media):
    x44 = _speech(media)
    conv = AudioConverter(16000)
    x16 = np.concatenate([conv.convert(x44, 44100), conv.flush()])
    a, b = _voice_run(x16, 16000), _voice_run(x44, 44100)
    dur = x16.shape[0] / 16000
    assert a.last_t == pytest.approx(dur, abs=0.01) and b.last_t == pytest.approx(dur, abs=0.01)
    ra, rb = a.window(0, dur)[1], b.window(0, dur)[1]
    assert ra > 0.5 and rb == pytest.approx(ra, abs=0.03)
    spans_a, spans_b = a.vad.closed_spans(), b.vad.closed_spans()
    assert len(spans_a) == len(spans_b)
    assert np.allclose(np.array(spans_a), np.array(spans_b), atol=0.1)


def test_thread_plan_leaves_a_core_free_and_never_oversubscribes():
    for cores in (1, 2, 3, 4, 8, 16, 64):
        p = plan_threads(cores)
        assert p.omp_threads == 1 and p.onnx_inter == 1 and p.llm_threads_batch == p.llm_threads
        # llama.cpp plus the extra threads of the wider pools never take the last core
        # (the window thread, capture and the single-threaded workers live there)
        assert p.llm_threads + (p.onnx_intra - 1) + (p.asr_threads - 1) <= max(1, cores - 1)
    assert plan_threads(2).llm_threads == 1
    assert plan_threads(2, llm_threads=2).llm_threads == 2
