"""MicrophoneSource through real PortAudio, with an ALSA fake microphone.

No sound card exists on the CI machines. ALSA's ``file`` plugin, configured
in a private HOME's ``.asoundrc``, gives PortAudio a real capture device whose
samples are read from a file. Here that file is a named pipe the test writes
into, so the test decides what the "microphone" hears and when: write speech
and it is recorded; stop writing and the device stalls like an unplugged one
(the plugin itself is not paced in real time: it delivers as fast as data comes).
"""

from __future__ import annotations

import fcntl
import importlib
import itertools
import os
import sys
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest

from emo_stream.errors import SourceError
from emo_stream.stream.samples import AudioChunk, SourceEvent
from emo_stream.stream.sources.microphone import BACKENDS, InputDevice, MicrophoneSource, list_input_devices


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
        return True
    except (ImportError, OSError):  # sounddevice raises OSError without libportaudio
        return False


F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)  # Linux

backends = pytest.mark.parametrize(
    "backend",
    [pytest.param(b, marks=pytest.mark.skipif(not _importable(b), reason=f"{b} not installed")) for b in BACKENDS],
)

ASOUNDRC = """pcm.!default {{ type plug; slave.pcm "fakemic" }}
pcm.fakemic {{ type file; slave.pcm "null"; file "/dev/null"; infile "{fifo}"; format "raw" }}
pcm.null {{ type null }}
"""


def _refresh_portaudio() -> None:
    """Make PortAudio re-read ALSA's config (HOME changed).

    sounddevice initialises PortAudio at import and holds it; PortAudio only
    re-enumerates when the last holder terminates, so a sounddevice imported
    earlier in this process must be re-initialised too.
    """
    sd = sys.modules.get("sounddevice")
    if sd is not None:
        sd._terminate()
        sd._initialize()


class FakeMic:
    """Feeds the ALSA file plugin's named pipe.

    The plugin reads its input unpaced and, when a read comes back short,
    leaves stale bytes in the period and loses frame alignment. So the whole
    payload goes into the (enlarged) pipe *before* the stream starts, and is
    compared only up to its end. After it, a keep-alive thread trickles
    zeros (their content is not checked) so the stream keeps running and can
    be stopped; pausing the trickle makes the device stall like an unplugged one.

    The test keeps the pipe open read-write itself, so opening the device never
    blocks waiting for a writer and the pipe never reports end-of-file.
    """

    PIPE_BYTES = 1 << 20

    def __init__(self, fifo: Path) -> None:
        self.fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
        fcntl.fcntl(self.fd, F_SETPIPE_SZ, self.PIPE_BYTES)
        self._stop = threading.Event()
        self.paused = threading.Event()
        self._thread: threading.Thread | None = None

    def drain(self) -> None:
        """Throw away bytes a previous test left in the pipe."""
        while True:
            try:
                if not os.read(self.fd, 1 << 16):
                    return
            except BlockingIOError:
                return

    def play(self, payload: bytes) -> None:
        """Queue ``payload`` as what the microphone hears next (call before opening the source)."""
        self.stop()
        self.drain()
        assert len(payload) <= self.PIPE_BYTES, "payload must fit in the pipe"
        data = memoryview(payload)
        while data:
            data = data[os.write(self.fd, data) :]
        self._stop.clear()
        self.paused.clear()
        self._thread = threading.Thread(target=self._keep_alive, daemon=True)
        self._thread.start()

    def _keep_alive(self) -> None:
        block = bytes(1024)
        while not self._stop.wait(0.02):
            if not self.paused.is_set():
                try:
                    os.write(self.fd, block)
                except BlockingIOError:
                    pass  # nobody reads: the pipe is full

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def close(self) -> None:
        self.stop()
        os.close(self.fd)


@pytest.fixture(scope="module")
def fake_home(tmp_path_factory):
    """A private HOME whose .asoundrc makes the default capture device read a named pipe."""
    home = tmp_path_factory.mktemp("fakemic_home")
    fifo = home / "mic.fifo"
    os.mkfifo(fifo)
    (home / ".asoundrc").write_text(ASOUNDRC.format(fifo=fifo))
    mic = FakeMic(fifo)
    old = os.environ.get("HOME")
    os.environ["HOME"] = str(home)
    _refresh_portaudio()
    yield mic
    mic.close()
    if old is None:
        os.environ.pop("HOME", None)
    else:
        os.environ["HOME"] = old
    _refresh_portaudio()


@pytest.fixture
def fake_mic(fake_home):
    yield fake_home
    fake_home.stop()


def _pcm16(path: Path, rate: int, channels: int) -> bytes:
    """A file's audio as raw interleaved s16le at ``rate``/``channels`` (the fake mic's input format)."""
    layout = "mono" if channels == 1 else "stereo"
    out = []
    with av.open(str(path)) as c:
        rs = av.AudioResampler(format="s16", layout=layout, rate=rate)
        for frame in c.decode(audio=0):
            out += [f.to_ndarray().tobytes() for f in rs.resample(frame)]
        out += [f.to_ndarray().tobytes() for f in rs.resample(None)]
    return b"".join(out)


def _record(src: MicrophoneSource, n_samples: int, timeout: float = 10.0) -> list:
    items, got = [], 0
    deadline = time.monotonic() + timeout
    for s in src.samples():
        items.append(s)
        if isinstance(s, AudioChunk):
            got += len(s.samples)
            if got >= n_samples:
                return items
        if time.monotonic() > deadline:
            break
    pytest.fail(f"recorded {got} of {n_samples} samples in {timeout}s")


@backends
def test_records_exactly_what_the_device_hears(fake_mic, media, backend) -> None:
    speech = media / "librivox_0870.wav"
    ref = np.frombuffer(_pcm16(speech, 16000, 1), dtype="<i2")
    fake_mic.play(ref.tobytes())
    src = MicrophoneSource(backend=backend, chunk_s=0.032)
    t_open = time.monotonic()
    src.open()
    try:
        items = _record(src, len(ref))
    finally:
        src.close()
    dev, rate, ch = src.opened
    assert (rate, ch) == (16000, 1) and dev.is_default  # 16 kHz mono supported: no conversion
    chunks = [s for s in items if isinstance(s, AudioChunk)]
    audio = np.concatenate([c.samples for c in chunks])[: len(ref)]
    np.testing.assert_array_equal(audio, ref.astype(np.float32) / 32768.0)  # bit-exact, in order, none lost
    assert src.stats.dropped_samples == 0
    assert {len(c.samples) for c in chunks[:-1]} == {512}  # chunk_s * rate
    for a, b in itertools.pairwise(chunks):
        assert b.t == pytest.approx(a.end, abs=1e-9)  # continuous timestamps
    assert t_open - 1.0 < chunks[0].t < time.monotonic()  # monotonic clock, at capture
    assert not src._thread.is_alive()


@backends
def test_device_at_its_own_rate_is_converted(fake_mic, media, backend, read_wav_mono, best_lag_corr) -> None:
    """A 44.1 kHz stereo device (e.g. a USB webcam mic) still yields 16 kHz mono with the same content."""
    speech_s, silence_s = 3.0, 0.5
    stereo = _pcm16(media / "speech_stereo_44k.wav", 44100, 2)[: int(speech_s * 44100) * 4]
    fake_mic.play(stereo + bytes(int(silence_s * 44100) * 4))
    ref = read_wav_mono(media / "librivox_0870.wav")[: int(speech_s * 16000)]
    src = MicrophoneSource(backend=backend, device_rate=44100, device_channels=2)
    src.open()
    try:
        items = _record(src, int((speech_s + silence_s) * 16000))
    finally:
        src.close()
    assert src.opened[1:] == (44100, 2)
    chunks = [s for s in items if isinstance(s, AudioChunk)]
    assert all(c.sample_rate == 16000 and c.samples.ndim == 1 and c.samples.dtype == np.float32 for c in chunks)
    audio = np.concatenate([c.samples for c in chunks])
    lag, corr = best_lag_corr(audio[: len(ref)], ref, max_lag=160)
    assert abs(lag) <= 2 and corr > 0.99, (lag, corr)
    # the silence that followed is silent, starting where the speech ended
    assert np.abs(audio[int((speech_s + 0.02) * 16000) : int((speech_s + silence_s - 0.05) * 16000)]).max() < 1e-3
    for a, b in itertools.pairwise(chunks):
        assert b.t == pytest.approx(a.end, abs=1e-9)


@backends
def test_stalled_device_disconnects_and_reconnects(fake_mic, backend) -> None:
    fake_mic.play(b"")
    src = MicrophoneSource(backend=backend, stall_s=0.3, reconnect_s=0.1)
    src.open()
    try:
        it = src.samples()
        first = next(s for s in it if isinstance(s, AudioChunk))
        fake_mic.paused.set()  # the device stops delivering
        events = []
        for s in it:
            if isinstance(s, SourceEvent):
                events.append(s)
                if s.kind == "disconnected":
                    fake_mic.paused.clear()  # ... and comes back
                if s.kind == "reconnected":
                    break
        after = next(s for s in it if isinstance(s, AudioChunk))
    finally:
        src.close()
    kinds = [e.kind for e in events]
    assert kinds[-2:] == ["disconnected", "reconnected"]
    assert src.stats.reconnects == 1 and src.stats.reconnect_attempts >= 1
    gone, back = events[-2], events[-1]
    assert first.t < gone.t < back.t
    # audio after the reconnect is stamped after the loss (its first block may
    # predate the 'reconnected' stamp by up to a block: it was recorded while reopening)
    assert after.t > gone.t and after.end > back.t - 0.1


@backends
def test_device_selection_and_listing(fake_mic, backend) -> None:
    devices = list_input_devices(backend)
    assert all(isinstance(d, InputDevice) and d.channels > 0 for d in devices)
    names = [d.name for d in devices]
    assert "fakemic" in names and sum(d.is_default for d in devices) == 1
    fake_mic.play(b"")
    src = MicrophoneSource("FAKE", backend=backend)  # case-insensitive name substring
    src.open()
    try:
        assert src.opened[0].name == "fakemic"
    finally:
        src.close()
    with pytest.raises(SourceError) as exc:
        MicrophoneSource("no-such-mic", backend=backend).open()
    msg = str(exc.value)
    assert "no-such-mic" in msg and "fakemic" in msg and "\n" not in msg
    with pytest.raises(SourceError) as exc:
        MicrophoneSource(99, backend=backend).open()
    assert "99" in str(exc.value) and "\n" not in str(exc.value)


@backends
def test_no_input_device_at_all(tmp_path, monkeypatch, backend) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # no .asoundrc and no sound card: PortAudio lists nothing
    _refresh_portaudio()
    try:
        if any(d.channels for d in list_input_devices(backend)):
            pytest.skip("this machine has a real capture device")
        with pytest.raises(SourceError) as exc:
            MicrophoneSource(backend=backend).open()
        assert "no audio input device" in str(exc.value) and "\n" not in str(exc.value)
    finally:
        monkeypatch.undo()
        _refresh_portaudio()


def test_format_fallback_prefers_16k_mono_then_native() -> None:
    """The choice of capture format, given what a device accepts."""

    class Accepts:
        def __init__(self, ok: set[tuple[int, int]]) -> None:
            self.ok = ok

        def supports(self, index: int, rate: int, channels: int) -> bool:
            return (rate, channels) in self.ok

    usb = InputDevice(3, "USB webcam", channels=2, default_rate=48000.0)
    src = MicrophoneSource(backend="pyaudio")
    src._backend = Accepts({(16000, 1), (48000, 2)})
    assert src._pick_format(usb) == (16000, 1)
    src._backend = Accepts({(48000, 2)})
    assert src._pick_format(usb) == (48000, 2)
    src._backend = Accepts({(44100, 1)})
    with pytest.raises(SourceError) as exc:
        src._pick_format(usb)
    assert "USB webcam" in str(exc.value)


def test_missing_portaudio_library_is_one_line(tmp_path, monkeypatch) -> None:
    """sounddevice raises OSError (not ImportError) at import when libportaudio2 is missing."""
    (tmp_path / "sounddevice.py").write_text("raise OSError('PortAudio library not found')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "sounddevice", raising=False)
    with pytest.raises(SourceError) as exc:
        MicrophoneSource(backend="sounddevice").open()
    assert "libportaudio2" in str(exc.value) and "\n" not in str(exc.value)


def test_unknown_backend() -> None:
    with pytest.raises(SourceError):
        MicrophoneSource(backend="alsa")
