"""A microphone through PortAudio (PyAudio or sounddevice), captured off the consumer's thread.

PortAudio calls us back from its audio thread with each block of samples.
That callback must never wait for anything (a late callback means an input
overflow at the driver: lost audio nobody counts), so it only stamps the block
with the monotonic clock and appends a copy to a non-blocking queue. The
source's capture thread then converts blocks (any rate/channels/int16 ->
mono float32 at ``sample_rate``, with the one :class:`AudioConverter` the
project uses) and hands :class:`AudioChunk` objects to the consumer through
the drop-oldest queue of :class:`LiveSource`.

Many devices cannot record 16 kHz mono (USB webcams: 48 kHz stereo only), so
the device is opened at the requested format when it supports it, otherwise
at its own default rate and channel count, and converted.

Timestamps are the monotonic clock (comparable with camera frames): the first
sample of a block was recorded one block duration before the callback ran.
Stamping and conditioning are the file source's (one
:class:`~emo_stream.stream.sources.audio_convert.AudioStamper`): continuous
within a run of blocks, restarted at a real gap (> ``AUDIO_GAP_S``, e.g. after
an overflow), and clipping, cancelling channels or a DC offset are flagged.

A device that stops calling back (unplugged, driver error) becomes a
``disconnected`` event; the capture thread then retries every ``reconnect_s``
(re-enumerating devices, since an unplugged USB device comes back with a new
index) and emits ``reconnected`` once audio flows again.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from emo_stream.errors import SourceError
from emo_stream.stream.samples import AUDIO, SourceEvent
from emo_stream.stream.sources.audio_convert import AUDIO_GAP_S, AudioStamper
from emo_stream.stream.sources.base import DropOldestQueue, LiveSource

__all__ = ["AUDIO_GAP_S", "BACKENDS", "InputDevice", "MicrophoneSource", "list_input_devices", "parse_mic"]

BACKENDS = ("pyaudio", "sounddevice")


@dataclass(frozen=True)
class InputDevice:
    """One capture device as PortAudio lists it."""

    index: int
    name: str
    channels: int
    default_rate: float
    is_default: bool = False

    def __str__(self) -> str:
        star = "*" if self.is_default else " "
        return f"{star}{self.index:3d}  {self.name}  ({self.channels} ch, {self.default_rate:g} Hz)"


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Hide what ALSA and JACK print to fd 2 while PortAudio enumerates devices.

    Pa_Initialize probes every ALSA plugin and JACK and prints a dozen lines
    ("ALSA lib pcm.c ... Unknown PCM", "jack server is not running") that are
    not errors and drown the one line that matters. Real failures still
    surface as exceptions.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


# -- backends -------------------------------------------------------------
class _Backend:
    """What the source needs from a PortAudio binding, nothing more."""

    name = ""

    def devices(self) -> list[InputDevice]:
        raise NotImplementedError

    def supports(self, index: int, rate: int, channels: int) -> bool:
        raise NotImplementedError

    def open(self, index: int, rate: int, channels: int, block: int, on_block: Callable[[np.ndarray, int, bool], None]) -> Any:
        raise NotImplementedError

    def active(self, stream: Any) -> bool:
        raise NotImplementedError

    def close_stream(self, stream: Any) -> None: ...

    def reinit(self) -> None:
        """Re-enumerate devices (after an unplug)."""

    def terminate(self) -> None: ...


class _PyAudioBackend(_Backend):
    name = "pyaudio"

    def __init__(self) -> None:
        try:
            import pyaudio
        except ImportError as exc:
            raise SourceError(
                f"microphone backend 'pyaudio' is not installed ({exc}); run: pip install 'emo-stream[audio]' (needs Debian portaudio19-dev)"
            ) from None
        self._pa_mod = pyaudio
        self._pa = self._init()

    def _init(self):
        try:
            with _quiet_stderr():
                return self._pa_mod.PyAudio()
        except Exception as exc:
            raise SourceError(f"PortAudio could not start ({exc})") from None

    def devices(self) -> list[InputDevice]:
        pa = self._pa
        try:
            default = pa.get_default_input_device_info()["index"]
        except OSError:
            default = -1
        out = []
        for i in range(pa.get_device_count()):
            info = pa.get_device_info_by_index(i)
            if int(info.get("maxInputChannels", 0)) > 0:
                out.append(InputDevice(i, str(info["name"]), int(info["maxInputChannels"]), float(info["defaultSampleRate"]), i == default))
        return out

    def supports(self, index: int, rate: int, channels: int) -> bool:
        try:
            return bool(self._pa.is_format_supported(rate, input_device=index, input_channels=channels, input_format=self._pa_mod.paInt16))
        except ValueError:
            return False

    def open(self, index, rate, channels, block, on_block):
        pa_mod = self._pa_mod
        overflow_flag = pa_mod.paInputOverflow

        def callback(in_data, frame_count, time_info, status):
            on_block(np.frombuffer(in_data, dtype=np.int16).reshape(-1, channels), frame_count, bool(status & overflow_flag))
            return (None, pa_mod.paContinue)

        return self._pa.open(
            rate=rate, channels=channels, format=pa_mod.paInt16, input=True,
            input_device_index=index, frames_per_buffer=block, stream_callback=callback,
        )  # fmt: skip

    def active(self, stream) -> bool:
        try:
            return bool(stream.is_active())
        except OSError:
            return False

    def close_stream(self, stream) -> None:
        with contextlib.suppress(Exception):
            stream.stop_stream()
        with contextlib.suppress(Exception):
            stream.close()

    def reinit(self) -> None:
        self.terminate()
        self._pa = self._init()

    def terminate(self) -> None:
        if self._pa is not None:
            with contextlib.suppress(Exception):
                self._pa.terminate()
            self._pa = None


class _SoundDeviceBackend(_Backend):
    name = "sounddevice"

    def __init__(self) -> None:
        try:
            with _quiet_stderr():
                import sounddevice
        except ImportError as exc:
            raise SourceError(f"microphone backend 'sounddevice' is not installed ({exc}); run: pip install 'emo-stream[audio]'") from None
        except OSError as exc:  # sounddevice raises OSError when libportaudio is missing
            raise SourceError(f"the PortAudio library is missing ({exc}); install Debian libportaudio2") from None
        self._sd = sounddevice

    def devices(self) -> list[InputDevice]:
        sd = self._sd
        try:
            default = sd.query_devices(kind="input")["index"]
        except sd.PortAudioError:
            default = -1
        return [
            InputDevice(int(d["index"]), str(d["name"]), int(d["max_input_channels"]), float(d["default_samplerate"]), d["index"] == default)
            for d in sd.query_devices()
            if int(d["max_input_channels"]) > 0
        ]

    def supports(self, index: int, rate: int, channels: int) -> bool:
        try:
            self._sd.check_input_settings(device=index, channels=channels, dtype="int16", samplerate=rate)
            return True
        except (self._sd.PortAudioError, ValueError):
            return False

    def open(self, index, rate, channels, block, on_block):
        def callback(indata, frames, time_info, status):
            on_block(indata.copy(), frames, bool(status.input_overflow))  # indata is only valid during the call

        stream = self._sd.InputStream(device=index, samplerate=rate, channels=channels, dtype="int16", blocksize=block, callback=callback)
        stream.start()
        return stream

    def active(self, stream) -> bool:
        return bool(stream.active)

    def close_stream(self, stream) -> None:
        with contextlib.suppress(Exception):
            stream.abort()
        with contextlib.suppress(Exception):
            stream.close()

    def reinit(self) -> None:
        # sounddevice enumerates once per PortAudio initialisation; its private
        # re-init is the documented way to see a re-plugged device. It also
        # stops any other sounddevice stream of this process, which is why it
        # is only done after our device was lost.
        with _quiet_stderr():
            self._sd._terminate()
            self._sd._initialize()

    def terminate(self) -> None:
        pass  # sounddevice's PortAudio session belongs to the whole process


def _backend(name: str) -> _Backend:
    if name == "pyaudio":
        return _PyAudioBackend()
    if name == "sounddevice":
        return _SoundDeviceBackend()
    raise SourceError(f"unknown microphone backend {name!r}; choose one of {', '.join(BACKENDS)}")


def list_input_devices(backend: str = "pyaudio") -> list[InputDevice]:
    """Capture devices PortAudio sees, the default one marked ``is_default``."""
    b = _backend(backend)
    try:
        return b.devices()
    finally:
        b.terminate()


def parse_mic(spec: str | int | None) -> int | str | None:
    """``None``/``""``/``"default"`` -> None, ``"2"`` -> 2, anything else is a name substring."""
    if spec is None or isinstance(spec, int):
        return spec
    s = spec.strip()
    if s == "" or s.lower() == "default":
        return None
    return int(s) if s.isdigit() else s


def _describe(devices: list[InputDevice], limit: int = 8) -> str:
    names = [f"{d.index} {d.name!r}" for d in devices[:limit]]
    more = f" (+{len(devices) - limit} more)" if len(devices) > limit else ""
    return ", ".join(names) + more if names else "none"


class MicrophoneSource(LiveSource):
    """Audio from a PortAudio input device as mono float32 :class:`AudioChunk` objects.

    Args:
        device: None (the default input), an index, or a case-insensitive
            substring of the device name (preferred on robots: indexes change
            when USB devices are re-plugged).
        backend: ``"pyaudio"`` or ``"sounddevice"``.
        sample_rate: rate of the chunks delivered.
        chunk_s: PortAudio block length (also the chunk length at the device rate).
        queue_size: chunks held before the oldest is dropped.
        reconnect_s: wait between attempts to reopen a lost device.
        clock: monotonic seconds; injectable.
        device_rate, device_channels: force the capture format (for devices
            that misreport what they support); default: ``sample_rate`` mono if
            supported, else the device's default rate.
        stall_s: no audio for this long means the device is gone.
    """

    def __init__(
        self,
        device: int | str | None = None,
        backend: str = "pyaudio",
        sample_rate: int = 16000,
        chunk_s: float = 0.032,
        queue_size: int = 256,
        reconnect_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        device_rate: int | None = None,
        device_channels: int | None = None,
        stall_s: float = 1.0,
    ) -> None:
        super().__init__(queue_size=queue_size, clock=clock)
        if backend not in BACKENDS:
            raise SourceError(f"unknown microphone backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        self.device = parse_mic(device)
        self.backend_name = backend
        self.sample_rate = int(sample_rate)
        self.chunk_s = float(chunk_s)
        self.reconnect_s = float(reconnect_s)
        self.device_rate = device_rate
        self.device_channels = device_channels
        self.stall_s = float(stall_s)
        self.name = f"mic:{'default' if self.device is None else self.device}"
        #: what was actually opened: (device, rate, channels)
        self.opened: tuple[InputDevice, int, int] | None = None
        self._backend: _Backend | None = None
        self._stream: Any = None
        #: (monotonic time of the first sample, samples, device rate, overflow) per PortAudio block
        self._blocks: DropOldestQueue[tuple[float, np.ndarray, int, bool]] = DropOldestQueue(queue_size)
        self._stamper = AudioStamper(self.sample_rate, stats=self.stats)

    @property
    def streams(self) -> frozenset[str]:
        return frozenset({AUDIO})

    def open(self) -> None:
        """Find and open the device now (errors are one-line SourceErrors), then start capturing."""
        self._backend = backend = _backend(self.backend_name)
        try:
            self._stream = self._open_stream()
        except SourceError:
            backend.terminate()
            raise
        self.start_capture()

    @property
    def _api(self) -> _Backend:
        """The binding :meth:`open` picked (what follows runs only once it did)."""
        assert self._backend is not None, "open() first"
        return self._backend

    # -- device selection -----------------------------------------------
    def _find_device(self) -> InputDevice:
        devices = self._api.devices()
        if not devices:
            raise SourceError(f"no audio input device found ({self.backend_name} lists none); is a microphone connected?")
        want = self.device
        if want is None:
            return next((d for d in devices if d.is_default), devices[0])
        if isinstance(want, int):
            for d in devices:
                if d.index == want:
                    return d
            raise SourceError(f"audio input device {want} does not exist; inputs: {_describe(devices)}")
        for d in devices:
            if want.lower() in d.name.lower():
                return d
        raise SourceError(f"no audio input device matches {want!r}; inputs: {_describe(devices)}")

    def _pick_format(self, dev: InputDevice) -> tuple[int, int]:
        native = round(dev.default_rate) or self.sample_rate
        if self.device_rate or self.device_channels:
            candidates = [(self.device_rate or self.sample_rate, self.device_channels or 1)]
        else:
            candidates = [(self.sample_rate, 1), (native, 1), (native, min(2, dev.channels)), (native, dev.channels)]
        for rate, ch in dict.fromkeys(candidates):  # de-duplicated, order kept
            if ch <= dev.channels and self._api.supports(dev.index, rate, ch):
                return rate, ch
        tried = ", ".join(f"{r} Hz x{c}" for r, c in dict.fromkeys(candidates))
        raise SourceError(f"audio input {dev.name!r} accepts none of: {tried}")

    def _open_stream(self) -> Any:
        dev = self._find_device()
        rate, ch = self._pick_format(dev)
        block = max(1, round(self.chunk_s * rate))
        on_block = self._on_block
        try:
            with _quiet_stderr():
                stream = self._api.open(dev.index, rate, ch, block, lambda data, n, ovf: on_block(data, n, ovf, rate))
        except Exception as exc:
            raise SourceError(f"audio input {dev.name!r} could not be opened at {rate} Hz x{ch} ({exc})") from None
        self.opened = (dev, rate, ch)
        return stream

    # -- PortAudio's thread ---------------------------------------------
    def _on_block(self, data: np.ndarray, frames: int, overflow: bool, rate: int) -> None:
        """Runs on PortAudio's audio thread: stamp and enqueue, nothing else."""
        t_first = self._clock() - frames / rate
        if not self._blocks.put((t_first, data, rate, overflow)):
            self.stats.dropped_samples += 1

    # -- capture thread -------------------------------------------------
    def _capture_loop(self) -> None:
        stream = self._stream
        self._stream = None
        last_data = self._clock()
        try:
            while not self._stop.is_set():
                if stream is None:
                    if self._stop.wait(self.reconnect_s):
                        break
                    stream = self._reconnect()
                    last_data = self._clock()
                    continue
                item = self._blocks.get(timeout=0.05)
                if item is None:
                    now = self._clock()
                    if now - last_data > self.stall_s or not self._api.active(stream):
                        self._emit_all(self._stamper.flush(restart=True))  # the tail, on the old clock
                        self._emit(SourceEvent(now, "disconnected", f"{self.name}: no audio for {now - last_data:.1f}s; retrying every {self.reconnect_s:g}s"))
                        self.stats.note_error(f"{self.name}: stream stopped")
                        self._api.close_stream(stream)
                        stream = None
                    continue
                t_first, data, rate, overflow = item
                last_data = self._clock()
                if overflow:
                    self._emit(SourceEvent(t_first, "capture_overflow", "PortAudio input overflow: audio lost at the driver"))
                self._emit_all(self._stamper.push(data, rate, t_first))
        finally:
            if stream is not None:
                self._api.close_stream(stream)
            self._api.terminate()

    def _emit_all(self, items) -> None:
        for item in items:
            self._emit(item)

    def _reconnect(self) -> Any:
        """One attempt to find and reopen the device; None if it is still gone."""
        self.stats.reconnect_attempts += 1
        while self._blocks.get(timeout=0) is not None:  # late blocks of the dead stream
            pass
        try:
            self._api.reinit()
            stream = self._open_stream()
        except SourceError as exc:
            self.stats.note_error(str(exc))
            return None
        self.stats.reconnects += 1
        self._emit(SourceEvent(self._clock(), "reconnected", f"{self.name} is back"))
        return stream
