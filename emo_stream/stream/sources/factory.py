"""From a command-line input spec to the sources that implement it.

One function owns the mapping, so the CLI, the ROS node and the benchmarks
accept the same spellings:

=====================  ==============================================
``camera``             camera index 0
``camera:2``           camera index 2
``camera:URL``         a network stream / V4L2 path / GStreamer pipeline
``clip.wav`` (.flac,   audio-only file (:class:`WavFileSource`)
.mp3, .ogg, ...)
any other path         video (+ audio) file (:class:`MediaFileSource`)
=====================  ==============================================

A microphone (``mic``) is added to camera input only: a file carries its own
soundtrack. Files are wrapped in :class:`PacedSource` when
``config.source.realtime`` is set. Sources are returned unopened (the caller
opens them, e.g. with ``with``), but a path that does not exist is reported
here already, before any device is touched.
"""

from __future__ import annotations

from pathlib import Path

from emo_stream.config import StreamConfig
from emo_stream.errors import SourceError
from emo_stream.stream.sources.base import Source
from emo_stream.stream.sources.camera import CameraSource
from emo_stream.stream.sources.media_file import MediaFileSource, WavFileSource
from emo_stream.stream.sources.microphone import BACKENDS, MicrophoneSource
from emo_stream.stream.sources.pacing import PacedSource

#: File extensions opened audio-only (a video track in them, e.g. cover art, is ignored).
AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac"})

CAMERA_PREFIX = "camera"


def open_sources(spec: str, config: StreamConfig, mic: str | None = None, mic_backend: str = "pyaudio") -> list[Source]:
    """The (unopened) sources for input ``spec``; raise :class:`SourceError` for an unusable spec."""
    spec = spec.strip()
    if not spec:
        raise SourceError("no input given: pass a media file path, 'camera' or 'camera:N'")
    if spec == CAMERA_PREFIX or spec.startswith(CAMERA_PREFIX + ":"):
        device = spec[len(CAMERA_PREFIX) + 1 :] or "0"
        sources: list[Source] = [
            CameraSource(
                device,
                queue_size=config.buffers.capture_queue,
                reconnect_s=config.source.reconnect_s,
                max_frame_side=config.source.max_frame_side,
            )
        ]
        if mic is not None:
            if mic_backend not in BACKENDS:
                raise SourceError(f"unknown microphone backend {mic_backend!r}; choose one of {', '.join(BACKENDS)}")
            sources.append(
                MicrophoneSource(
                    mic,
                    backend=mic_backend,
                    sample_rate=config.audio.sample_rate,
                    chunk_s=config.audio.chunk_s,
                    queue_size=config.buffers.capture_queue,
                    reconnect_s=config.source.reconnect_s,
                )
            )
        return sources

    if mic is not None:
        raise SourceError(f"a microphone can only be combined with camera input; {spec!r} is a file with its own audio")
    path = Path(spec).expanduser()
    if not path.exists():
        hint = "; for a network stream use camera:URL" if "://" in spec else ""
        raise SourceError(f"input file not found: {path}{hint}")
    if path.is_dir():
        raise SourceError(f"{path} is a directory, not a media file")
    source: Source
    if path.suffix.lower() in AUDIO_EXTENSIONS:
        source = WavFileSource(path, sample_rate=config.audio.sample_rate)
    else:
        source = MediaFileSource(path, sample_rate=config.audio.sample_rate, max_frame_side=config.source.max_frame_side)
    if config.source.realtime:
        source = PacedSource(source, speed=config.source.speed)
    return [source]
