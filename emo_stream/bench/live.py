"""Live-like input for ``emo-stream bench --live``: a loopback camera and an ALSA-file microphone.

Paced files (``--realtime``) still hand the pipeline decoded frames from the
same process; a robot gets them from capture threads fed by devices. This
module makes real devices out of a clip, on a machine that has neither a
camera nor a sound card (../shared/PLATFORM.md):

* **camera**: ``ffmpeg -re`` sends the clip's video at its frame rate as
  MPEG-TS over UDP to 127.0.0.1; :class:`~emo_stream.stream.sources.camera.CameraSource`
  reads ``camera:udp://127.0.0.1:PORT`` through OpenCV, as it would a network camera;
* **microphone**: a private ``HOME`` whose ``.asoundrc`` makes ALSA's default
  capture device the ``file`` plugin reading a named pipe; a thread writes the
  clip's audio (16-bit mono) into the pipe in real time, so PortAudio's
  :class:`~emo_stream.stream.sources.microphone.MicrophoneSource` records it
  paced like a microphone (the plugin itself delivers as fast as data comes).

Both start together and run like devices that are always on: UDP packets
nobody receives are lost, and audio nobody reads is dropped too (a block is
not written while more than :data:`MAX_BACKLOG_BYTES` wait unread in the
pipe, as a sound card overwrites its ring buffer), so whenever the pipeline
opens its sources, sound and picture are of the same moment of the clip.
Blocks of 2048 bytes (64 ms) are written whole: pipe writes up to
``PIPE_BUF`` are atomic, and with 2-byte frames a short read can never split
a sample. After the clip the pipe gets silence until the input is closed (an
empty pipe would look like an unplugged microphone).

``HOME`` is changed for the whole process while the input is open (ALSA reads
``~/.asoundrc`` when PortAudio starts): open it after models are loaded and
model caches resolved (``emo-stream bench`` does).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from pathlib import Path

import numpy as np

from emo_stream.errors import EmoStreamError

ASOUNDRC = """pcm.!default {{ type plug; slave.pcm "fakemic" }}
pcm.fakemic {{ type file; slave.pcm "null"; file "/dev/null"; infile "{fifo}"; format "raw" }}
pcm.null {{ type null }}
"""
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)  # Linux
#: Bytes per write into the microphone pipe: 1024 frames of s16 mono (64 ms at 16 kHz), <= PIPE_BUF.
BLOCK_BYTES = 2048
#: Unread bytes in the pipe above which new audio is dropped (128 ms: a sound card's ring buffer).
MAX_BACKLOG_BYTES = 2 * BLOCK_BYTES


def _unread_bytes(fd: int) -> int:
    """Bytes waiting in a pipe (FIONREAD)."""
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _refresh_portaudio() -> None:
    """Make an already started PortAudio (sounddevice starts it at import) re-read ALSA's config."""
    sd = sys.modules.get("sounddevice")
    if sd is not None:
        sd._terminate()
        sd._initialize()


class LiveLikeInput:
    """Context manager: ``with LiveLikeInput(clip) as live: open_sources(live.spec, cfg, mic=live.mic)``.

    Raises :class:`~emo_stream.errors.EmoStreamError` (one line at the CLI)
    when ffmpeg is missing or the camera stream does not start.
    """

    def __init__(self, clip: str | Path, sample_rate: int = 16000, start_timeout_s: float = 20.0) -> None:
        self.clip = Path(clip)
        self.sample_rate = int(sample_rate)
        self.start_timeout_s = float(start_timeout_s)
        self.port = _free_udp_port()
        self.spec = f"camera:udp://127.0.0.1:{self.port}"
        #: Microphone spec for :func:`~emo_stream.stream.sources.factory.open_sources` (ALSA's default device).
        self.mic = "default"
        self.audio_s = 0.0
        #: audio dropped because nobody was recording (before the microphone opened)
        self.dropped_bytes = 0
        self._proc: subprocess.Popen | None = None
        self._fd: int | None = None
        self._dir: Path | None = None
        self._old_home: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0: float | None = None

    # ------------------------------------------------------------------ set-up
    def __enter__(self) -> LiveLikeInput:
        ffmpeg = shutil.which("ffmpeg")
        if ffmpeg is None:
            raise EmoStreamError("--live needs Debian ffmpeg for the loopback camera (scripts/apt_install.sh ffmpeg)")
        pcm = self._pcm16()
        self.audio_s = len(pcm) / 2 / self.sample_rate
        try:
            self._fake_mic_home()
            self._start_camera(ffmpeg)
            self._t0 = time.monotonic()
            self._thread = threading.Thread(target=self._feed_mic, args=(pcm,), name="bench-fake-mic", daemon=True)
            self._thread.start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _pcm16(self) -> bytes:
        """The clip's audio as s16le mono at the stream's rate (the stream's own decoder), or b'' without audio."""
        from emo_stream.errors import SourceError
        from emo_stream.stream.sources.media_file import read_audio

        try:
            audio = read_audio(self.clip, self.sample_rate)
        except SourceError:
            return b""  # a silent clip: the microphone hears silence
        return (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2").tobytes()

    def _fake_mic_home(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="emo-bench-live-"))
        fifo = self._dir / "mic.fifo"
        os.mkfifo(fifo)
        (self._dir / ".asoundrc").write_text(ASOUNDRC.format(fifo=fifo))
        # Held read-write by us: opening the device never blocks and the pipe never reports EOF.
        self._fd = os.open(fifo, os.O_RDWR)
        try:
            fcntl.fcntl(self._fd, F_SETPIPE_SZ, 1 << 16)
        except OSError:
            pass
        self._old_home = os.environ.get("HOME")
        os.environ["HOME"] = str(self._dir)
        _refresh_portaudio()

    def _start_camera(self, ffmpeg: str) -> None:
        url = f"udp://127.0.0.1:{self.port}"
        cmd = [ffmpeg, "-hide_banner", "-loglevel", "error", "-re", "-i", str(self.clip),
               "-an", "-c:v", "mpeg1video", "-q:v", "4", "-f", "mpegts", f"{url}?pkt_size=1316"]  # fmt: skip
        # Wait for the first packet on the port before handing it to the camera source
        # (ffmpeg starts slowly on a busy machine); the probe closes before capture binds.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", self.port))
            probe.settimeout(self.start_timeout_s)
            self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
            try:
                probe.recv(2048)
            except TimeoutError:
                err = self._proc.stderr.read().decode(errors="replace").strip() if self._proc.poll() is not None and self._proc.stderr else ""
                raise EmoStreamError(f"--live: the loopback camera sent nothing within {self.start_timeout_s:.0f} s {err}".strip()) from None

    def _feed_mic(self, pcm: bytes) -> None:
        """Write ``pcm`` in real time, then silence until stopped."""
        assert self._fd is not None
        bytes_per_s = 2 * self.sample_rate
        t0 = time.monotonic()
        sent = 0
        silence = bytes(BLOCK_BYTES)
        while not self._stop.is_set():
            block = pcm[sent : sent + BLOCK_BYTES] if sent < len(pcm) else silence
            block = block + bytes(BLOCK_BYTES - len(block)) if len(block) < BLOCK_BYTES else block
            wait = t0 + sent / bytes_per_s - time.monotonic()
            if wait > 0 and self._stop.wait(wait):
                return
            sent += BLOCK_BYTES
            try:
                if _unread_bytes(self._fd) > MAX_BACKLOG_BYTES:
                    self.dropped_bytes += len(block)  # nobody is recording: the sound is gone
                    continue
                os.write(self._fd, block)
            except OSError:
                return  # closed under us

    def remaining_s(self, media_s: float) -> float:
        """Seconds until a clip of ``media_s`` has been played from the start of the input."""
        return max(0.0, media_s - (time.monotonic() - self._t0)) if self._t0 is not None else media_s

    @property
    def camera_running(self) -> bool:
        """True while ffmpeg is still sending (it exits at the clip's end)."""
        return self._proc is not None and self._proc.poll() is None

    # ------------------------------------------------------------------ tear-down
    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
            self._proc = None
        if self._old_home is not None or self._dir is not None:
            if self._old_home is None:
                os.environ.pop("HOME", None)
            else:
                os.environ["HOME"] = self._old_home
            _refresh_portaudio()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
