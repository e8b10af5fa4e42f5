"""Record and replay ROS 2 bags (MCAP) with ``rosbags`` (rosbag2 itself has no wheel).

The bags are ordinary rosbag2 MCAP bags (``metadata.yaml`` + ``*.mcap``), readable
by ``ros2 bag`` on a ROS machine. Messages are recorded and replayed as raw CDR
bytes (no (de)serialization on the hot path); ``rosbags`` writes the message
definitions, including emo_msgs' (read from the installed package, or from this
repository's ``ros2_ws/src/emo_msgs/msg``).

Command line (``emo_stream_bag``)::

    emo_stream_bag record -o states_bag /emo_stream/state --duration 30
    emo_stream_bag replay inputs_bag --rate 1.0 [--restamp] [--wait-subscribers 1]
    emo_stream_bag from-clip clip.mp4 -o inputs_bag      # offline: a media file as image/audio messages
    emo_stream_bag states states_bag                      # recorded EmotionStates as JSONL

Record subscribes with best-effort QoS to sensor topics (Image,
CompressedImage, AudioDataStamped) and reliable QoS to everything else ("auto";
``--qos`` overrides). Replay publishes at the recorded pace (log times) x
``--rate``; ``--restamp`` shifts every header stamp by (now - the first
recorded log time) so replayed inputs look live.
"""

from __future__ import annotations

import argparse
import importlib
import json
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: Message types recorded with sensor-data (best effort) QoS under ``--qos auto``.
SENSOR_TYPES = frozenset({"sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage", "emo_msgs/msg/AudioDataStamped"})


# -- types -------------------------------------------------------------------------------------
def emo_msgs_dir() -> Path:
    """Directory of emo_msgs' ``.msg`` files: the installed package's, else this repository's."""
    try:
        from ament_index_python.packages import get_package_share_directory

        d = Path(get_package_share_directory("emo_msgs")) / "msg"
        if d.is_dir():
            return d
    except Exception:  # noqa: S110 - not installed as a ROS package: fall back to the source tree below
        pass
    d = Path(__file__).resolve().parents[2] / "emo_msgs" / "msg"
    if d.is_dir():
        return d
    raise FileNotFoundError("emo_msgs message definitions not found (install emo_msgs or run from the repository)")


def typestore() -> Any:
    """A rosbags typestore (ROS 2 Kilted types) with emo_msgs registered."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    types: dict = {}
    for f in sorted(emo_msgs_dir().glob("*.msg")):
        types.update(get_types_from_msg(f.read_text(encoding="utf-8"), f"emo_msgs/msg/{f.stem}"))
    store.register(types)
    return store


def type_name(msg_cls: type) -> str:
    """rclpy message class -> ``pkg/msg/Name``."""
    return f"{msg_cls.__module__.split('.')[0]}/msg/{msg_cls.__name__}"


def msg_class(name: str) -> type:
    """``pkg/msg/Name`` -> rclpy message class."""
    pkg, kind, cls = name.split("/")
    return getattr(importlib.import_module(f"{pkg}.{kind}"), cls)


def _qos(kind: str, msgtype: str) -> Any:
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    sensor = kind == "sensor" or (kind == "auto" and msgtype in SENSOR_TYPES)
    return QoSProfile(
        depth=10 if sensor else 100,
        history=HistoryPolicy.KEEP_LAST,
        reliability=ReliabilityPolicy.BEST_EFFORT if sensor else ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.VOLATILE,
    )


def _writer(path: str | Path) -> Any:
    from rosbags.rosbag2 import StoragePlugin, Writer

    return Writer(Path(path), version=9, storage_plugin=StoragePlugin.MCAP)


# -- record --------------------------------------------------------------------------------------
class BagRecorder:
    """Record topics of a running graph into an MCAP bag (raw CDR, log time = receive time).

    Use with a node that something spins::

        rec = BagRecorder(node, "out_bag", {"/emo_stream/state": EmotionState})
        ... spin ...
        rec.close()

    ``topics`` maps topic -> rclpy message class (or ``pkg/msg/Name``).
    ``on_message(topic, data)`` is called after each write (tests use it).
    """

    def __init__(self, node: Any, path: str | Path, topics: dict[str, Any], qos: str = "auto", on_message: Any = None) -> None:
        self.node = node
        self.path = Path(path)
        self.counts: dict[str, int] = dict.fromkeys(topics, 0)
        self._on_message = on_message
        self._store = typestore()
        self._writer = _writer(self.path)
        self._writer.open()
        self._conns: dict[str, Any] = {}
        self._subs = []
        self._closed = False
        for topic, cls in topics.items():
            cls = msg_class(cls) if isinstance(cls, str) else cls
            name = type_name(cls)
            self._conns[topic] = self._writer.add_connection(topic, name, typestore=self._store)
            self._subs.append(node.create_subscription(cls, topic, self._callback(topic), _qos(qos, name), raw=True))

    def _callback(self, topic: str):
        def cb(data: bytes) -> None:
            if self._closed:
                return
            self._writer.write(self._conns[topic], self.node.get_clock().now().nanoseconds, data)
            self.counts[topic] += 1
            if self._on_message is not None:
                self._on_message(topic, data)

        return cb

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for sub in self._subs:
            self.node.destroy_subscription(sub)
        self._writer.close()


def wait_for_types(node: Any, topics: list[str], timeout: float) -> dict[str, str]:
    """Topic -> type name once every topic is visible in the graph (raises TimeoutError)."""
    deadline = time.monotonic() + timeout
    while True:
        known = {name: types[0] for name, types in node.get_topic_names_and_types() if types}
        found = {t: known[t] for t in topics if t in known}
        if len(found) == len(topics):
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(f"topics not seen within {timeout} s: {sorted(set(topics) - set(found))}")
        time.sleep(0.05)


# -- replay --------------------------------------------------------------------------------------
def read_messages(path: str | Path, topics: list[str] | None = None) -> Iterator[tuple[str, str, int, bytes]]:
    """(topic, type, log time ns, raw CDR) of a bag, in log-time order."""
    from rosbags.rosbag2 import Reader

    with Reader(Path(path)) as reader:
        conns = [c for c in reader.connections if topics is None or c.topic in topics]
        for conn, timestamp, raw in reader.messages(connections=conns):
            yield conn.topic, conn.msgtype, int(timestamp), bytes(raw)


def replay(
    node: Any,
    path: str | Path,
    *,
    topics: list[str] | None = None,
    rate: float = 1.0,
    restamp: bool = False,
    qos: str = "auto",
    wait_subscribers: int = 0,
    wait_timeout: float = 20.0,
    should_stop: Any = lambda: False,
) -> dict[str, int]:
    """Publish a bag's messages at their recorded pace; returns messages published per topic."""
    from rclpy.serialization import deserialize_message, serialize_message
    from rosbags.rosbag2 import Reader

    from emo_stream_ros.conversions import ns_to_stamp, stamp_to_ns

    with Reader(Path(path)) as reader:
        conns = [c for c in reader.connections if topics is None or c.topic in topics]
        pubs: dict[str, Any] = {}
        classes: dict[str, type] = {}
        for c in conns:
            if c.topic not in pubs:
                classes[c.topic] = msg_class(c.msgtype)
                pubs[c.topic] = node.create_publisher(classes[c.topic], c.topic, _qos(qos, c.msgtype))
    counts = dict.fromkeys(pubs, 0)
    if wait_subscribers > 0:
        deadline = time.monotonic() + wait_timeout
        while any(p.get_subscription_count() < wait_subscribers for p in pubs.values()):
            if time.monotonic() > deadline or should_stop():
                raise TimeoutError(f"subscribers not matched within {wait_timeout} s: { {t: p.get_subscription_count() for t, p in pubs.items()} }")
            time.sleep(0.02)
    wall0 = t0 = None
    shift = 0
    for topic, _msgtype, ts, raw in read_messages(path, list(pubs)):
        if should_stop():
            break
        if wall0 is None:
            wall0, t0 = time.monotonic(), ts
            shift = node.get_clock().now().nanoseconds - ts
        delay = wall0 + (ts - t0) / 1e9 / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if restamp:
            msg = deserialize_message(raw, classes[topic])
            if hasattr(msg, "header"):
                msg.header.stamp = ns_to_stamp(stamp_to_ns(msg.header.stamp) + shift)
                raw = serialize_message(msg)
        pubs[topic].publish(raw)
        counts[topic] += 1
    return counts


# -- offline -------------------------------------------------------------------------------------
def clip_to_bag(
    clip: str | Path,
    path: str | Path,
    *,
    image_topic: str = "image",
    audio_topic: str = "audio",
    stamp_origin_ns: int = 0,
    duration: float | None = None,
    frame_id: str = "camera",
    audio_format: str = "S16LE",
) -> dict[str, int]:
    """Write a media file's frames (Image bgr8) and audio (AudioDataStamped) into an MCAP bag.

    Header stamps and log times are ``stamp_origin_ns + media time``; audio is
    logged at its end (when a microphone would deliver it), like a live recording.
    """
    from emo_msgs.msg import AudioDataStamped
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import Image

    from emo_stream.stream.samples import VideoFrame
    from emo_stream_ros.clip_publisher import media_samples
    from emo_stream_ros.conversions import array_to_audio, bgr_to_image

    streams = {s for s, t in (("video", image_topic), ("audio", audio_topic)) if t}
    store = typestore()
    items: list[tuple[int, str, bytes]] = []
    for s in media_samples(str(clip), streams):
        if duration is not None and s.t >= duration:
            continue
        ns = stamp_origin_ns + int(round(s.t * 1e9))
        if isinstance(s, VideoFrame):
            items.append((ns, image_topic, serialize_message(bgr_to_image(s.image, ns, frame_id))))
        else:
            log_ns = stamp_origin_ns + int(round(s.end * 1e9))
            items.append((log_ns, audio_topic, serialize_message(array_to_audio(s.samples, s.sample_rate, ns, frame_id, audio_format))))
    items.sort(key=lambda x: x[0])
    writer = _writer(path)
    writer.open()
    conns = {}
    if image_topic:
        conns[image_topic] = writer.add_connection(image_topic, type_name(Image), typestore=store)
    if audio_topic:
        conns[audio_topic] = writer.add_connection(audio_topic, type_name(AudioDataStamped), typestore=store)
    counts = dict.fromkeys(conns, 0)
    try:
        for ns, topic, raw in items:
            writer.write(conns[topic], ns, raw)
            counts[topic] += 1
    finally:
        writer.close()
    return counts


def read_states(path: str | Path, topic: str | None = None, *, source_time: bool = False) -> list[tuple[int, Any]]:
    """(log time ns, Python EmotionState) of every ``emo_msgs/EmotionState`` in a bag."""
    from rosbags.rosbag2 import Reader

    from emo_stream_ros.conversions import msg_to_state

    store = typestore()
    out = []
    with Reader(Path(path)) as reader:
        conns = [c for c in reader.connections if c.msgtype == "emo_msgs/msg/EmotionState" and (topic is None or c.topic == topic)]
        for conn, ts, raw in reader.messages(connections=conns):
            msg = store.deserialize_cdr(raw, conn.msgtype)
            out.append((int(ts), msg_to_state(msg, source_time=source_time)))
    return out


# -- command line ------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="emo_stream_bag", description="Record/replay ROS 2 MCAP bags with rosbags.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record", help="record topics into an MCAP bag")
    r.add_argument("topics", nargs="+")
    r.add_argument("-o", "--output", required=True, help="bag directory to create")
    r.add_argument("--duration", type=float, default=None, help="stop after this many seconds (default: until SIGINT/SIGTERM)")
    r.add_argument("--qos", choices=("auto", "sensor", "reliable"), default="auto")
    r.add_argument("--wait-timeout", type=float, default=20.0, help="wait this long for the topics to appear")
    p = sub.add_parser("replay", help="publish a bag's messages at their recorded pace")
    p.add_argument("bag")
    p.add_argument("--topics", nargs="*", default=None)
    p.add_argument("--rate", type=float, default=1.0)
    p.add_argument("--restamp", action="store_true", help="shift header stamps so the first message is 'now'")
    p.add_argument("--qos", choices=("auto", "sensor", "reliable"), default="auto")
    p.add_argument("--wait-subscribers", type=int, default=0)
    p.add_argument("--wait-timeout", type=float, default=20.0)
    c = sub.add_parser("from-clip", help="convert a media file into an image/audio input bag (offline)")
    c.add_argument("clip")
    c.add_argument("-o", "--output", required=True)
    c.add_argument("--image-topic", default="image")
    c.add_argument("--audio-topic", default="audio")
    c.add_argument("--stamp-origin-ns", type=int, default=0)
    c.add_argument("--duration", type=float, default=None)
    s = sub.add_parser("states", help="print the EmotionStates of a bag as JSON lines")
    s.add_argument("bag")
    s.add_argument("--topic", default=None)
    s.add_argument("--source-time", action="store_true", help="times on the source clock instead of ROS time")
    args = ap.parse_args(argv)

    if args.cmd == "from-clip":
        print(
            json.dumps(
                clip_to_bag(
                    args.clip,
                    args.output,
                    image_topic=args.image_topic,
                    audio_topic=args.audio_topic,
                    stamp_origin_ns=args.stamp_origin_ns,
                    duration=args.duration,
                )
            )
        )
        return 0
    if args.cmd == "states":
        for _ts, st in read_states(args.bag, args.topic, source_time=args.source_time):
            print(st.to_json())
        return 0

    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    rclpy.init(args=None)
    node = rclpy.create_node("emo_stream_bag")
    stop = {"flag": False}

    def _stop(*_: Any) -> None:
        stop["flag"] = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        if args.cmd == "record":
            types = wait_for_types(node, args.topics, args.wait_timeout)
            rec = BagRecorder(node, args.output, types, qos=args.qos)
            ex = SingleThreadedExecutor()
            ex.add_node(node)
            end = None if args.duration is None else time.monotonic() + args.duration
            while not stop["flag"] and (end is None or time.monotonic() < end):
                ex.spin_once(timeout_sec=0.1)
            rec.close()
            print(json.dumps(rec.counts))
        else:
            counts = replay(
                node,
                args.bag,
                topics=args.topics,
                rate=args.rate,
                restamp=args.restamp,
                qos=args.qos,
                wait_subscribers=args.wait_subscribers,
                wait_timeout=args.wait_timeout,
                should_stop=lambda: stop["flag"],
            )
            time.sleep(0.5)  # let the last best-effort samples leave
            print(json.dumps(counts))
    except TimeoutError as exc:
        print(f"emo_stream_bag: {exc}", file=sys.stderr)
        return 3
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
