"""Several people through the node, across processes: ~/persons/state and the ROS4HRI topics.

node process (emo_stream_node, default engine with its real face, expression and
VAD models; LLM and ASR off) playing a two-face clip built here (Megamind beside
the astronaut photo, with speech) -> this test process, subscribed to
``/emo_stream/state``, ``/emo_stream/persons/state``, ``/humans/faces/tracked``
and ``/humans/faces/<id>/expression`` (``hri_msgs`` built from REP 155 in
tests/ros/hri_msgs by scripts/ros_setup.sh).
"""

from __future__ import annotations

import subprocess
import time

import pytest
from emo_msgs.msg import EmotionState
from hri_msgs.msg import Expression, IdsList
from rclpy.qos import QoSProfile, ReliabilityPolicy

CLIP_S = 4


@pytest.fixture
def two_face_clip(media, tmp_path):
    megamind = media / "megamind.avi"
    if not megamind.is_file():
        pytest.fail(f"test media missing: {megamind} (run scripts/fetch_test_media.sh)", pytrace=False)
    out = tmp_path / "two_faces.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-t", str(CLIP_S), "-i", str(megamind), "-t", str(CLIP_S), "-i", str(media / "astronaut_speech.mp4"),
         "-filter_complex", "[1:v]scale=-2:528,fps=24[r];[0:v]fps=24[l];[l][r]hstack=inputs=2[v]", "-map", "[v]", "-map", "1:a",
         "-c:v", "libx264", "-preset", "ultrafast", "-crf", "16", "-c:a", "aac", "-shortest", str(out)],
        check=True, timeout=60,
    )
    return out


def test_per_person_states_and_ros4hri_topics_reach_another_process(two_face_clip, procs, harness):
    node = procs.node(dict(
        engine="default", engine_options="{llm: false, rationale: off, asr: off}", window_s=2.0, hop_s=0.5,
        input_mode="direct", input=str(two_face_clip), autostart=False,
    ))
    qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    got: dict[str, list] = {"primary": [], "persons": [], "tracked": []}
    n = harness.node
    subs = [
        n.create_subscription(EmotionState, "/emo_stream/state", got["primary"].append, qos),
        n.create_subscription(EmotionState, "/emo_stream/persons/state", got["persons"].append, qos),
        n.create_subscription(IdsList, "/humans/faces/tracked", got["tracked"].append, qos),
    ]
    # Ids are p1, p2 ... in order of first sight: subscribe to the first few faces' topics up front,
    # so nothing published while discovery runs is missed.
    expressions: dict[str, list] = {}
    for k in range(1, 5):
        pid = f"p{k}"
        expressions[pid] = []
        subs.append(n.create_subscription(Expression, f"/humans/faces/{pid}/expression", expressions[pid].append, qos))
    assert harness.transition("/emo_stream", "configure", timeout=120)  # models load here
    for sub in subs[:3]:
        harness.wait_matched(sub, procs=[node])
    assert harness.transition("/emo_stream", "activate")
    harness.wait_for(lambda: len(got["primary"]) >= 2 * CLIP_S, 60, f"{2 * CLIP_S} primary states", [node])
    time.sleep(0.5)  # the last window's per-person messages follow its primary state
    primary, persons, tracked = got["primary"], got["persons"], got["tracked"]
    # ~/state: the primary person's stream, one per window, with its id
    assert [m.sequence for m in primary] == list(range(len(primary)))
    pid_primary = primary[0].person_id
    assert pid_primary and all(m.person_id == pid_primary for m in primary)
    # ~/persons/state: everyone, one state per person per window; the primary's is ~/state's
    by_seq: dict[int, dict[str, EmotionState]] = {}
    for m in persons:
        assert m.person_id not in by_seq.setdefault(m.sequence, {})
        by_seq[m.sequence][m.person_id] = m
    assert all(by_seq[m.sequence][pid_primary] == m for m in primary)
    def face_x(m):
        return next((nv.value for nv in m.signals if nv.name == "face_x"), 0.0)

    right = {pid for w in by_seq.values() for pid, m in w.items() if face_x(m) > 0.6}
    assert len(right) == 1 and pid_primary not in right  # the astronaut photo, right half: one id throughout
    astro = next(iter(right))
    assert sum(pid_primary in w and astro in w for w in by_seq.values()) >= 0.95 * len(by_seq)
    # ROS4HRI: the ids of each window, and each face's expression on its own topic
    assert len(tracked) == len(by_seq)
    assert sum(pid_primary in m.ids and astro in m.ids for m in tracked) >= 0.95 * len(tracked)
    for pid in (pid_primary, astro):
        assert pid in expressions, pid
        ex = expressions[pid]
        assert len(ex) >= 0.95 * len(tracked), (pid, len(ex))
        for m in ex:
            assert m.expression in ("neutral", "angry", "happy", "sad", "surprised", "disgusted", "scared", "annoyed")
            assert 0.0 < m.confidence <= 1.0 and -1.0 <= m.valence <= 1.0 and -1.0 <= m.arousal <= 1.0
    ex = expressions[astro]
    assert sum(m.expression == "happy" for m in ex) >= 0.9 * len(ex)  # the smiling astronaut, read on its own face
