"""``emo_stream`` as a ROS 2 lifecycle node.

Lifecycle (``rclpy.lifecycle.LifecycleNode``):

* **configure**: reads and validates the parameters, builds the
  :class:`~emo_stream.config.StreamConfig` and the engine (models load here,
  once), creates the publishers. Invalid parameters or a missing model fail
  the transition with the reason in the log; the node stays unconfigured.
* **activate**: opens the inputs (subscriptions with sensor-data QoS, or the
  camera/microphone/file) and starts a fresh :class:`~emo_stream.pipeline.Pipeline`
  on its own thread. Sequence numbers restart at 0 with each activation.
* **deactivate**: removes the subscriptions / closes the devices and stops the
  pipeline thread: nothing is processed or published while inactive (not
  merely gated), so an inactive node costs no CPU.
* **cleanup**: releases the engine and the publishers; parameters set since
  the last configure take effect at the next one.
* **shutdown** / SIGINT / SIGTERM: the same teardown, then the process exits 0.

Outputs: ``~/state`` (``emo_msgs/EmotionState``, reliable, keep-last
``state_qos_depth``: the primary person, one per window), ``~/persons/state``
(every tracked person's state, each with its ``person_id``), the ROS4HRI
topics ``/humans/faces/tracked`` and ``/humans/faces/<id>/expression`` when
``hri_msgs`` is importable (:mod:`emo_stream_ros.people`), and ``/diagnostics`` (``diagnostic_msgs/DiagnosticArray``
every ``diagnostics_period_s``, while active): input rates, malformed and
dropped counts, state rate, engine and end-to-end latency, model id.

Times: topic inputs are stamped by their header stamps (clock "ros"); the
state's header.stamp is the window end on that same clock. Direct inputs are
mapped to ROS time with one offset taken at activation (see
``emo_msgs/msg/EmotionState.msg``).
"""

from __future__ import annotations

import collections
import math
import sys
import threading
import time
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from emo_msgs.msg import AudioDataStamped
from emo_msgs.msg import EmotionState as EmotionStateMsg
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image

from emo_stream.engines import make_engine
from emo_stream.errors import EmoStreamError
from emo_stream.pipeline import Pipeline
from emo_stream.state import EmotionState
from emo_stream.stream.samples import AUDIO, VIDEO
from emo_stream.stream.sinks import Sink
from emo_stream.stream.sources.push import PushSource
from emo_stream_ros import params as P
from emo_stream_ros.conversions import key_values, seconds_to_ns, state_to_msg
from emo_stream_ros.faces_in import Ros4hriFaces
from emo_stream_ros.inputs import InputCounters, StampOrigin, TopicInput
from emo_stream_ros.people import PeoplePublisher

NODE_NAME = "emo_stream"
DIAGNOSTICS_TOPIC = "/diagnostics"
#: direct mode: how long activation waits for the camera/microphone/file to open.
OPEN_TIMEOUT_S = 10.0


def state_qos(depth: int) -> QoSProfile:
    return QoSProfile(depth=depth, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)


def sensor_qos(depth: int) -> QoSProfile:
    """Sensor-data QoS (best effort, keep-last ``depth``, volatile)."""
    return QoSProfile(
        depth=depth,
        history=HistoryPolicy.KEEP_LAST,
        reliability=qos_profile_sensor_data.reliability,
        durability=qos_profile_sensor_data.durability,
    )


class _StateSink(Sink):
    """Pipeline sink (runs on the pipeline thread): EmotionState -> ~/state."""

    def __init__(self, node: EmotionNode, to_ns, offset_s: float) -> None:
        self.node = node
        self.to_ns = to_ns
        self.offset_s = offset_s

    def write(self, state: EmotionState) -> None:
        self.node._publish_state(state, self.to_ns, self.offset_s)

    def write_person(self, state: EmotionState) -> None:
        self.node._publish_state(state, self.to_ns, self.offset_s, primary=False)

    def end_window(self) -> None:
        people = self.node._people
        if people is not None and self.node._active:
            people.end_window()


class EmotionNode(LifecycleNode):
    """The lifecycle node; see the module docstring."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        for p in P.PARAMS:
            desc = p.description + (f" One of: {', '.join(p.choices)}." if p.choices else "")
            self.declare_parameter(p.name, p.default, ParameterDescriptor(description=desc))
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._lock = threading.Lock()
        self._values: dict[str, Any] | None = None  # applied at the last configure
        self._pending_reconfigure = False
        self.config = None
        self.engine = None
        self._state_pub = None
        self._people: PeoplePublisher | None = None
        self._diag_pub = None
        self._diag_timer = None
        self._subs: list[Any] = []
        self._pipeline: Pipeline | None = None
        self._thread: threading.Thread | None = None
        self._push: PushSource | None = None
        self._direct_sources: list[Any] = []
        self._faces_in: Ros4hriFaces | None = None
        self._pipeline_status = ""
        self._active = False
        self.finalized = False  # set by the shutdown transition: main() then exits
        self.activate_error = ""  # why the last activation failed
        self._reset_counters()

    # -- parameters -------------------------------------------------------------------------
    def param_values(self) -> dict[str, Any]:
        return {p.name: self.get_parameter(p.name).value for p in P.PARAMS}

    def _on_set_parameters(self, changes: list) -> SetParametersResult:
        values = self.param_values()
        values.update({c.name: c.value for c in changes if c.name in P.PARAM_NAMES})
        errors = P.validate(values)
        if errors:
            return SetParametersResult(successful=False, reason="; ".join(errors))
        if any(c.name in P.PARAM_NAMES for c in changes) and self._values is not None:
            self._pending_reconfigure = True
            self.get_logger().info("parameters changed: they take effect at the next configure (deactivate, cleanup, configure, activate)")
        return SetParametersResult(successful=True)

    # -- lifecycle ----------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        values = self.param_values()
        errors = P.validate(values)
        if errors:
            self.get_logger().error("configure failed: invalid parameters: " + "; ".join(errors))
            return TransitionCallbackReturn.FAILURE
        try:
            config = P.stream_config(values)
            engine = make_engine(config)
        except Exception as exc:
            self.get_logger().error(f"configure failed: cannot build engine {values['engine']!r}: {exc}")
            return TransitionCallbackReturn.FAILURE
        self._values, self.config, self.engine = values, config, engine
        self._pending_reconfigure = False
        self._state_pub = self.create_lifecycle_publisher(EmotionStateMsg, "~/state", state_qos(values["state_qos_depth"]))
        self._people = PeoplePublisher(
            self.create_publisher, self.destroy_publisher, state_qos(values["state_qos_depth"]), publish_tracked=values["faces_from"] != "ros4hri"
        )  # the detector's list is the one
        self._diag_pub = self.create_lifecycle_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, 10)
        self._diag_timer = self.create_timer(values["diagnostics_period_s"], self._publish_diagnostics)
        self.get_logger().info(
            f"configured: engine {engine.model_id}, window {config.window.length_s:g} s, hop {config.window.hop_s:g} s, input {values['input_mode']}"
        )
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        assert self._values is not None and self.config is not None
        self._reset_counters()
        try:
            self._start_inputs_and_pipeline()
        except Exception as exc:
            self.activate_error = str(exc)
            self.get_logger().error(f"activate failed: {exc}")
            self._stop_pipeline()
            return TransitionCallbackReturn.FAILURE
        self._active = True
        ret = super().on_activate(state)
        self.get_logger().info("activated")
        return ret

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        self._stop_pipeline()
        self.get_logger().info("deactivated")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._teardown()
        self.get_logger().info("cleaned up")
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        self._stop_pipeline()
        self._teardown()
        self.finalized = True
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.get_logger().error(f"error in state {state.label}: tearing down")
        self._active = False
        self._stop_pipeline()
        self._teardown()
        return TransitionCallbackReturn.SUCCESS

    def _teardown(self) -> None:
        self._active = False
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = None
        if self._people is not None:
            self._people.close()
            self._people = None
        for name in ("_state_pub", "_diag_pub"):
            pub = getattr(self, name)
            if pub is not None:
                self.destroy_lifecycle_publisher(pub)
                setattr(self, name, None)
        if self.engine is not None:
            try:
                self.engine.close()
            except Exception as exc:
                self.get_logger().warning(f"engine close failed: {exc}")
            self.engine = None
        self.config = None

    def close(self) -> None:
        """Stop everything (SIGINT/SIGTERM path; safe in any state)."""
        self._active = False
        self._stop_pipeline()
        self._teardown()

    # -- inputs + pipeline ---------------------------------------------------------------------
    def _start_inputs_and_pipeline(self) -> None:
        v, cfg = self._values, self.config
        assert v is not None and cfg is not None and self.engine is not None
        self._pipeline_status = ""
        external = None  # faces_from ros4hri: the engine's external faces store
        if v["input_mode"] == "topics":
            streams = {s for s, topic in ((VIDEO, v["image_topic"]), (AUDIO, v["audio_topic"])) if topic}
            self._push = PushSource(streams, clock="ros", live=True, queue_size=cfg.buffers.capture_queue, name="ros-topics")
            origin = StampOrigin()
            topic_in = TopicInput(
                self._push,
                origin,
                cfg.audio.sample_rate,
                self.counters,
                max_frame_side=cfg.source.max_frame_side,
                warn=lambda m: self.get_logger().warning(m),
            )
            sources = [self._push]
            sink = _StateSink(self, origin.to_ns, 0.0)
            if v["faces_from"] == "ros4hri":
                from emo_stream.perception.external_faces import ExternalFaces

                external = ExternalFaces()
                self.engine.use_external_faces(external)  # type: ignore[attr-defined]  # params.validate: the default engine
        else:
            from emo_stream.stream.sources.factory import open_sources

            mic = v["mic"] or None
            sources = open_sources(v["input"], cfg, mic=mic, mic_backend=v["mic_backend"])
            self._direct_sources = sources
            clock = sources[0].clock
            now_ns = self.get_clock().now().nanoseconds
            # One offset per activation: monotonic capture times map through the
            # ROS-minus-monotonic difference now; a paced file's media time 0 is now.
            offset_ns = now_ns - time.monotonic_ns() if clock == "monotonic" else now_ns
            sink = _StateSink(self, lambda t, o=offset_ns: o + seconds_to_ns(t), offset_ns / 1e9)
            topic_in = None
        self._pipeline = Pipeline(sources, self.engine, [sink], cfg)
        self._thread = threading.Thread(target=self._run_pipeline, args=(self._pipeline,), name="emo_stream-pipeline", daemon=True)
        self._thread.start()
        if topic_in is None:
            # Devices and files are opened by the pipeline thread: fail the activation
            # (not just the diagnostics) when that fails, e.g. no camera.
            deadline = time.monotonic() + OPEN_TIMEOUT_S
            while self._pipeline.scheduler is None and self._thread.is_alive() and time.monotonic() < deadline:
                time.sleep(0.01)
            if self._pipeline.scheduler is None:
                raise EmoStreamError(self._pipeline_status or f"input {v['input']!r} did not open within {OPEN_TIMEOUT_S:g} s")
        if topic_in is not None:
            depth = v["input_qos_depth"]
            if v["image_topic"]:
                if v["image_transport"] == "compressed":
                    topic = v["image_topic"].rstrip("/") + "/compressed"
                    self._subs.append(self.create_subscription(CompressedImage, topic, topic_in.on_compressed, sensor_qos(depth)))
                else:
                    self._subs.append(self.create_subscription(Image, v["image_topic"], topic_in.on_image, sensor_qos(depth)))
            if v["audio_topic"]:
                self._subs.append(self.create_subscription(AudioDataStamped, v["audio_topic"], topic_in.on_audio, sensor_qos(depth)))
            if external is not None:
                self._faces_in = Ros4hriFaces(
                    self, external, origin, lambda: topic_in.image_geometry, sensor_qos(max(depth, 10)), warn=lambda m: self.get_logger().warning(m)
                )

    def _run_pipeline(self, pipeline: Pipeline) -> None:
        try:
            stats = pipeline.run()
            if self._active and self._values and self._values["input_mode"] == "direct":
                self._pipeline_status = f"input ended: {stats.summary()}"
                self.get_logger().info(self._pipeline_status)
        except Exception as exc:
            self._pipeline_status = f"pipeline stopped: {exc}"
            self.get_logger().error(self._pipeline_status)

    def _stop_pipeline(self) -> None:
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs = []
        if self._faces_in is not None:
            self._faces_in.close()
            self._faces_in = None
        if self._pipeline is not None:
            self._pipeline.stop()
        if self._push is not None:
            self._push.end()
        for src in self._direct_sources:
            try:
                src.close()
            except Exception:  # noqa: S110 - shutting down: a source that fails to close must not stop the others
                pass
        if self._thread is not None:
            self._thread.join(timeout=10.0)
            if self._thread.is_alive():
                self.get_logger().warning("pipeline thread did not stop within 10 s")
        if self._pipeline is not None:
            self._last_pipeline_stats = self._pipeline.stats
        self._pipeline = None
        self._thread = None
        self._push = None
        self._direct_sources = []

    # -- outputs ---------------------------------------------------------------------------------
    def _publish_state(self, state: EmotionState, to_ns, offset_s: float, primary: bool = True) -> None:
        """The primary person's state to ~/state (and ~/persons/state), another person's
        to ~/persons/state only; both join the window's ROS4HRI outputs."""
        v = self._values
        pub = self._state_pub
        people = self._people
        if not self._active or v is None or pub is None:
            return
        end_ns = to_ns(state.window_end)
        msg = state_to_msg(
            state,
            window_start_ns=to_ns(state.window_start),
            window_end_ns=end_ns,
            source_offset_s=offset_s,
            frame_id=v["frame_id"] or self.counters.image_frame_id,
            publish_rationale=v["publish_rationale"],
            publish_transcript=v["publish_transcript"],
        )
        if people is not None:
            people.add(state, msg)
        if not primary:
            return
        pub.publish(msg)
        now_ns = self.get_clock().now().nanoseconds
        with self._lock:
            self._states += 1
            self._last_sequence = state.sequence
            self._e2e_ms.append((now_ns - end_ns) / 1e6)
            self._last_latency = dict(state.latency_ms)

    def _reset_counters(self) -> None:
        self.counters = InputCounters()
        self._states = 0
        self._last_sequence = -1
        self._e2e_ms: collections.deque[float] = collections.deque(maxlen=200)
        self._last_latency: dict[str, float] = {}
        self._last_pipeline_stats = None
        self._prev: dict[str, float] | None = None
        self._prev_t = time.monotonic()

    def diagnostics(self) -> DiagnosticStatus:
        """The current DiagnosticStatus (also used by tests in-process)."""
        v, cfg = self._values or self.param_values(), self.config
        now = time.monotonic()
        c = self.counters.snapshot()
        pipe = self._pipeline
        pstats = pipe.stats if pipe is not None else self._last_pipeline_stats
        push = self._push
        with self._lock:
            states, e2e, last_lat = self._states, list(self._e2e_ms), dict(self._last_latency)
        cur = {"states": states, **c}
        dt = max(1e-6, now - self._prev_t)
        prev = self._prev or dict.fromkeys(cur, 0)
        rate = {k: (cur[k] - prev.get(k, 0)) / dt for k in ("states", "images", "audio_chunks", "audio_samples")}
        new_malformed = sum(cur[k] - prev.get(k, 0) for k in cur if k.startswith("malformed_"))
        self._prev, self._prev_t = cur, now
        dropped_windows = pstats.windows_dropped if pstats else 0
        push_dropped = push.stats.dropped_samples if push is not None else 0
        timeline = pipe.timeline if pipe is not None else None
        values: dict[str, Any] = {
            "lifecycle_state": "active" if self._active else ("inactive" if self.config is not None else "unconfigured"),
            "input_mode": v["input_mode"],
            "engine": v["engine"],
            "model_id": getattr(self.engine, "model_id", ""),
            "label_set": v["label_set"],
            "window_s": float(v["window_s"]),
            "hop_s": float(v["hop_s"]),
            "expected_state_rate_hz": 1.0 / float(v["hop_s"]),
            "state_rate_hz": rate["states"],
            "states_published": states,
            "last_sequence": self._last_sequence,
            "image_rate_hz": rate["images"],
            "audio_chunk_rate_hz": rate["audio_chunks"],
            "audio_rate_s_per_s": rate["audio_samples"] / (cfg.audio.sample_rate if cfg else 16000),
            "images_received": c["images"],
            "audio_chunks_received": c["audio_chunks"],
            "malformed_total": sum(x for k, x in c.items() if k.startswith("malformed_")),
            **{k: x for k, x in c.items() if k.startswith("malformed_")},
            "input_queue_dropped": push_dropped,
            "timeline_out_of_order": timeline.out_of_order if timeline is not None else 0,
            "windows_dropped": dropped_windows,
            "engine_errors": pstats.engine_errors if pstats else 0,
            "engine_ms_p50": pstats.engine_ms_percentile(50) if pstats and pstats.engine_ms else math.nan,
            "engine_ms_p95": pstats.engine_ms_percentile(95) if pstats and pstats.engine_ms else math.nan,
            "e2e_latency_ms_p50": float(np.percentile(e2e, 50)) if e2e else math.nan,
            "e2e_latency_ms_p95": float(np.percentile(e2e, 95)) if e2e else math.nan,
            **{f"latency_ms.{k}": float(x) for k, x in last_lat.items()},
            **(self._faces_in.diagnostics() if self._faces_in is not None else {}),
            "pending_reconfigure": self._pending_reconfigure,
            "last_input_error": self.counters.last_error,
            "pipeline_status": self._pipeline_status,
        }
        st = DiagnosticStatus()
        st.name = f"{self.get_fully_qualified_name()}: emotion stream"
        st.hardware_id = values["model_id"]
        if self._pipeline_status.startswith("pipeline stopped"):
            st.level, st.message = DiagnosticStatus.ERROR, self._pipeline_status
        elif new_malformed or (self._active and states and rate["states"] == 0):
            st.level = DiagnosticStatus.WARN
            st.message = f"{new_malformed} malformed inputs skipped" if new_malformed else "no states in the last period"
        else:
            st.level, st.message = DiagnosticStatus.OK, values["lifecycle_state"]
        st.values = key_values(values)
        return st

    def _publish_diagnostics(self) -> None:
        if not self._active or self._diag_pub is None:
            return
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        arr.status = [self.diagnostics()]
        self._diag_pub.publish(arr)


def main(argv: list[str] | None = None) -> int:
    """Console entry point ``emo_stream_node``: spin until SIGINT/SIGTERM, then tear down and exit 0."""
    rclpy.init(args=argv if argv is not None else sys.argv)
    node = EmotionNode()
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    code = 0
    try:
        if node.get_parameter("autostart").value:
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().error("autostart: configure failed (see above); waiting for lifecycle transitions")
            elif node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().error("autostart: activate failed (see above); waiting for lifecycle transitions")
        while rclpy.ok() and not node.finalized:  # the shutdown transition ends the process too
            executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.close()
        # After SIGINT/SIGTERM the context is already shut down: /rosout is gone, log to stderr.
        if rclpy.ok():
            node.get_logger().info("shut down cleanly")
        else:
            print(f"[{node.get_fully_qualified_name()}] shut down cleanly", file=sys.stderr, flush=True)
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
