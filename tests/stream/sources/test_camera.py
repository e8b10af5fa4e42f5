"""CameraSource through real OpenCV: a loopback network stream, a file, a missing device.

No camera exists on the CI machines, so the "webcam" is an ffmpeg process
streaming the Megamind clip in real time (``-re``) as MPEG-TS over UDP on the
loopback interface, read by ``cv2.VideoCapture(url, CAP_FFMPEG)``; killing that
process is the unplug.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from emo_stream.errors import SourceError
from emo_stream.stream.samples import SourceEvent, VideoFrame
from emo_stream.stream.sources.base import DropOldestQueue
from emo_stream.stream.sources.camera import CameraSource

pytest.importorskip("cv2", reason="OpenCV extra (emo-stream[headless]) not installed")


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LoopbackCamera:
    """ffmpeg sending a clip at its real frame rate to udp://127.0.0.1:PORT."""

    def __init__(self, clip) -> None:
        ffmpeg = shutil.which("ffmpeg")
        assert ffmpeg, "Debian ffmpeg is needed for the loopback camera"
        self.port = _free_udp_port()
        self.url = f"udp://127.0.0.1:{self.port}"
        self.cmd = [
            ffmpeg, "-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", str(clip),
            "-an", "-c:v", "mpeg1video", "-q:v", "6", "-f", "mpegts", f"{self.url}?pkt_size=1316",
        ]  # fmt: skip
        self.proc: subprocess.Popen | None = None

    def start(self, wait: bool = True, timeout: float = 20.0) -> None:
        """Start sending; with ``wait``, return once packets really flow (ffmpeg starts slowly on a busy machine).

        Waiting listens on the port, so it is only possible while no capture holds it.
        """
        if not wait:
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL)
            return
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", self.port))
            probe.settimeout(timeout)
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL)
            probe.recv(2048)  # raises TimeoutError if nothing arrives

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture
def loopback(media):
    cam = LoopbackCamera(media / "megamind.avi")
    cam.start()
    yield cam
    cam.kill()


def _wait_for(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def _next(it, kind, timeout: float):
    """The next sample of type/kind ``kind`` from ``it`` within ``timeout`` seconds (or fail)."""
    deadline = time.monotonic() + timeout
    for s in it:
        if (isinstance(kind, str) and isinstance(s, SourceEvent) and s.kind == kind) or (isinstance(kind, type) and isinstance(s, kind)):
            return s
        if time.monotonic() > deadline:
            break
    pytest.fail(f"no {kind} within {timeout}s")


def test_missing_camera_index_is_one_line_error() -> None:
    src = CameraSource(9)
    with pytest.raises(SourceError) as exc:
        src.open()
    assert str(exc.value) == "camera 9 could not be opened (no such device?)"
    assert src._thread is None  # nothing left running


def test_missing_opencv_names_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "cv2", None)  # what `import cv2` does when it is not installed
    with pytest.raises(SourceError) as exc:
        CameraSource(0).open()
    assert "pip install 'emo-stream[headless]'" in str(exc.value) and "\n" not in str(exc.value)


def test_udp_stream_frames_arrive_on_the_capture_thread(loopback) -> None:
    src = CameraSource(loopback.url, reconnect_s=0.2, read_timeout_s=1.0, open_timeout_s=5.0)
    src.open()
    try:
        assert src.live and src.clock == "monotonic" and src.streams == {"video"}
        # nobody consumes, yet frames pile up: capture runs on its own thread
        _wait_for(lambda: len(src._queue) >= 3, 10.0, "frames queued by the capture thread")
        assert src._thread.is_alive()
        it = src.samples()
        frames = [_next(it, VideoFrame, 5.0) for _ in range(20)]
        now = time.monotonic()
    finally:
        src.close()
    ts = np.array([f.t for f in frames])
    assert np.all(np.diff(ts) > 0)
    assert now - 10.0 < ts[0] and ts[-1] <= now  # stamped with the monotonic clock at grab
    assert [f.index for f in frames] == list(range(frames[0].index, frames[0].index + 20))
    img = frames[-1].image
    assert img.shape == (528, 720, 3) and img.dtype == np.uint8
    assert img.std() > 5  # a real picture, not a grey placeholder
    assert not src._thread.is_alive()


@pytest.mark.slow
def test_udp_stream_disconnect_and_reconnect(loopback) -> None:
    src = CameraSource(loopback.url, reconnect_s=0.2, read_timeout_s=0.5, open_timeout_s=0.5)
    src.open()
    try:
        it = src.samples()
        _next(it, VideoFrame, 5.0)
        loopback.kill()  # the camera is unplugged
        gone = _next(it, "disconnected", 8.0)
        assert gone.t <= time.monotonic()
        # the consumer is free meanwhile (nothing blocks it) while the thread keeps trying
        _wait_for(lambda: src.stats.reconnect_attempts >= 2, 10.0, "two reconnect attempts")
        assert src.stats.reconnects == 0
        loopback.start(wait=False)  # plugged back in (the capture is listening on the port)
        back = _next(it, "reconnected", 10.0)
        frame = _next(it, VideoFrame, 5.0)
        assert back.t > gone.t and frame.t > back.t
        assert src.stats.reconnects == 1
    finally:
        src.close()


def test_video_file_as_device_overflows_and_keeps_events(media) -> None:
    """A file read as a 'camera' produces frames as fast as it decodes: the queue must drop, not grow."""
    src = CameraSource(str(media / "astronaut_3s_noaudio.mp4"), queue_size=16, reconnect_s=0.3, max_frame_side=128)
    src.open()
    try:
        # no consumer: the file (75 frames) ends and is reopened
        _wait_for(lambda: src.stats.reconnects >= 1 and src.stats.frames > 75 + 16, 10.0, "the file to loop")
        assert src.stats.dropped_samples > 0
        it = src.samples()
        items = [next(it) for _ in range(17)]  # the queue's 16 + the overflow report
    finally:
        src.close()
    kinds = [s.kind for s in items if isinstance(s, SourceEvent)]
    assert "capture_overflow" in kinds
    frames = [s for s in items if isinstance(s, VideoFrame)]
    assert frames and all(f.image.shape == (128, 128, 3) for f in frames)
    assert np.all(np.diff([f.index for f in frames]) > 0)
    # drop-oldest drops pictures first: the disconnect/reconnect events survived the overflow
    assert {"disconnected", "reconnected"} <= set(kinds)


def test_drop_oldest_queue_keeps_events_while_samples_can_go() -> None:
    q = DropOldestQueue(3)
    ev = SourceEvent(0.0, "disconnected")
    q.put(ev)
    for i in range(10):
        q.put(VideoFrame(t=float(i), image=np.zeros((1, 1, 3), np.uint8), index=i))
    items = [q.get(0), q.get(0), q.get(0)]
    assert items[0] is ev and [s.index for s in items[1:]] == [8, 9]
    assert q.dropped == 8
