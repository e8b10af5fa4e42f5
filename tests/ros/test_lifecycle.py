"""Acceptance: lifecycle (nothing published while inactive, reconfigure + activate, diagnostics
report the rates), malformed inputs counted and skipped, SIGTERM shutdown. Node in its own
process, driven through its lifecycle/parameter services from this process."""

from __future__ import annotations

import signal
import time

import cv2
import numpy as np
import pytest
from feeder import Feeder
from ros_helpers import read_rgb_astronaut

from emo_stream.stream.sources.media_file import read_audio
from emo_stream_ros.conversions import array_to_audio, bgr_to_image, stamp_to_ns

pytestmark = pytest.mark.ros  # rclpy: runs in .venv-ros (scripts/ros_test.sh)

NODE = "/emo_stream"


@pytest.fixture
def feed_data(media):
    img = cv2.resize(read_rgb_astronaut(media), (160, 160), interpolation=cv2.INTER_AREA)
    speech = read_audio(media / "librivox_0870.wav", 16000)
    return img, speech


def _diag_after(harness, t, node, timeout=6.0):
    return harness.wait_for(lambda: harness.latest_diag(since=t), timeout, "diagnostics", [node])


def test_lifecycle_gates_publishing_and_reconfigures(procs, harness, feed_data):
    node = procs.node(dict(engine="baseline", autostart=False, hop_s=0.5, window_s=1.0, diagnostics_period_s=0.5))
    sub = harness.subscribe_states()
    harness.subscribe_diagnostics()
    feeder = Feeder(harness.node, *feed_data, fps=15.0).start()
    try:
        assert harness.lifecycle_state(NODE) == "unconfigured"
        assert harness.transition(NODE, "configure")
        assert harness.lifecycle_state(NODE) == "inactive"
        harness.wait_matched(sub, procs=[node])
        # inactive: inputs flow, but the node does not even subscribe, and publishes nothing
        time.sleep(1.5)
        assert harness.node.count_subscribers("/image") == 0 and harness.node.count_subscribers("/audio") == 0
        assert harness.states == [] and harness.diagnostics == []

        t_act = time.monotonic()
        assert harness.transition(NODE, "activate")
        harness.wait_for(lambda: harness.node.count_subscribers("/image") == 1, 10, "the node's image subscription")
        harness.wait_for(lambda: len(harness.states) >= 4, 10, "4 states", [node])
        diag = harness.wait_for(
            lambda: (d := harness.latest_diag(since=time.monotonic() - 0.1)) and float(d["states_published"]) >= 4 and d,
            10,
            "diagnostics after 4 states",
            [node],
        )
        assert diag["lifecycle_state"] == "active" and diag["engine"] == "baseline"
        assert diag["model_id"].startswith("baseline-signal-stats")
        assert float(diag["expected_state_rate_hz"]) == pytest.approx(2.0)
        assert float(diag["state_rate_hz"]) == pytest.approx(2.0, abs=1.0)
        assert float(diag["image_rate_hz"]) == pytest.approx(15.0, rel=0.35)
        assert float(diag["audio_rate_s_per_s"]) == pytest.approx(1.0, rel=0.35)
        assert int(diag["malformed_total"]) == 0 and int(diag["windows_dropped"]) == 0
        assert 0 <= float(diag["e2e_latency_ms_p50"]) < 2000  # stamps are ROS time here: a real end-to-end latency
        assert diag["_level"] == 0, diag
        seqs = [m.sequence for _, m in harness.states]
        assert seqs == list(range(len(seqs)))
        assert all(t >= t_act for t, _ in harness.states)

        # deactivate: publishing stops (nothing in flight after the transition returns)
        assert harness.transition(NODE, "deactivate")
        n = len(harness.states)
        n_diag = len(harness.diagnostics)
        time.sleep(1.5)
        assert len(harness.states) == n and len(harness.diagnostics) == n_diag
        assert harness.node.count_subscribers("/image") == 0

        # parameters are validated when set ...
        bad = harness.set_params(NODE, {"hop_s": -1.0})
        assert not bad[0].successful and "hop_s" in bad[0].reason
        bad = harness.set_params(NODE, {"engine": "no-such-engine"})
        assert not bad[0].successful and "unknown engine" in bad[0].reason
        bad = harness.set_params(NODE, {"input_mode": "carrier-pigeon"})
        assert not bad[0].successful
        # ... and applied at the next configure: cleanup, set, configure, activate
        assert harness.transition(NODE, "cleanup")
        assert harness.lifecycle_state(NODE) == "unconfigured"
        ok = harness.set_params(NODE, {"hop_s": 0.25, "label_set": "meld"})
        assert all(r.successful for r in ok), ok
        assert harness.transition(NODE, "configure")
        harness.wait_matched(sub, procs=[node])
        harness.states.clear()
        t_react = time.monotonic()
        assert harness.transition(NODE, "activate")
        harness.wait_for(lambda: len(harness.states) >= 8, 10, "8 states after reconfigure", [node])
        msgs = [m for _, m in harness.states]
        assert [m.sequence for m in msgs] == list(range(len(msgs)))  # restarts at 0
        ends = [stamp_to_ns(m.window_end) for m in msgs]
        assert all(d == pytest.approx(250_000_000, abs=1000) for d in np.diff(ends)), np.diff(ends)
        assert msgs[0].label_set == "meld" and len(msgs[0].labels) == 7
        diag = harness.wait_for(
            lambda: (d := harness.latest_diag(since=t_react + 1.0)) and float(d["states_published"]) >= 8 and d, 10, "diagnostics after reconfigure", [node]
        )
        assert float(diag["hop_s"]) == 0.25 and float(diag["expected_state_rate_hz"]) == pytest.approx(4.0)
        assert float(diag["state_rate_hz"]) == pytest.approx(4.0, abs=1.5)
        assert diag["pending_reconfigure"] == "False"
    finally:
        feeder.stop()

    # SIGTERM: clean teardown from the active state, exit code 0
    assert node.stop(signal.SIGTERM, timeout=10) == 0, node.output()
    assert "shut down cleanly" in node.output()


def test_malformed_inputs_are_counted_and_skipped(procs, harness, feed_data):
    node = procs.node(dict(engine="baseline", hop_s=0.5, window_s=1.0, diagnostics_period_s=0.5))
    sub = harness.subscribe_states()
    harness.subscribe_diagnostics()
    harness.wait_matched(sub, procs=[node])
    feeder = Feeder(harness.node, *feed_data, fps=10.0)
    harness.wait_for(
        lambda: feeder.image_pub.get_subscription_count() > 0 and feeder.audio_pub.get_subscription_count() > 0, 15, "the node's input subscriptions", [node]
    )
    feeder.start()
    try:
        harness.wait_for(lambda: len(harness.states) >= 2, 10, "states before the malformed inputs", [node])
        img, _ = feed_data

        def image(**kw):
            def make(stamp):
                m = bgr_to_image(img, stamp, "camera")
                for k, v in kw.items():
                    setattr(m, k, v)
                return m

            return make

        def audio(**kw):
            def make(stamp):
                m = array_to_audio(np.zeros(512, np.float32), 16000, stamp)
                for k, v in kw.items():
                    *path, last = k.split("__")
                    obj = m
                    for p in path:
                        obj = getattr(obj, p)
                    setattr(obj, last, v)
                return m

            return make

        past = -5_000_000_000
        bad = [
            ("malformed_image_encoding", feeder.image_pub, image(encoding="yuv999")),
            ("malformed_image_size", feeder.image_pub, image(data=bytes(img.tobytes()[:-7]))),
            ("malformed_image_size", feeder.image_pub, image(width=161)),
            ("malformed_image_empty", feeder.image_pub, image(data=b"")),
            ("malformed_image_out_of_order", feeder.image_pub, lambda st: bgr_to_image(img, st + past, "camera")),
            ("malformed_audio_encoding", feeder.audio_pub, audio(info__sample_format="S24LE")),
            ("malformed_audio_size", feeder.audio_pub, audio(audio__data=b"\x01\x02\x03")),
            ("malformed_audio_empty", feeder.audio_pub, audio(audio__data=b"")),
            ("malformed_audio_out_of_order", feeder.audio_pub, lambda st: array_to_audio(np.zeros(512, np.float32), 16000, st + past)),
        ] * 2
        expected: dict[str, int] = {}
        for key, pub, make in bad:
            feeder.inject(pub, make)
            expected[key] = expected.get(key, 0) + 1
            harness.wait_for(lambda: feeder.pending() == 0, 5, "injection")
            time.sleep(0.03)  # keep within the subscriptions' keep-last depth
        n_before = len(harness.states)

        def counted():
            d = harness.latest_diag()
            return d if d and all(int(d[k]) == v for k, v in expected.items()) else None

        diag = harness.wait_for(counted, 10, f"diagnostics counting {expected}", [node])
        assert int(diag["malformed_total"]) == sum(expected.values())
        assert diag["last_input_error"]
        # the node keeps running and publishing
        harness.wait_for(lambda: len(harness.states) >= n_before + 3, 10, "states after the malformed inputs", [node])
        seqs = [m.sequence for _, m in harness.states]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        # diagnostics warned while malformed inputs arrived
        from diagnostic_msgs.msg import DiagnosticStatus

        assert DiagnosticStatus.WARN in [st.level for _, arr in harness.diagnostics for st in arr.status]
        assert int(diag["images_received"]) > 0 and int(diag["audio_chunks_received"]) > 0
        assert node.alive()
        out = node.output()
        assert "skipping malformed image message" in out and "skipping malformed audio message" in out
    finally:
        feeder.stop()
