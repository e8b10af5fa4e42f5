"""A camera (or network stream) read by OpenCV on its own capture thread.

Why a thread: ``VideoCapture.read`` blocks until the next picture, and a
camera's driver buffer is small; if the engine held up the reader, the camera
would deliver stale pictures or drop them at the driver where nobody counts.
The capture thread only grabs, stamps and enqueues; the bounded drop-oldest
queue of :class:`~emo_stream.stream.sources.base.LiveSource` absorbs a slow
consumer and counts what it drops.

Why the monotonic clock at grab: a frame's capture time is what windows are
cut by, and it must be comparable with the microphone's timestamps (same
clock) and immune to wall-clock jumps (NTP on a robot that boots offline).

A camera that stops delivering (USB unplugged, stream sender gone) becomes a
``disconnected`` event, then the thread retries every ``reconnect_s`` and
emits ``reconnected`` when frames flow again; the consumer never blocks on it.

OpenCV is an optional extra, imported only when a camera is opened.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from emo_stream.errors import SourceError
from emo_stream.stream.downscale import downscale
from emo_stream.stream.samples import VIDEO, SourceEvent, VideoFrame
from emo_stream.stream.sources.base import LiveSource


def import_cv2():
    """``cv2``, or a one-line :class:`SourceError` naming the extra to install."""
    try:
        import cv2
    except ImportError as exc:
        raise SourceError(f"camera input needs OpenCV, which is not installed ({exc}); run: pip install 'emo-stream[headless]'") from None
    return cv2


@contextlib.contextmanager
def _quiet_opencv(cv2) -> Iterator[None]:
    """Silence OpenCV's WARN lines while probing a device.

    A missing camera index makes OpenCV print two warnings about V4L2 and
    libavdevice to stderr; our one-line SourceError says it better.
    """
    log = getattr(getattr(cv2, "utils", None), "logging", None)
    if log is None:
        yield
        return
    old = log.getLogLevel()
    log.setLogLevel(log.LOG_LEVEL_ERROR)
    try:
        yield
    finally:
        log.setLogLevel(old)


def parse_device(device: int | str) -> int | str:
    """``"0"`` -> 0 (a camera index); anything else (URL, path, pipeline) stays a string."""
    if isinstance(device, str) and device.strip().isdigit():
        return int(device.strip())
    return device


class CameraSource(LiveSource):
    """Frames from ``cv2.VideoCapture`` on a capture thread, stamped with the monotonic clock.

    Args:
        device: camera index (``0``), a V4L2 path (``/dev/video0``), a stream URL
            (``rtsp://``, ``udp://``, ``http://``; read by OpenCV's FFmpeg backend),
            a GStreamer pipeline (contains ``!``) or a video file (it is replayed
            from the start each time it ends, like a reconnect).
        queue_size: frames the capture queue holds before dropping the oldest.
        reconnect_s: wait between attempts to reopen a lost device.
        clock: monotonic seconds; injectable.
        max_frame_side: downscale pictures whose longer side exceeds this.
        read_timeout_s, open_timeout_s: FFmpeg-backend timeouts, so a silent
            network stream is noticed (OpenCV's default is 30 s).
        max_read_failures: consecutive failed reads that mean "disconnected"
            (one failure can be a driver hiccup).
    """

    def __init__(
        self,
        device: int | str = 0,
        queue_size: int = 256,
        reconnect_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        max_frame_side: int | None = None,
        read_timeout_s: float = 1.0,
        open_timeout_s: float = 5.0,
        max_read_failures: int = 2,
    ) -> None:
        super().__init__(queue_size=queue_size, clock=clock)
        self.device = parse_device(device)
        self.name = f"camera:{self.device}"
        self.reconnect_s = float(reconnect_s)
        self.max_frame_side = max_frame_side
        self.read_timeout_s = float(read_timeout_s)
        self.open_timeout_s = float(open_timeout_s)
        self.max_read_failures = max(1, int(max_read_failures))
        self._cv2: Any = None  # the cv2 module, imported by open()
        self._cap: Any = None

    @property
    def streams(self) -> frozenset[str]:
        return frozenset({VIDEO})

    def open(self) -> None:
        """Open the device now (so a wrong index fails here, in one line), then start capturing."""
        self._cv2 = import_cv2()
        cap = self._open_capture()
        if cap is None:
            raise SourceError(f"camera {self.device} could not be opened (no such device?)")
        self._cap = cap
        self.start_capture()

    # -- capture thread -------------------------------------------------
    def _open_capture(self):
        """A ``VideoCapture`` that is open, or None."""
        cv2 = self._cv2
        dev = self.device
        with _quiet_opencv(cv2):
            if isinstance(dev, int) or dev.startswith("/dev/video"):
                cap = cv2.VideoCapture(dev)
            elif "!" in dev:
                cap = cv2.VideoCapture(dev, cv2.CAP_GSTREAMER)
            else:
                params = [
                    cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(self.open_timeout_s * 1000),
                    cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(self.read_timeout_s * 1000),
                ]  # fmt: skip
                cap = cv2.VideoCapture(dev, cv2.CAP_FFMPEG, params)
        if cap is not None and cap.isOpened():
            return cap
        if cap is not None:
            cap.release()
        return None

    def _capture_loop(self) -> None:
        cap, self._cap = self._cap, None  # the thread owns the capture from here on
        failures = 0
        try:
            while not self._stop.is_set():
                if cap is None:
                    if self._stop.wait(self.reconnect_s):
                        break
                    self.stats.reconnect_attempts += 1
                    cap = self._open_capture()
                    if cap is not None:
                        failures = 0
                        self.stats.reconnects += 1
                        self._emit(SourceEvent(self._clock(), "reconnected", f"{self.name} is back"))
                    continue
                ok = cap.grab()
                t = self._clock()  # capture time: when the driver handed the picture over
                img = cap.retrieve()[1] if ok else None
                if img is not None and img.size:
                    failures = 0
                    self._emit(VideoFrame(t=t, image=self._to_bgr(img), index=self.stats.frames))
                    self.stats.frames += 1
                    continue
                failures += 1
                if failures >= self.max_read_failures:
                    cap.release()
                    cap = None
                    self.stats.note_error(f"{self.name}: read failed")
                    self._emit(SourceEvent(t, "disconnected", f"{self.name} stopped delivering frames; retrying every {self.reconnect_s:g}s"))
        finally:
            if cap is not None:
                cap.release()

    def _to_bgr(self, img: np.ndarray) -> np.ndarray:
        """BGR uint8 HxWx3 whatever the camera gives (grey, BGRA), downscaled if asked."""
        cv2 = self._cv2
        if img.ndim == 2:
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        elif img.shape[2] == 4:
            img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
        return np.ascontiguousarray(downscale(img, self.max_frame_side))

    def close(self) -> None:
        super().close()
        if self._cap is not None:  # opened but the thread never started
            self._cap.release()
            self._cap = None
