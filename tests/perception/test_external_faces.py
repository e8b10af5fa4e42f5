"""Faces from an external detector (emo_stream.perception.external_faces): the store's
matching by capture time, stale input as flags, ids kept as given, and the analyzer on
real frames (boxes from real RetinaFace, read by the real FER net) giving the same
expressions as our own detector + tracker.
"""

from __future__ import annotations

import threading
import time

import av
import cv2
import numpy as np
import pytest

from emo_stream.errors import ConfigError
from emo_stream.perception.expression import ExpressionRecognizer
from emo_stream.perception.external_faces import (
    ExternalBox,
    ExternalFaceAnalyzer,
    ExternalFaces,
    ExternalFacesConfig,
    ExternalIdTracker,
)
from emo_stream.perception.face import FaceDetectorConfig, make_face_detector
from emo_stream.perception.people import PeopleConfig, PeopleFaceAnalyzer, summarize_window, window_flags
from emo_stream.perception.workers import TimedBuffer
from emo_stream.stream.samples import VideoFrame


def b(x, w=60):
    return ExternalBox(int(x), 50, w, w)


def test_each_frame_gets_the_nearest_list_and_boxes_within_max_age():
    store = ExternalFaces(ExternalFacesConfig(max_age_s=0.1, wait_s=0.0))
    for k in range(5):
        t = k * 0.1
        store.set_tracked(t, ["alice", "bob"])
        store.put_roi(t, "alice", b(100 + k))
        if k < 3:
            store.put_roi(t, "bob", b(400))
    look = store.at(0.21)
    assert look.listed == ("alice", "bob") and dict(look.faces)["alice"] == b(102) and not look.stale and not look.flags
    late = store.at(0.4)  # bob's last box is 0.2 s old: listed, but stale
    assert [fid for fid, _ in late.faces] == ["alice"] and late.stale == ("bob",)
    gone = store.at(2.0)  # nothing within max_age: the whole input is stale
    assert gone.faces == () and gone.flags == ("faces_input_stale",)
    with pytest.raises(ValueError, match="empty box"):
        store.put_roi(0.5, "alice", ExternalBox(0, 0, 0, 10))


def test_messages_in_any_order_and_old_ones_forgotten():
    store = ExternalFaces(ExternalFacesConfig(max_age_s=0.05, wait_s=0.0, horizon_s=1.0))
    store.put_roi(0.2, "a", b(20))
    store.put_roi(0.1, "a", b(10))  # out of order: still found by time
    store.set_tracked(0.2, ["a"])
    store.set_tracked(0.1, ["a"])
    assert dict(store.at(0.1).faces)["a"] == b(10) and dict(store.at(0.2).faces)["a"] == b(20)
    store.set_tracked(5.0, [])
    assert store.at(0.1).flags == ("faces_input_stale",)  # behind the horizon


def test_at_waits_for_the_detectors_output_of_the_frame():
    store = ExternalFaces(ExternalFacesConfig(max_age_s=0.1, wait_s=2.0))
    store.set_tracked(0.0, ["a"])
    store.put_roi(0.0, "a", b(10))

    def detector():  # a detector running behind the camera: frame 0.5's output comes later
        time.sleep(0.05)
        store.set_tracked(0.5, ["a"])
        time.sleep(0.05)
        store.put_roi(0.5, "a", b(55))

    th = threading.Thread(target=detector)
    th.start()
    look = store.at(0.5)
    th.join()
    assert dict(look.faces)["a"] == b(55)  # not the stale frame-0 box, not "stale"


def test_external_ids_are_kept_appear_and_leave_after_reid_s():
    tr = ExternalIdTracker(PeopleConfig(reid_s=0.5, max_people=2))
    events = []
    for k in range(20):
        t = k * 0.1
        faces = [("f-7", b(100))]
        if k < 5:
            faces.append(("f-9", b(300)))
        faces.append(("f-11", b(500, w=20)))  # the smallest of three: beyond max_people
        pairs, ev = tr.update(t, faces, ["f-7"] + (["f-9"] if k < 12 else []))  # f-9 listed without a box until k=12
        events += [(round(e.t, 1), e.person_id, e.kind) for e in ev]
        if k < 17:
            assert {p.person_id for p, _ in pairs} <= {"f-7", "f-9"}
    # f-9 left 0.6 s after it was last listed; its place under the bound goes to f-11
    assert events == [(0.0, "f-7", "appeared"), (0.0, "f-9", "appeared"), (1.7, "f-9", "left"), (1.7, "f-11", "appeared")]
    assert tr.dropped == 17 and sorted(tr.live_ids) == ["f-11", "f-7"]


def test_config_is_validated():
    with pytest.raises(ConfigError, match="max_age_s"):
        ExternalFacesConfig(max_age_s=0)
    with pytest.raises(ConfigError, match="horizon_s"):
        ExternalFacesConfig(max_age_s=2.0, horizon_s=1.0)


# -- real frames ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def frames(media):
    """~1.5 s at 8 frames/s: Megamind (left) beside the astronaut photo (right)."""

    def read(path):
        out = []
        with av.open(str(path)) as c:
            for i, f in enumerate(c.decode(video=0)):
                if len(out) >= 12:
                    break
                if i % 3 == 0:
                    out.append((float(f.time), f.to_ndarray(format="bgr24")))
        return out

    left, right = read(media / "megamind.avi"), read(media / "astronaut_speech.mp4")
    h = left[0][1].shape[0]
    return [
        VideoFrame(t, np.ascontiguousarray(np.hstack([a, cv2.resize(r, (int(r.shape[1] * h / r.shape[0]), h))])), k)
        for k, ((t, a), (_, r)) in enumerate(zip(left, right))
    ]


def test_analyzer_reads_the_external_boxes_under_the_external_ids(frames):
    detector, fer = make_face_detector(FaceDetectorConfig(max_side=480)), ExpressionRecognizer()
    width = frames[0].image.shape[1]
    store = ExternalFaces(ExternalFacesConfig(wait_s=0.0))
    for f in frames:  # the "external detector": real RetinaFace, its own ids by image half
        boxes = detector.detect(f.image)
        ids = []
        for fb in boxes:
            fid = "hri_left" if fb.x + fb.w / 2 < width / 2 else "hri_right"
            if fid in ids:
                continue
            ids.append(fid)
            store.put_roi(f.t, fid, ExternalBox(fb.x, fb.y, fb.w, fb.h))
        if f.index >= 8:
            ids.append("hri_ghost")  # listed, never boxed: flagged, not a crash
        store.set_tracked(f.t, ids)
    results, people = TimedBuffer(64, 100.0), TimedBuffer(64, 100.0)
    an = ExternalFaceAnalyzer(store, fer, results, people, fps=100.0, config=PeopleConfig())
    for f in frames:
        an.analyze(f)
    got = people.between(-1, 1e9)
    assert all({fc.person_id for fc in fr.faces} == {"hri_left", "hri_right"} for fr in got[1:])  # Megamind's first frame is dark
    assert all(fc.probs is not None and fc.probs.shape == (7,) for fr in got for fc in fr.faces)
    summary, primary, events = summarize_window(got)
    assert primary == "hri_left"  # the larger face, as with our own detector
    assert [(e.person_id, e.kind) for e in events] == [("hri_right", "appeared"), ("hri_left", "appeared")]
    assert summary["hri_ghost"].frames == 0 and summary["hri_ghost"].flags == ["face_roi_stale"]
    assert summary["hri_left"].flags == [] and window_flags(got) == []
    # the astronaut's expression is what our own detector + tracker read from the same pixels
    own_people = TimedBuffer(64, 100.0)
    own = PeopleFaceAnalyzer(detector, fer, TimedBuffer(64, 100.0), own_people, fps=100.0, config=PeopleConfig(min_hits=1))
    for f in frames:
        own.analyze(f)
    own_right = [fc.probs for fr in own_people.between(-1, 1e9) for fc in fr.faces if fc.box.x > width / 2]
    ext_right = [fc.probs for fr in got for fc in fr.faces if fc.person_id == "hri_right"]
    np.testing.assert_allclose(np.mean(ext_right, 0), np.mean(own_right, 0), atol=0.05)
    assert int(np.argmax(np.mean(ext_right, 0))) == int(np.argmax(np.mean(own_right, 0)))
