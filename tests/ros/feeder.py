"""A camera + microphone stand-in inside the test process: real frames and real speech, stamped now."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
from emo_msgs.msg import AudioDataStamped
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

from emo_stream_ros.conversions import array_to_audio, bgr_to_image


class Feeder:
    """Publishes ``image`` at ``fps`` and ``audio`` chunks of ``chunk_s`` from a thread, stamped with ROS now.

    Extra messages queued with :meth:`inject` (``make(stamp_ns) -> msg``) are built and
    published between the regular ones, on the same thread.
    """

    def __init__(
        self,
        node: Any,
        image: np.ndarray,
        speech: np.ndarray,
        fps: float = 15.0,
        chunk_s: float = 0.064,
        image_topic: str = "image",
        audio_topic: str = "audio",
    ) -> None:
        self.node, self.image, self.speech, self.fps, self.chunk_s = node, image, speech, fps, chunk_s
        self.image_pub = node.create_publisher(Image, image_topic, qos_profile_sensor_data)
        self.audio_pub = node.create_publisher(AudioDataStamped, audio_topic, qos_profile_sensor_data)
        self.sent = {"images": 0, "audio": 0}
        self.last_stamp_ns = {"image": 0, "audio": 0}
        self._extra: list[tuple[Any, Any]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Feeder:
        self._thread.start()
        return self

    def inject(self, publisher: Any, make: Any) -> None:
        with self._lock:
            self._extra.append((publisher, make))

    def pending(self) -> int:
        with self._lock:
            return len(self._extra)

    def _run(self) -> None:
        n = int(round(self.chunk_s * 16000))
        pos = 0
        total = 0  # samples sent: audio is stamped by sample count, like a microphone
        base_ns = self.node.get_clock().now().nanoseconds
        t0 = time.monotonic()
        next_img = t0
        while not self._stop.is_set():
            now = time.monotonic()
            if now - t0 >= (total + n) / 16000:  # the next chunk is complete
                chunk = self.speech[pos : pos + n]
                if chunk.size < n:
                    pos, chunk = 0, self.speech[:n]
                pos += n
                stamp = base_ns + int(round(total * 1e9 / 16000))
                self.audio_pub.publish(array_to_audio(chunk, 16000, stamp))
                total += n
                self.last_stamp_ns["audio"] = stamp
                self.sent["audio"] += 1
            if now >= next_img:
                stamp = self.node.get_clock().now().nanoseconds
                self.image_pub.publish(bgr_to_image(self.image, stamp, "camera"))
                self.last_stamp_ns["image"] = stamp
                self.sent["images"] += 1
                next_img += 1.0 / self.fps
            with self._lock:
                extra = self._extra.pop(0) if self._extra else None
            if extra is not None:  # built now, so its stamp is not older than the regular messages'
                extra[0].publish(extra[1](self.node.get_clock().now().nanoseconds))
            time.sleep(0.005)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
