"""MediaFileSource / WavFileSource on real media, damaged media and made-up edge cases."""

from __future__ import annotations

import itertools
import os
import shutil
import struct
import subprocess
import threading
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from emo_stream.errors import SourceError
from emo_stream.stream.samples import AudioChunk, SourceEvent, VideoFrame
from emo_stream.stream.sources.media_file import AUDIO_GAP_S, MediaFileSource, WavFileSource


def _read_all(source, collect):
    with source:
        return collect(source.samples())


def _assert_contiguous(chunks: list[AudioChunk], tol: float = 1e-6) -> None:
    for a, b in itertools.pairwise(chunks):
        assert b.t == pytest.approx(a.end, abs=tol), (a.t, a.end, b.t)


def _assert_one_line(exc: pytest.ExceptionInfo, *needles: str) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and len(msg) < 300, msg
    assert "Traceback" not in msg
    for needle in needles:
        assert needle in msg, msg
    return msg


# -- real media -------------------------------------------------------------
def test_megamind_video_audio_and_its_corrupt_packet(media, collect) -> None:
    path = media / "megamind.avi"
    with av.open(str(path)) as c:  # what the container itself says, independent of our code
        vs = c.streams.video[0]
        n_expected, fps = vs.frames, float(vs.average_rate)
        width, height = vs.codec_context.width, vs.codec_context.height
    src = MediaFileSource(path)
    got = _read_all(src, collect)

    assert src.streams == {"video", "audio"}
    frames, chunks = got.frames, got.chunks
    assert abs(len(frames) - n_expected) <= 1
    ts = np.array([f.t for f in frames])
    assert np.all(np.diff(ts) > 0), "frame timestamps must increase"
    # timestamps are media time: steps of one frame period, spanning the clip
    assert np.median(np.diff(ts)) == pytest.approx(1 / fps, rel=1e-3)
    assert ts[-1] - ts[0] == pytest.approx((len(frames) - 1) / fps, abs=0.05)
    assert src.duration == pytest.approx(ts[-1] + 1 / fps, abs=0.1)
    assert [f.index for f in frames] == list(range(len(frames)))
    img = frames[100].image
    assert img.shape == (height, width, 3) and img.dtype == np.uint8 and img.flags["C_CONTIGUOUS"]

    # audio: mono float32 16 kHz, continuous, covering the clip
    assert all(c.sample_rate == 16000 and c.samples.ndim == 1 and c.samples.dtype == np.float32 for c in chunks)
    _assert_contiguous(chunks)
    total = sum(len(c.samples) for c in chunks) / 16000
    assert total == pytest.approx(src.duration, abs=0.1)
    assert chunks[-1].end == pytest.approx(ts[-1], abs=0.1)
    assert np.abs(got.audio).max() > 0.1  # real dialogue, not silence

    # the corrupt AC3 packet: reported, counted, and the stream went on past it
    corrupt = [e for e in got.events if e.kind == "corrupt_input"]
    assert len(corrupt) >= 1 and src.stats.corrupt_packets == len(corrupt)
    first_bad = got.items.index(corrupt[0])
    assert sum(isinstance(s, AudioChunk) for s in got.items[first_bad:]) > 100
    assert src.stats.frames == len(frames) and src.stats.audio_chunks == len(chunks)


def test_frames_are_bgr(media, collect) -> None:
    """Compare with the raw RGB astronaut the clip was encoded from: channel order must be reversed."""
    rgb = np.fromfile(media / "astronaut_512.rgb", dtype=np.uint8).reshape(512, 512, 3).astype(np.int16)
    src = MediaFileSource(media / "astronaut_3s_noaudio.mp4")
    with src:
        frame = next(s for s in src.samples() if isinstance(s, VideoFrame))
    img = frame.image.astype(np.int16)
    as_bgr = np.abs(img - rgb[:, :, ::-1]).mean()
    as_rgb = np.abs(img - rgb).mean()
    assert as_bgr < 8 and as_rgb > 3 * as_bgr, (as_bgr, as_rgb)


def test_mp4_speech_matches_the_wav_it_was_made_from(media, collect, read_wav_mono, best_lag_corr) -> None:
    ref = read_wav_mono(media / "librivox_0870.wav")
    src = MediaFileSource(media / "astronaut_speech.mp4")
    got = _read_all(src, collect)
    audio = got.audio
    _assert_contiguous(got.chunks)
    assert len(audio) / 16000 == pytest.approx(len(ref) / 16000, abs=0.1)
    lag, corr = best_lag_corr(audio, ref, max_lag=800)  # AAC may shift by priming samples: allow 50 ms
    assert corr > 0.95, (lag, corr)
    assert len(got.frames) == pytest.approx(src.duration * src.fps, abs=2)


def test_stereo_44k_wav_becomes_mono_16k_with_the_same_content(media, collect, read_wav_mono, best_lag_corr) -> None:
    ref = read_wav_mono(media / "librivox_0870.wav")
    src = WavFileSource(media / "speech_stereo_44k.wav")
    got = _read_all(src, collect)
    assert src.streams == {"audio"} and not got.frames
    audio = got.audio
    with av.open(str(media / "speech_stereo_44k.wav")) as c:
        s = c.streams.audio[0]
        assert (s.rate, len(s.layout.channels)) == (44100, 2)  # the input really is stereo 44.1k
        duration = float(s.duration * s.time_base)
    assert len(audio) / 16000 == pytest.approx(duration, rel=0.01)
    lag, corr = best_lag_corr(audio, ref, max_lag=16)
    assert abs(lag) <= 1 and corr > 0.99, (lag, corr)
    _assert_contiguous(got.chunks)


def test_file_without_audio_track(media, collect) -> None:
    src = MediaFileSource(media / "astronaut_3s_noaudio.mp4")
    got = _read_all(src, collect)
    assert src.streams == {"video"}
    assert got.frames and not got.chunks
    with pytest.raises(SourceError) as exc:
        MediaFileSource(media / "astronaut_3s_noaudio.mp4", streams={"video", "audio"}).open()
    _assert_one_line(exc, "no audio track")
    with pytest.raises(SourceError) as exc:
        WavFileSource(media / "astronaut_3s_noaudio.mp4").open()
    _assert_one_line(exc, "no audio track")


def test_audio_only_view_of_a_video_file(media, collect) -> None:
    src = WavFileSource(media / "silence_noface_3s.mp4")
    got = _read_all(src, collect)
    assert src.streams == {"audio"} and not got.frames
    assert np.abs(got.audio).max() < 1e-3  # the clip's track is digital silence
    assert len(got.audio) / 16000 == pytest.approx(3.0, abs=0.07)


def test_downscale_keeps_aspect(media) -> None:
    src = MediaFileSource(media / "megamind.avi", max_frame_side=256, streams={"video"})
    with src:
        img = next(s for s in src.samples() if isinstance(s, VideoFrame)).image
    h, w = img.shape[:2]
    assert max(h, w) == 256 and img.shape[2] == 3 and img.flags["C_CONTIGUOUS"]
    assert w / h == pytest.approx(720 / 528, rel=0.01)


def test_close_from_another_thread_stops_the_stream(media) -> None:
    src = MediaFileSource(media / "megamind.avi")
    src.open()
    seen = 0
    for i, _ in enumerate(src.samples()):
        seen = i
        if i == 20:
            t = threading.Thread(target=src.close)
            t.start()
            t.join()
    assert 20 <= seen < 40  # at most the samples of the packet being decoded
    src.close()  # twice is fine


# -- timestamps from made-up files --------------------------------------------
def _write_pcm_mkv(path: Path, segments: list[tuple[float, float]], rate: int = 16000) -> None:
    """Matroska with PCM audio; each (start_s, dur_s) segment stamped at its own time."""
    with av.open(str(path), "w", format="matroska") as c:
        stream = c.add_stream("pcm_s16le", rate=rate, layout="mono")
        for start, dur in segments:
            n = int(dur * rate)
            x = (0.3 * np.sin(2 * np.pi * 300 * np.arange(n) / rate) * 32767).astype(np.int16)
            for i in range(0, n, 1600):
                f = av.AudioFrame.from_ndarray(x[None, i : i + 1600].copy(), format="s16", layout="mono")
                f.sample_rate = rate
                f.pts, f.time_base = round(start * rate) + i, Fraction(1, rate)
                for p in stream.encode(f):
                    c.mux(p)
        for p in stream.encode(None):
            c.mux(p)


def test_audio_clock_resyncs_on_real_gaps_only(tmp_path, collect) -> None:
    gap = tmp_path / "gap.mkv"
    _write_pcm_mkv(gap, [(0.0, 1.0), (1.5, 1.0)])
    chunks = _read_all(MediaFileSource(gap), collect).chunks
    jumps = [b.t - a.end for a, b in itertools.pairwise(chunks) if abs(b.t - a.end) > 1e-6]
    assert len(jumps) == 1 and jumps[0] == pytest.approx(0.5, abs=0.01)
    assert chunks[-1].end == pytest.approx(2.5, abs=0.01)

    jitter = tmp_path / "jitter.mkv"  # a 20 ms hole is below AUDIO_GAP_S: absorbed
    assert AUDIO_GAP_S > 0.02
    _write_pcm_mkv(jitter, [(0.0, 1.0), (1.02, 1.0)])
    chunks = _read_all(MediaFileSource(jitter), collect).chunks
    _assert_contiguous(chunks)
    assert chunks[-1].end == pytest.approx(2.0, abs=0.01)


def _write_float_wav(path: Path, x: np.ndarray, rate: int) -> None:
    """IEEE-float WAV (format 3), which the stdlib wave module cannot write."""
    data = x.astype("<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, rate, rate * 4, 4, 32)
    path.write_bytes(b"RIFF" + struct.pack("<I", 4 + 8 + len(fmt) + 8 + len(data)) + b"WAVE"
                     + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data)  # fmt: skip


def test_nan_samples_in_a_file_become_flagged_silence(tmp_path, collect) -> None:
    x = (0.25 * np.sin(2 * np.pi * 300 * np.arange(8000) / 16000 + 0.1)).astype(np.float32)  # no exact zeros
    x[4000:4010] = np.nan
    path = tmp_path / "nan.wav"
    _write_float_wav(path, x, 16000)
    got = _read_all(WavFileSource(path), collect)
    assert np.isfinite(got.audio).all() and len(got.audio) == 8000
    assert np.flatnonzero(got.audio == 0.0).tolist() == list(range(4000, 4010))
    assert any(e.kind == "corrupt_input" and "non-finite" in e.detail for e in got.events)


# -- files that cannot be used ------------------------------------------------
def test_missing_file(tmp_path) -> None:
    with pytest.raises(SourceError) as exc:
        MediaFileSource(tmp_path / "nope.mp4").open()
    _assert_one_line(exc, "not found", "nope.mp4")


def test_directory(tmp_path) -> None:
    with pytest.raises(SourceError) as exc:
        MediaFileSource(tmp_path).open()
    _assert_one_line(exc, "directory")


def test_zero_length_file(tmp_path) -> None:
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(SourceError) as exc:
        MediaFileSource(tmp_path / "empty.mp4").open()
    _assert_one_line(exc, "empty")


@pytest.mark.parametrize("name", ["garbage.mp4", "garbage.wav", "notes.txt"])
def test_not_a_media_file(tmp_path, name) -> None:
    path = tmp_path / name
    if name.endswith(".txt"):
        path.write_text("this is a text file, not a video\n" * 50)
    else:
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 200_000, dtype=np.uint8).tobytes())
    with pytest.raises(SourceError) as exc:
        (WavFileSource if name.endswith(".wav") else MediaFileSource)(path).open()
    _assert_one_line(exc, name)


def test_file_with_neither_audio_nor_video(tmp_path) -> None:
    srt = tmp_path / "subs.srt"
    srt.write_text("1\n00:00:01,000 --> 00:00:02,000\nhello\n\n2\n00:00:03,000 --> 00:00:04,000\nworld\n")
    with pytest.raises(SourceError) as exc:
        MediaFileSource(srt).open()
    _assert_one_line(exc, "no audio or video")


def _truncate(src: Path, dst: Path, fraction: float) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def test_truncated_avi_streams_what_it_can(media, tmp_path, collect) -> None:
    path = _truncate(media / "megamind.avi", tmp_path / "cut.avi", 0.6)
    src = MediaFileSource(path)
    got = _read_all(src, collect)
    full_frames = 270
    assert 0.3 * full_frames < len(got.frames) < 0.9 * full_frames
    assert got.chunks and np.all(np.diff([f.t for f in got.frames]) > 0)
    # AVI's RIFF header still says how long the file was written: the cut is flagged
    assert src.stats.truncated and [e.kind for e in got.events if e.kind == "truncated"] == ["truncated"]


def test_truncated_mp4_without_index_fails_cleanly(media, tmp_path) -> None:
    """ffmpeg writes the mp4 index (moov) at the end: cut it off and nothing is decodable."""
    path = _truncate(media / "astronaut_speech.mp4", tmp_path / "cut.mp4", 0.6)
    with pytest.raises(SourceError) as exc:
        MediaFileSource(path).open()
    _assert_one_line(exc, "cut.mp4")


def test_truncated_faststart_mp4_streams_what_it_can(media, tmp_path, collect) -> None:
    ffmpeg = shutil.which("ffmpeg")
    assert ffmpeg, "Debian ffmpeg is needed to remux the test clip"
    fast = tmp_path / "fast.mp4"
    subprocess.run([ffmpeg, "-v", "error", "-y", "-i", str(media / "astronaut_speech.mp4"), "-c", "copy", "-movflags", "+faststart", str(fast)], check=True)
    full_src = MediaFileSource(fast)
    full = _read_all(full_src, collect)
    src = MediaFileSource(_truncate(fast, tmp_path / "cut.mp4", 0.6))
    got = _read_all(src, collect)
    assert 0 < len(got.frames) < len(full.frames)
    assert 0 < len(got.audio) < len(full.audio)
    # what did decode is the same as in the intact file
    n = len(got.frames) // 2
    np.testing.assert_array_equal(got.frames[n].image, full.frames[n].image)
    assert {e.kind for e in got.events} <= {"corrupt_input", "truncated"}
    # the cut is reported once, at the end, and on the stats
    cut = [e for e in got.events if e.kind == "truncated"]
    assert len(cut) == 1 and "7.12s" in cut[0].detail and src.stats.truncated
    assert cut[0].t >= max(f.t for f in got.frames) - 0.2
    assert not full.events and not full_src.stats.truncated


def test_a_fifo_streams_what_its_writer_sends(media, tmp_path):
    """A named pipe has st_size 0 and cannot seek; it streams the same audio a regular file does (issue 13)."""
    wav = media / "librivox_0870.wav"
    fifo = tmp_path / "feed.wav"
    os.mkfifo(fifo)

    def writer() -> None:
        with open(fifo, "wb") as fh:  # blocks until the source opens the pipe
            fh.write(wav.read_bytes())

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    collect = lambda it: [s for s in it if isinstance(s, (AudioChunk, SourceEvent))]  # noqa: E731
    from_pipe = _read_all(WavFileSource(fifo), collect)
    t.join(timeout=10)
    from_file = _read_all(WavFileSource(wav), collect)
    assert not [e for e in from_pipe if isinstance(e, SourceEvent)], from_pipe  # not truncated, not corrupt
    pipe_audio = np.concatenate([c.samples for c in from_pipe])
    np.testing.assert_array_equal(pipe_audio, np.concatenate([c.samples for c in from_file if isinstance(c, AudioChunk)]))


def test_a_fifo_closed_without_data_is_one_error_line(tmp_path):
    fifo = tmp_path / "closed.wav"
    os.mkfifo(fifo)
    t = threading.Thread(target=lambda: open(fifo, "wb").close(), daemon=True)
    t.start()
    with pytest.raises(SourceError) as exc:
        WavFileSource(fifo).open()
    t.join(timeout=10)
    _assert_one_line(exc, str(fifo))
