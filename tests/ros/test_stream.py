"""Acceptance: a real clip streamed as ROS messages through the node, across three processes.

publisher process (clip_publisher: frames as sensor_msgs/Image, audio as
emo_msgs/AudioDataStamped, paced at the clip's real rate, stamped origin +
media time) -> node process (emo_stream_node, baseline engine) -> this test
process (subscriber + MCAP recorder of ~/state).
"""

from __future__ import annotations

import signal
import time

import numpy as np
import pytest
from emo_msgs.msg import EmotionState

from emo_stream_ros import bag
from emo_stream_ros.conversions import stamp_to_ns

pytestmark = pytest.mark.ros  # rclpy: runs in .venv-ros (scripts/ros_test.sh)

HOP = 0.5
WINDOW = 2.0
FPS = 25  # astronaut_speech.mp4


def _node_params(**kw):
    p = dict(engine="baseline", window_s=WINDOW, hop_s=HOP, input_mode="topics", image_topic="image", audio_topic="audio")
    p.update(kw)
    return p


def test_clip_streams_through_the_node_at_hop_rate_with_media_time_stamps(media, procs, harness, tmp_path):
    node = procs.node(_node_params())
    states_sub = harness.subscribe_states()
    recorded: list[float] = []
    rec = bag.BagRecorder(
        harness.node, tmp_path / "states_bag", {"/emo_stream/state": EmotionState}, on_message=lambda topic, data: recorded.append(time.monotonic())
    )
    harness.wait_matched(states_sub, procs=[node])
    origin = 1_795_000_000_000_000_000 + 123_456_789  # an epoch-sized origin with sub-second part
    duration = 4.0
    pub = procs.clip_publisher(media / "astronaut_speech.mp4", "--wait-subscribers", "1", "--duration", str(duration), "--stamp-origin-ns", str(origin))
    assert pub.wait(timeout=30) == 0, pub.output()
    sent = pub.json_summary()
    assert sent["frames"] == duration * FPS and sent["audio_chunks"] > 0 and sent["origin_ns"] == origin
    n_full = int(duration / HOP)  # windows ending at 0.5 ... 4.0
    harness.wait_for(lambda: len(harness.states) >= n_full, 10, f"{n_full} states", [node])
    rec.close()

    msgs = [m for _, m in harness.states]
    seqs = [m.sequence for m in msgs]
    assert seqs == list(range(len(seqs))), seqs  # monotonically increasing, no gap, from 0
    for m in msgs[:n_full]:
        end_s = (stamp_to_ns(m.header.stamp) - origin) / 1e9
        start_s = (stamp_to_ns(m.window_start) - origin) / 1e9
        assert stamp_to_ns(m.header.stamp) == stamp_to_ns(m.window_end)
        # window end == media time of the window's end, to the nanosecond grid of the stamps
        assert end_s == pytest.approx((m.sequence + 1) * HOP, abs=1e-6)
        assert start_s == pytest.approx(max(0.0, end_s - WINDOW), abs=1e-6)
        sig = {nv.name: nv.value for nv in m.signals}
        # the frames synchronised into this window are the clip's frames of [start, end)
        assert abs(sig["frames"] - FPS * (end_s - start_s)) <= 1, (m.sequence, sig)
        assert m.source_clock == "ros" and m.model_id.startswith("baseline")
        assert set(m.modalities) >= {"video", "audio"} and "audio_gap" not in m.flags and "no_audio" not in m.flags
        assert len(m.labels) == len(m.probabilities) and sum(m.probabilities) == pytest.approx(1.0)
        assert m.header.frame_id == "camera"
        assert m.rationale == "" and m.transcript == ""  # privacy defaults
    # published at the hop rate (wall clock, the clip being paced at real time). The
    # window ending exactly where the clip ends waits for the stream-stall timeout
    # (the last frame is at 3.96 s): it is left out of the rate.
    arrivals = np.array([t for t, _ in harness.states[: n_full - 1]])
    gaps = np.diff(arrivals)
    assert np.median(gaps) == pytest.approx(HOP, abs=0.1), gaps
    assert (arrivals[-1] - arrivals[0]) == pytest.approx((n_full - 2) * HOP, abs=0.4), gaps

    # the same states were recorded to MCAP and read back with rosbags
    from_bag = bag.read_states(tmp_path / "states_bag")
    assert [s.sequence for _, s in from_bag][: len(seqs)] == seqs[: len(from_bag)]
    assert len(from_bag) >= n_full
    assert from_bag[0][1].window_end == pytest.approx(origin / 1e9 + HOP, abs=1e-6)
    assert list((tmp_path / "states_bag").glob("*.mcap")) and (tmp_path / "states_bag" / "metadata.yaml").is_file()

    # SIGINT: clean shutdown, exit code 0
    assert node.stop(signal.SIGINT, timeout=10) == 0, node.output()
    assert "shut down cleanly" in node.output()


def test_replay_of_a_recorded_input_bag_drives_the_node(media, procs, harness, tmp_path):
    """rosbags: a clip converted to an input bag, replayed by a process at its recorded pace, into the node."""
    origin = 1_700_000_000_000_000_000
    inputs = tmp_path / "inputs_bag"
    counts = bag.clip_to_bag(media / "silence_noface_3s.mp4", inputs, stamp_origin_ns=origin, duration=2.0)
    assert counts["image"] == 50 and counts["audio"] > 0
    msgs = list(bag.read_messages(inputs))
    assert [t for t, *_ in msgs].count("image") == 50
    assert all(a[2] <= b[2] for a, b in zip(msgs, msgs[1:]))  # log-time order
    node = procs.node(_node_params())
    sub = harness.subscribe_states()
    harness.wait_matched(sub, procs=[node])
    rep = procs.spawn("replay", [str(bag_bin()), "replay", str(inputs), "--wait-subscribers", "1"])
    assert rep.wait(timeout=30) == 0, rep.output()
    assert rep.json_summary() == counts
    harness.wait_for(lambda: len(harness.states) >= 4, 40, "4 states", [node])  # generous: CI machines are loaded
    for _, m in harness.states[:4]:
        assert (stamp_to_ns(m.header.stamp) - origin) / 1e9 == pytest.approx((m.sequence + 1) * HOP, abs=1e-6)
        assert "video" in m.modalities and "audio" in m.modalities
    assert [m.sequence for _, m in harness.states] == list(range(len(harness.states)))


def test_direct_file_input(media, procs, harness):
    """input_mode direct: the node opens a media file itself (paced at real time), clock 'media'."""
    node = procs.node(_node_params(input_mode="direct", input=str(media / "silence_noface_3s.mp4"), autostart=False))
    sub = harness.subscribe_states()
    # a 3 s file starts playing at activation: be subscribed before that
    assert harness.transition("/emo_stream", "configure")
    harness.wait_matched(sub, procs=[node])
    assert harness.transition("/emo_stream", "activate")
    harness.wait_for(lambda: len(harness.states) >= 5, 15, "5 states", [node])
    for _, m in harness.states[:5]:
        assert m.source_clock == "media"
        media_end = stamp_to_ns(m.window_end) / 1e9 - m.source_offset_s
        assert media_end == pytest.approx((m.sequence + 1) * HOP, abs=1e-3)
    # ROS stamps are near "now": the offset maps media time 0 to the activation time
    assert abs(stamp_to_ns(harness.states[0][1].header.stamp) - harness.node.get_clock().now().nanoseconds) < 10e9


def bag_bin():
    from ros_helpers import BIN

    return BIN / "emo_stream_bag"


def test_compressed_images_and_float_audio(media, procs, harness):
    """image_transport compressed (JPEG via OpenCV) and F32LE audio, across processes."""
    node = procs.node(_node_params(image_transport="compressed"))
    sub = harness.subscribe_states()
    harness.wait_matched(sub, procs=[node])
    origin = 1_700_000_000_500_000_000
    pub = procs.clip_publisher(
        media / "astronaut_speech.mp4",
        "--compressed",
        "jpeg",
        "--audio-format",
        "F32LE",
        "--duration",
        "2.0",
        "--stamp-origin-ns",
        str(origin),
        "--wait-subscribers",
        "1",
    )
    assert pub.wait(timeout=30) == 0, pub.output()
    harness.wait_for(lambda: len(harness.states) >= 3, 10, "3 states", [node])
    for _, m in harness.states[:3]:
        assert (stamp_to_ns(m.header.stamp) - origin) / 1e9 == pytest.approx((m.sequence + 1) * HOP, abs=1e-6)
        sig = {nv.name: nv.value for nv in m.signals}
        assert {"video", "audio"} <= set(m.modalities) and sig["frames"] >= 12
