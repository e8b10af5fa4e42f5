"""Publish a media file's frames and sound as ROS topics at its real rate.

A stand-in for a robot's camera and microphone drivers (and the input half of
the node's tests)::

    clip_publisher clip.mp4 --image-topic image --audio-topic audio

* Frames: ``sensor_msgs/Image`` (``bgr8``/``rgb8``/``mono8``) or, with
  ``--compressed jpeg|png``, ``sensor_msgs/CompressedImage`` on
  ``<image-topic>/compressed``. Audio: ``emo_msgs/AudioDataStamped``, 16 kHz
  mono (``--audio-format`` S16LE/F32LE/S32LE/U8), in the chunks the decoder
  delivers (~32-64 ms).
* Header stamps are ``origin + media time`` in integer nanoseconds, origin =
  ``--stamp-origin-ns`` (default: the ROS time at which media time 0 is due), so a
  subscriber can recover the media time exactly.
* Pacing: a frame is published when its media time is reached, an audio chunk
  when its *end* is reached (as a microphone delivers it), at ``--speed`` x
  real time. ``--fps F`` resamples video to F Hz (repeating or skipping
  frames) and ``--resize WxH`` scales frames, e.g. for load tests.
* ``--wait-subscribers N`` waits (``--wait-timeout``) until each topic has N
  matched subscriptions before the first message, so nothing is lost to
  discovery.

On exit it prints one JSON line: frames/chunks sent, the origin, media span.
"""

from __future__ import annotations

import argparse
import heapq
import json
import signal
import sys
import time
from collections.abc import Iterator
from typing import Any

from emo_stream.stream.samples import AudioChunk, VideoFrame

NS = 1_000_000_000


def _parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WxH, got {text!r}") from None
    if w < 1 or h < 1:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return w, h


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="clip_publisher", description=__doc__.split("\n\n")[0])
    ap.add_argument("clip", help="media file (video and/or audio)")
    ap.add_argument("--image-topic", default="image", help="Image topic ('' = no video) [image]")
    ap.add_argument("--audio-topic", default="audio", help="AudioDataStamped topic ('' = no audio) [audio]")
    ap.add_argument("--encoding", default="bgr8", choices=("bgr8", "rgb8", "mono8"), help="raw image encoding [bgr8]")
    ap.add_argument("--compressed", choices=("jpeg", "png"), help="publish CompressedImage on <image-topic>/compressed instead")
    ap.add_argument("--audio-format", default="S16LE", choices=("S16LE", "F32LE", "S32LE", "U8"), help="PCM sample format [S16LE]")
    ap.add_argument("--frame-id", default="camera", help="header.frame_id [camera]")
    ap.add_argument("--stamp-origin-ns", type=int, default=None, help="stamp = origin + media time (default: ROS time of media time 0)")
    ap.add_argument("--speed", type=float, default=1.0, help="playback speed, 1 = real time [1]")
    ap.add_argument("--fps", type=float, default=None, help="resample video to this rate (frames repeated/skipped)")
    ap.add_argument("--resize", type=_parse_size, default=None, help="scale frames to WxH")
    ap.add_argument("--duration", type=float, default=None, help="stop after this much media time (s)")
    ap.add_argument("--reliable", action="store_true", help="reliable QoS instead of sensor-data (best effort)")
    ap.add_argument("--depth", type=int, default=5, help="publisher history depth [5]")
    ap.add_argument("--wait-subscribers", type=int, default=0, help="wait for this many subscriptions per topic [0]")
    ap.add_argument("--wait-timeout", type=float, default=20.0, help="give up waiting after this many seconds [20]")
    ap.add_argument("--linger", type=float, default=0.5, help="keep the publishers alive this long after the last message [0.5]")
    return ap


def media_samples(path: str, streams: set[str], sample_rate: int = 16000) -> Iterator[Any]:
    """Decoded VideoFrame/AudioChunk of a file in decode order (unpaced), via emo_stream's file source."""
    from emo_stream.stream.sources.media_file import MediaFileSource

    src = MediaFileSource(path, sample_rate=sample_rate)
    src.open()
    try:
        for s in src.samples():
            if isinstance(s, VideoFrame) and "video" in streams:
                yield s
            elif isinstance(s, AudioChunk) and "audio" in streams:
                yield s
    finally:
        src.close()


def _resample_video(samples: Iterator[Any], fps: float | None) -> Iterator[Any]:
    """Pass samples through; with ``fps``, replace video by frames on a 1/fps grid (latest frame at each tick)."""
    if fps is None:
        yield from samples
        return
    period = 1.0 / fps
    tick, last = 0, None
    for s in samples:
        if isinstance(s, VideoFrame):
            if last is not None:
                while tick * period < s.t:
                    yield VideoFrame(tick * period, last.image, tick)
                    tick += 1
            last = s
        else:
            yield s
    if last is not None:  # the last frame lasts one frame period
        while tick * period < last.t + period - 1e-9:
            yield VideoFrame(tick * period, last.image, tick)
            tick += 1


#: Containers interleave audio and video loosely (an AVI may carry audio ~1 s ahead
#: of the pictures): samples are re-ordered by due time within this decode horizon.
REORDER_HORIZON_S = 2.0


def due_time(s: Any) -> float:
    """When a live device would deliver the sample: a frame at its time, audio at its end."""
    return s.t if isinstance(s, VideoFrame) else s.end


def in_due_order(samples: Iterator[Any], horizon_s: float = REORDER_HORIZON_S) -> Iterator[tuple[float, Any]]:
    """(due time, sample) in due-time order, decoding at most ``horizon_s`` ahead."""
    heap: list[tuple[float, int, Any]] = []
    it = iter(samples)
    n = 0
    newest = float("-inf")
    exhausted = False
    while True:
        while not exhausted and (not heap or newest < heap[0][0] + horizon_s):
            try:
                s = next(it)
            except StopIteration:
                exhausted = True
                break
            d = due_time(s)
            newest = max(newest, d)
            heapq.heappush(heap, (d, n, s))
            n += 1
        if not heap:
            return
        d, _, s = heapq.heappop(heap)
        yield d, s


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import rclpy
    from emo_msgs.msg import AudioDataStamped
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CompressedImage, Image

    from emo_stream_ros.conversions import array_to_audio, bgr_to_compressed, bgr_to_image

    streams = {s for s, topic in (("video", args.image_topic), ("audio", args.audio_topic)) if topic}
    if not streams:
        print("clip_publisher: nothing to publish (both topics empty)", file=sys.stderr)
        return 2
    rclpy.init(args=None)
    node = rclpy.create_node("clip_publisher")
    qos = QoSProfile(
        depth=args.depth,
        history=HistoryPolicy.KEEP_LAST,
        reliability=ReliabilityPolicy.RELIABLE if args.reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.VOLATILE,
    )
    pubs: dict[str, Any] = {}
    if "video" in streams:
        if args.compressed:
            pubs["video"] = node.create_publisher(CompressedImage, args.image_topic.rstrip("/") + "/compressed", qos)
        else:
            pubs["video"] = node.create_publisher(Image, args.image_topic, qos)
    if "audio" in streams:
        pubs["audio"] = node.create_publisher(AudioDataStamped, args.audio_topic, qos)

    stop = {"flag": False}

    def _stop(*_: Any) -> None:
        stop["flag"] = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)

    summary: dict[str, Any] = {"frames": 0, "audio_chunks": 0, "audio_samples": 0, "first_t": None, "last_t": None}
    try:
        if args.wait_subscribers > 0:
            deadline = time.monotonic() + args.wait_timeout
            while not stop["flag"] and any(p.get_subscription_count() < args.wait_subscribers for p in pubs.values()):
                if time.monotonic() > deadline:
                    counts = {k: p.get_subscription_count() for k, p in pubs.items()}
                    print(f"clip_publisher: subscribers not matched after {args.wait_timeout} s: {counts}", file=sys.stderr)
                    return 3
                time.sleep(0.02)
        origin = args.stamp_origin_ns
        wall0: float | None = None
        t_first: float | None = None
        passed: set[str] = set()  # streams whose samples went past --duration
        for due_t, s in in_due_order(_resample_video(media_samples(args.clip, streams), args.fps)):
            if stop["flag"]:
                break
            if args.duration is not None and s.t >= args.duration:
                passed.add("video" if isinstance(s, VideoFrame) else "audio")
                if passed >= streams:
                    break
                continue
            if wall0 is None:
                wall0, t_first = time.monotonic(), due_t
                if origin is None:  # media time t_first is "now" (decoding ahead took time already)
                    origin = node.get_clock().now().nanoseconds - int(round(t_first * 1e9))
                summary["origin_ns"] = origin
            delay = wall0 + (due_t - t_first) / args.speed - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            ns = origin + int(round(s.t * 1e9))
            if isinstance(s, VideoFrame):
                img = s.image
                if args.resize is not None and (img.shape[1], img.shape[0]) != args.resize:
                    import cv2

                    img = cv2.resize(img, args.resize, interpolation=cv2.INTER_AREA)
                if args.compressed:
                    msg = bgr_to_compressed(img, ns, args.frame_id, fmt=args.compressed)
                else:
                    msg = bgr_to_image(img, ns, args.frame_id, encoding=args.encoding)
                pubs["video"].publish(msg)
                summary["frames"] += 1
            else:
                pubs["audio"].publish(array_to_audio(s.samples, s.sample_rate, ns, args.frame_id, args.audio_format))
                summary["audio_chunks"] += 1
                summary["audio_samples"] += int(s.samples.size)
            summary["first_t"] = s.t if summary["first_t"] is None else min(summary["first_t"], s.t)
            summary["last_t"] = s.t if summary["last_t"] is None else max(summary["last_t"], s.t)
        time.sleep(max(0.0, args.linger))
    finally:
        print(json.dumps(summary), flush=True)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
