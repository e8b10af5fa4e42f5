"""Multi-person tracking (emo_stream.perception.people): the tracker on box sequences,
the speaker rule, and the analyzer on real media (real RetinaFace + FER).

The two-face clip is built here: Megamind's frames (one animated face talking, a
second smaller character later) beside the astronaut_speech clip's frames (a
still photo of one face), stacked side by side.
"""

from __future__ import annotations

import av
import cv2
import numpy as np
import pytest

from emo_stream.errors import ConfigError
from emo_stream.perception.expression import ExpressionRecognizer
from emo_stream.perception.face import FaceBox, FaceDetectorConfig, make_face_detector
from emo_stream.perception.people import (
    PeopleConfig,
    PeopleFaceAnalyzer,
    PersonTracker,
    attribute_speaker,
    summarize_window,
)
from emo_stream.perception.workers import FaceAnalyzer, TimedBuffer
from emo_stream.stream.samples import VideoFrame


def box(x, y, w=60):
    return FaceBox(int(x), int(y), w, w, 0.99)


# -- tracker on box sequences ---------------------------------------------------------------
def test_two_moving_faces_keep_their_ids_and_appear_once_confirmed():
    tr = PersonTracker(PeopleConfig(min_hits=2))
    seen = []
    events = []
    for k in range(20):
        t = k * 0.125
        pairs, ev = tr.update(t, [box(100 + 8 * k, 100), box(400 - 8 * k, 110)])  # walking towards each other
        events += ev
        seen.append({b.y == 100: p.person_id for p, b in pairs})  # which id each face has
    assert seen[0] == {True: "p1", False: "p2"} or seen[0] == {True: "p2", False: "p1"}
    assert all(s == seen[0] for s in seen)  # ids follow the faces, frame after frame
    assert sorted((e.person_id, e.kind) for e in events) == [("p1", "appeared"), ("p2", "appeared")]
    assert events[0].t == pytest.approx(0.125)  # confirmed on the second detection


def test_short_occlusion_keeps_the_id_a_long_absence_retires_it():
    tr = PersonTracker(PeopleConfig(reid_s=1.0, min_hits=1))
    ids = []
    events = []
    for k in range(40):
        t = k * 0.1
        faces = [box(300, 100)]
        if not (10 <= k < 16 or k >= 25):  # hidden 0.6 s, then gone for good
            faces.append(box(100 + 2 * k, 100))
        pairs, ev = tr.update(t, faces)
        events += [(round(e.t, 1), e.person_id, e.kind) for e in ev]
        ids.append(sorted(p.person_id for p, _ in pairs))
    assert ids[9] == ids[16] == ["p1", "p2"]  # re-identified after the occlusion
    assert ("p2" in ids[24]) and all(i == ["p1"] for i in ids[25:])
    left = [e for e in events if e[2] == "left"]
    assert left == [(3.5, "p2", "left")]  # unseen for more than reid_s after t=2.4
    tr.update(4.0, [box(300, 100), box(150, 100)])
    assert sorted(tr.live_ids) == ["p1", "p3"]  # a returning face after that is a new person


def test_the_number_of_people_is_bounded_and_a_stray_detection_never_becomes_a_person():
    tr = PersonTracker(PeopleConfig(max_people=2, min_hits=2))
    for k in range(5):
        faces = [box(50, 50, 80), box(300, 50, 70), box(550, 50, 40)]
        if k == 2:
            faces.append(box(700, 300, 30))  # one frame only: a false positive
        pairs, _ = tr.update(k * 0.1, faces)
        assert len(pairs) <= 2
    assert sorted(tr.live_ids) == ["p1", "p2"] and tr.dropped >= 5  # the two largest faces
    assert all(b.w in (80, 70) for _, b in pairs)


def test_people_config_is_validated():
    from emo_stream.config import build_dataclass

    with pytest.raises(ConfigError, match="max_people"):
        PeopleConfig(max_people=-1)
    # engine.options.people goes through the project's one builder: wrong types and keys are named
    with pytest.raises(ConfigError, match=r"engine\.options\.people\.max_people"):
        build_dataclass(PeopleConfig, {"max_people": "four"}, "engine.options.people")
    with pytest.raises(ConfigError, match=r"engine\.options\.people\.max_persons"):
        build_dataclass(PeopleConfig, {"max_persons": 2}, "engine.options.people")
    with pytest.raises(ConfigError, match="reid_s"):
        PeopleConfig(reid_s=0)
    with pytest.raises(ConfigError, match="speaker_ratio"):
        PeopleConfig(speaker_ratio=0.5)


# -- the speaker rule ---------------------------------------------------------------------------
def test_speaker_is_the_face_whose_mouth_moves_and_unsure_otherwise():
    assert attribute_speaker({"p1": [0.0, 0.01], "p2": [0.04, 0.05]}, True).person_id == "p2"
    unsure = attribute_speaker({"p1": [0.03], "p2": [0.04]}, True)  # both move: no clear winner
    assert unsure.person_id is None and unsure.unsure
    still = attribute_speaker({"p1": [0.0], "p2": [0.001]}, True)  # nobody's mouth moves
    assert still.person_id is None and still.unsure
    assert attribute_speaker({"p1": []}, True).person_id == "p1"  # one person: theirs
    silent = attribute_speaker({"p1": [0.0], "p2": [0.05]}, False)
    assert silent.person_id is None and not silent.unsure  # no voice: nothing to attribute


# -- real media --------------------------------------------------------------------------------
def _frames(path, n, step):
    out = []
    with av.open(str(path)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if len(out) >= n:
                break
            if i % step == 0:
                out.append((float(f.time), f.to_ndarray(format="bgr24")))
    return sorted(out, key=lambda x: x[0])


@pytest.fixture(scope="module")
def two_face_frames(media):
    """~3.8 s at 8 analysed frames/s: Megamind (left) beside the astronaut photo (right)."""
    left = _frames(media / "megamind.avi", 31, 3)
    right = _frames(media / "astronaut_speech.mp4", 31, 3)
    h = left[0][1].shape[0]
    frames = []
    for k, ((t, a), (_, b)) in enumerate(zip(left, right)):
        b = cv2.resize(b, (int(b.shape[1] * h / b.shape[0]), h))
        frames.append(VideoFrame(t, np.ascontiguousarray(np.hstack([a, b])), k))
    return frames


@pytest.fixture(scope="module")
def parts():
    return make_face_detector(FaceDetectorConfig(max_side=480)), ExpressionRecognizer()


def _run(frames, parts, config=None):
    results, people = TimedBuffer(256, 100.0), TimedBuffer(256, 100.0)
    an = PeopleFaceAnalyzer(*parts, results, people, fps=100.0, config=config)
    for f in frames:
        an.analyze(f)
    return results.between(-1, 1e9), people.between(-1, 1e9)


def test_two_faces_side_by_side_get_two_stable_ids(two_face_frames, parts):
    _, people = _run(two_face_frames, parts)
    width = two_face_frames[0].image.shape[1]
    left_ids, right_ids, both = set(), set(), 0
    for fr in people:
        faces = [f for f in fr.faces if f.confirmed]
        right = [f for f in faces if f.box.x > 0.6 * width]
        left = max((f for f in faces if f.box.x + f.box.w < 0.6 * width), key=lambda f: f.box.w, default=None)
        right_ids |= {f.person_id for f in right}
        if left is not None:
            left_ids.add(left.person_id)
        both += bool(right) and left is not None
        assert all(f.probs is not None and f.probs.shape == (7,) for f in fr.faces)  # each face read
    assert len(right_ids) == 1 and len(left_ids) == 1 and right_ids != left_ids
    assert both >= 0.9 * len(people)  # the first frames are before confirmation (min_hits)
    # one window's summary: both people, each with their own expression evidence
    summary, primary, _ = summarize_window(people[8:24])
    pid_l, pid_r = next(iter(left_ids)), next(iter(right_ids))
    assert summary[pid_l].frames == summary[pid_r].frames == 16
    assert not np.allclose(np.mean(summary[pid_l].probs, 0), np.mean(summary[pid_r].probs, 0), atol=0.02)
    # the talking cartoon's mouth moves, the photo's never does
    assert np.mean(summary[pid_l].motion) > 0.005 and max(summary[pid_r].motion) < 1e-3
    assert attribute_speaker({p: summary[p].motion for p in (pid_l, pid_r)}, True).person_id == pid_l
    assert primary in (pid_l, pid_r)


def test_primary_face_results_are_those_of_the_single_face_analyzer(two_face_frames, parts):
    results, _ = _run(two_face_frames[:10], parts)
    single = TimedBuffer(64, 100.0)
    fa = FaceAnalyzer(*parts, single, fps=100.0)
    for f in two_face_frames[:10]:
        fa.analyze(f)
    for a, b in zip(results, single.between(-1, 1e9)):
        assert a.box == b.box
        assert (a.probs is None) == (b.probs is None)
        if a.probs is not None:
            np.testing.assert_allclose(a.probs, b.probs, atol=1e-5)


def test_a_person_entering_and_leaving_is_an_event_without_an_id_swap(two_face_frames, parts):
    """The astronaut half is blank, then shows the photo for ~1.5 s, then blank again."""
    frames = []
    for f in two_face_frames:
        img = f.image.copy()
        if not 8 <= f.index < 20:
            img[:, 720:] = 127
        frames.append(VideoFrame(f.t, img, f.index))
    _, people = _run(frames, parts, PeopleConfig(reid_s=0.5))
    events = [(e.person_id, e.kind, e.t) for fr in people for e in fr.events]
    right = {f.person_id for fr in people for f in fr.faces if f.box.x > 720 and f.confirmed}
    assert len(right) == 1
    rid = next(iter(right))
    kinds = [(k, t) for p, k, t in events if p == rid]
    assert [k for k, _ in kinds] == ["appeared", "left"]
    assert frames[8].t <= kinds[0][1] <= frames[10].t and kinds[1][1] > frames[19].t
    # the cartoon's id is never handed to the astronaut or replaced
    big_left = [max((f for f in fr.faces if f.box.x < 720 and f.confirmed), key=lambda f: f.box.w, default=None) for fr in people]
    assert len({f.person_id for f in big_left if f is not None}) == 1


# -- the default engine on a two-face clip with speech ------------------------------------------
@pytest.fixture(scope="module")
def two_face_clip(media, tmp_path_factory):
    """4 s: Megamind (left) beside the astronaut photo (right), with the astronaut clip's speech."""
    import subprocess

    out = tmp_path_factory.mktemp("people") / "two_faces.mp4"
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-t",
            "4",
            "-i",
            str(media / "megamind.avi"),
            "-t",
            "4",
            "-i",
            str(media / "astronaut_speech.mp4"),
            "-filter_complex",
            "[1:v]scale=-2:528,fps=24[r];[0:v]fps=24[l];[l][r]hstack=inputs=2[v]",
            "-map",
            "[v]",
            "-map",
            "1:a",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-crf",
            "16",
            "-c:a",
            "aac",
            "-shortest",
            str(out),
        ],
        check=True,
        timeout=60,
    )
    return out


@pytest.mark.slow
def test_default_engine_gives_one_state_per_tracked_person_per_window(two_face_clip, tmp_path):
    from emo_stream.config import StreamConfig
    from emo_stream.engines import make_engine
    from emo_stream.pipeline import Pipeline
    from emo_stream.state import read_jsonl
    from emo_stream.stream.sinks import CallbackSink, JsonlSink
    from emo_stream.stream.sources.factory import open_sources

    cfg = StreamConfig().replace(engine={"name": "default", "options": {"llm": False, "rationale": "off", "asr": "off"}})
    primary = []
    with make_engine(cfg) as engine:
        stats = Pipeline(open_sources(str(two_face_clip), cfg), engine, [CallbackSink(primary.append), JsonlSink(tmp_path / "s.jsonl")], cfg).run()
    assert stats.engine_errors == 0 and len(primary) == 8
    everyone = read_jsonl(str(tmp_path / "s.jsonl"))
    by_window: dict[int, dict[str, object]] = {}
    for s in everyone:
        assert s.person_id not in by_window.setdefault(s.sequence, {})  # one state per person per window
        by_window[s.sequence][s.person_id] = s
    # the callback sink saw the primary stream only: one state per window, as before people were tracked
    assert [s.sequence for s in primary] == list(range(8)) and [by_window[s.sequence][s.person_id] for s in primary] == primary
    pid_primary = primary[0].person_id
    assert pid_primary and all(s.person_id == pid_primary for s in primary)  # Megamind, the larger face
    right = {pid for w in by_window.values() for pid, s in w.items() if s.signals.get("face_x", 0) > 0.6}
    assert len(right) == 1 and pid_primary not in right
    pid_right = next(iter(right))
    present = sum(pid_primary in w and pid_right in w for w in by_window.values())
    assert present >= 0.95 * len(by_window)
    astro = [by_window[k][pid_right] for k in sorted(by_window) if pid_right in by_window[k]]
    assert all(s.top_label == "happy" and "face" in s.modalities for s in astro)  # its own evidence
    assert all("voice" not in s.modalities for s in astro)  # a still photo's mouth never moves: never the speaker
    events = [(s.person_id, f) for s in everyone for f in s.flags if f.startswith("person_")]
    assert events.count((pid_right, "person_appeared")) == 1 and events.count((pid_primary, "person_appeared")) == 1
