"""open_sources: input spec strings -> the right (unopened) sources, configured from StreamConfig."""

from __future__ import annotations

import shutil

import pytest

from emo_stream.config import StreamConfig
from emo_stream.errors import SourceError
from emo_stream.stream.samples import VideoFrame
from emo_stream.stream.sources.camera import CameraSource
from emo_stream.stream.sources.factory import open_sources
from emo_stream.stream.sources.media_file import MediaFileSource, WavFileSource
from emo_stream.stream.sources.microphone import MicrophoneSource
from emo_stream.stream.sources.pacing import PacedSource


@pytest.fixture
def cfg() -> StreamConfig:
    return StreamConfig.from_dict(
        {
            "audio": {"sample_rate": 16000, "chunk_s": 0.02},
            "buffers": {"capture_queue": 64},
            "source": {"reconnect_s": 0.5, "max_frame_side": 320},
        }
    )


@pytest.mark.parametrize(
    ("spec", "device"),
    [("camera", 0), ("camera:2", 2), ("camera:udp://127.0.0.1:5000", "udp://127.0.0.1:5000"), ("camera:/dev/video1", "/dev/video1")],
)
def test_camera_specs(cfg, spec, device) -> None:
    (cam,) = open_sources(spec, cfg)
    assert isinstance(cam, CameraSource) and cam.device == device
    assert cam.reconnect_s == 0.5 and cam.max_frame_side == 320 and cam._queue._maxlen == 64


def test_camera_with_microphone(cfg) -> None:
    cam, mic = open_sources("camera:1", cfg, mic="USB Audio", mic_backend="sounddevice")
    assert isinstance(cam, CameraSource) and isinstance(mic, MicrophoneSource)
    assert mic.device == "USB Audio" and mic.backend_name == "sounddevice"
    assert (mic.sample_rate, mic.chunk_s, mic.reconnect_s) == (16000, 0.02, 0.5)
    (_, default_mic) = open_sources("camera", cfg, mic="default")
    assert default_mic.device is None
    (_, indexed) = open_sources("camera", cfg, mic="3")
    assert indexed.device == 3
    with pytest.raises(SourceError):
        open_sources("camera", cfg, mic="default", mic_backend="alsa")


def test_audio_extension_opens_audio_only(media, cfg) -> None:
    (src,) = open_sources(str(media / "speech_stereo_44k.wav"), cfg)
    assert type(src) is WavFileSource
    with src:
        assert src.streams == {"audio"}


def test_audio_extension_is_case_insensitive_and_wins_over_content(media, tmp_path, cfg) -> None:
    odd = tmp_path / "SOUNDTRACK.MP3"  # really an mp4 with video: the extension asks for audio only
    shutil.copy(media / "astronaut_speech.mp4", odd)
    (src,) = open_sources(str(odd), cfg)
    assert isinstance(src, WavFileSource)
    with src:
        assert src.streams == {"audio"}


def test_video_file_gets_config_applied(media, cfg) -> None:
    (src,) = open_sources(str(media / "megamind.avi"), cfg)
    assert type(src) is MediaFileSource
    with src:
        assert src.streams == {"video", "audio"}
        frame = next(s for s in src.samples() if isinstance(s, VideoFrame))
    assert max(frame.image.shape[:2]) == 320  # source.max_frame_side


def test_realtime_wraps_files_in_pacing(media, cfg) -> None:
    rt = cfg.replace(source={"realtime": True, "speed": 4.0})
    (src,) = open_sources(str(media / "astronaut_3s_noaudio.mp4"), rt)
    assert isinstance(src, PacedSource) and isinstance(src.inner, MediaFileSource)
    assert src.speed == 4.0 and src.paced and not src.live
    (cam,) = open_sources("camera", rt)
    assert isinstance(cam, CameraSource)  # a live device is never paced


def test_bad_specs_are_one_line_errors(tmp_path, media, cfg) -> None:
    cases = {
        str(tmp_path / "missing.mp4"): "not found",
        str(tmp_path): "directory",
        "rtsp://robot.local/cam": "camera:URL",
        "  ": "no input",
    }
    for spec, needle in cases.items():
        with pytest.raises(SourceError) as exc:
            open_sources(spec, cfg)
        assert needle in str(exc.value) and "\n" not in str(exc.value), spec
    with pytest.raises(SourceError) as exc:
        open_sources(str(media / "megamind.avi"), cfg, mic="default")
    assert "camera" in str(exc.value)
