"""Acceptance: 640x480 bgr8 at 30 Hz (sensor-data QoS, another process) reaches the node without
loss with the shipped Fast DDS profile. The same run without the profile is measured too
(reported, not asserted: it depends on the machine's load; PLATFORM.md measured ~97% loss).

Loss = 1 - images the node's subscription received (its diagnostics) / images published.
Set EMO_ROS_REPORT=/path/file.jsonl to collect the numbers.
"""

from __future__ import annotations

import json
import os

import pytest

pytestmark = pytest.mark.ros  # rclpy: runs in .venv-ros (scripts/ros_test.sh)

FRAMES = 120  # 4 s at 30 Hz


def _measure(media, procs, harness, profile: bool) -> dict:
    node = procs.node(
        dict(engine="baseline", audio_topic="", hop_s=0.5, window_s=1.0, diagnostics_period_s=0.5),
        name=f"node_{'profile' if profile else 'default'}",
        profile=profile,
    )
    harness.subscribe_diagnostics()
    pub = procs.clip_publisher(
        media / "astronaut_speech.mp4",
        "--resize",
        "640x480",
        "--fps",
        "30",
        "--duration",
        "4",
        "--audio-topic",
        "",
        "--wait-subscribers",
        "1",
        "--wait-timeout",
        "30",
        name=f"publisher_{'profile' if profile else 'default'}",
        profile=profile,
    )
    assert pub.wait(timeout=40) == 0, pub.output()
    sent = pub.json_summary()["frames"]
    assert sent == FRAMES

    # diagnostics are published every 0.5 s: wait until the count is stable for 1 s
    seen: list[int] = []

    def settled():
        d = harness.latest_diag()
        if d is None:
            return None
        seen.append(int(d["images_received"]))
        return d if len(seen) >= 40 and seen[-1] == seen[-40] and (seen[-1] == sent or len(seen) >= 100) else None

    diag = harness.wait_for(settled, 15, "the node's image count to settle", [node])
    received = int(diag["images_received"])
    result = {
        "profile": profile,
        "sent": sent,
        "received": received,
        "loss": 1.0 - received / sent,
        "malformed": int(diag["malformed_total"]),
        "input_queue_dropped": int(diag["input_queue_dropped"]),
        "states": int(diag["states_published"]),
    }
    print(f"\n640x480@30Hz {'with' if profile else 'WITHOUT'} the Fast DDS profile: {json.dumps(result)}")
    if os.environ.get("EMO_ROS_REPORT"):
        with open(os.environ["EMO_ROS_REPORT"], "a", encoding="utf-8") as fh:
            fh.write(json.dumps(result) + "\n")
    assert node.alive() and received <= sent
    return result


def test_640x480_at_30hz_without_loss_with_the_shipped_profile(media, procs, harness, record_property):
    r = _measure(media, procs, harness, profile=True)
    record_property("loss_with_profile", r["loss"])
    assert r["received"] == r["sent"], r
    assert r["malformed"] == 0 and r["input_queue_dropped"] == 0 and r["states"] >= 6


def test_640x480_at_30hz_without_the_profile_is_measured(media, procs, harness, record_property):
    r = _measure(media, procs, harness, profile=False)
    record_property("loss_without_profile", r["loss"])
    assert 0.0 <= r["loss"] <= 1.0
