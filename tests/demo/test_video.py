"""PyAV writer and reader of the demo: YUV splice, containers, audio copy / re-encode / live."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from emo_stream.demo.errors import DemoError
from emo_stream.demo.video import (
    AnnotatedVideoWriter,
    iter_video_frames,
    probe,
    splice_yuv420,
    video_stream_params,
)
from emo_stream.errors import OutputError, SourceError


def _clip(path: Path, *, frames=25, size=(64, 48), audio_codec: str | None = "pcm_s16le", rate=16000) -> Path:
    """A small real file: moving gradient video (+ a 440 Hz tone)."""
    w, h = size
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=25)
        v.width, v.height, v.pix_fmt = w, h, "yuv420p" if w % 2 == 0 and h % 2 == 0 else "yuv444p"
        a = None
        if audio_codec:
            a = c.add_stream(audio_codec, rate=rate, layout="mono")
        x = np.arange(w)[None, :, None]
        for i in range(frames):
            img = np.broadcast_to(((x * 4 + i * 8) % 256).astype(np.uint8), (h, w, 3)).copy()
            img[..., 1] = (i * 10) % 256
            f = av.VideoFrame.from_ndarray(img, format="bgr24")
            f.pts = i
            for p in v.encode(f):
                c.mux(p)
        for p in v.encode(None):
            c.mux(p)
        if a is not None:
            n = int(rate * frames / 25)
            t = np.arange(n) / rate
            pcm = (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16)[None, :]
            af = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
            af.sample_rate, af.pts = rate, 0
            for p in a.encode(af):
                c.mux(p)
            for p in a.encode(None):
                c.mux(p)
    return path


def _copy_with_box(src: Path, dst: Path, lossless=True) -> AnnotatedVideoWriter:
    w, h, tb, rate, has_audio = video_stream_params(src)
    writer = AnnotatedVideoWriter(dst, w, h, tb, rate, lossless=lossless)
    with writer:
        if has_audio:
            writer.copy_audio_from(src)
        for f in iter_video_frames(src):
            img = f.bgr()
            drawn = img.copy()
            drawn[5:15, 7:30] = (0, 0, 255)
            writer.write(drawn, f.pts, source=f.frame, source_bgr=img)
    return writer


def test_splice_keeps_the_source_samples_where_nothing_was_drawn() -> None:
    rng = np.random.default_rng(1)
    yuv = rng.integers(16, 236, (48 * 3 // 2, 64), dtype=np.uint8)
    src_bgr = av.VideoFrame.from_ndarray(yuv, format="yuv420p").to_ndarray(format="bgr24")
    drawn = src_bgr.copy()
    drawn[9:20, 13:40] = (0, 255, 0)  # odd edges: the 2x2 chroma blocks they cut change too
    out = splice_yuv420(drawn, src_bgr, yuv)
    assert out.shape == yuv.shape
    back = av.VideoFrame.from_ndarray(out, format="yuv420p").to_ndarray(format="bgr24")
    changed = np.any(back != src_bgr, axis=2)
    grown = np.zeros_like(changed)
    grown[8:21, 12:41] = True
    assert not changed[~grown].any()
    assert changed[10:19, 14:39].all()
    assert np.array_equal(splice_yuv420(src_bgr, src_bgr, yuv), yuv)  # nothing drawn: the source, bit for bit


def test_lossless_copy_decodes_identical_outside_the_drawing(tmp_path) -> None:
    src = _clip(tmp_path / "in.mkv")
    writer = _copy_with_box(src, tmp_path / "out.mp4")
    assert writer.frames_written == 25
    assert writer.audio_mode == "aac (re-encoded from pcm_s16le)"  # MP4 takes no raw PCM
    for a, b in zip(iter_video_frames(src), iter_video_frames(tmp_path / "out.mp4")):
        assert a.pts_s == pytest.approx(b.pts_s, abs=1e-3)
        changed = np.any(a.bgr() != b.bgr(), axis=2)
        assert changed[5:15, 7:30].all()
        mask = np.zeros_like(changed)
        mask[4:16, 6:31] = True
        assert not changed[~mask].any()
    info = probe(tmp_path / "out.mp4")
    assert info.audio_codec == "aac" and info.audio_duration_s == pytest.approx(1.0, abs=0.1)


def test_matroska_copies_any_audio_codec(tmp_path) -> None:
    src = _clip(tmp_path / "in.mkv")
    writer = _copy_with_box(src, tmp_path / "out.mkv", lossless=False)
    assert writer.audio_mode == "copy pcm_s16le"
    info = probe(tmp_path / "out.mkv")
    assert info.frames == 25 and info.audio_codec == "pcm_s16le"


def test_odd_sizes_are_written_as_yuv444(tmp_path) -> None:
    src = _clip(tmp_path / "odd.mkv", size=(33, 17), audio_codec=None)
    writer = _copy_with_box(src, tmp_path / "odd_out.mp4")
    assert writer.pix_fmt == "yuv444p"
    info = probe(tmp_path / "odd_out.mp4")
    assert (info.width, info.height, info.frames, info.audio_codec) == (33, 17, 25, None)


def test_timestamps_are_kept_strictly_increasing(tmp_path) -> None:
    writer = AnnotatedVideoWriter(tmp_path / "t.mp4", 32, 32, Fraction(1, 1000), None, lossless=True)
    with writer:
        for pts in (0, 40, 40, 30, 100):  # repeated and backwards stamps from a flaky source
            writer.write(np.zeros((32, 32, 3), np.uint8), pts)
    times = [f.pts_s for f in iter_video_frames(tmp_path / "t.mp4")]
    assert len(times) == 5 and all(b > a for a, b in zip(times, times[1:]))


def test_live_audio_is_encoded_on_the_video_time_line_with_gaps_filled(tmp_path) -> None:
    writer = AnnotatedVideoWriter(tmp_path / "live.mp4", 32, 32, Fraction(1, 90000), None)
    writer.enable_live_audio(16000)
    with writer:
        for i in range(20):  # 2 s of video at 10 fps
            writer.write(np.full((32, 32, 3), i * 10, np.uint8), i * 9000)
        tone = (0.2 * np.sin(np.arange(1600) / 5)).astype(np.float32)
        for k in range(20):
            if k in (7, 8):  # a dropped stretch of microphone audio
                continue
            writer.write_audio(k * 0.1, tone)
        writer.write_audio(0.05, tone)  # late duplicate: ignored
    info = probe(tmp_path / "live.mp4")
    assert info.frames == 20 and info.audio_codec == "aac" and info.audio_channels == 1
    assert info.audio_duration_s == pytest.approx(2.0, abs=0.1)


@pytest.mark.parametrize("name", ["x.webm", "x.gif", "x"])
def test_unsupported_output_names_are_refused_up_front(tmp_path, name) -> None:
    with pytest.raises(DemoError, match=r"\.mp4"):
        AnnotatedVideoWriter(tmp_path / name, 32, 32, Fraction(1, 25))


def test_a_directory_is_not_an_output_file(tmp_path) -> None:
    (tmp_path / "d.mp4").mkdir()
    with pytest.raises(DemoError, match="directory"):
        AnnotatedVideoWriter(tmp_path / "d.mp4", 32, 32, Fraction(1, 25))


def test_a_full_disk_is_one_error_line_and_no_crash(tmp_path) -> None:
    """FFmpeg's own file writer hid ENOSPC from the muxer, which then crashed (SIGSEGV) finishing the file."""
    out = tmp_path / "full.mp4"
    out.symlink_to("/dev/full")
    frame = np.full((48, 64, 3), 128, np.uint8)
    with pytest.raises(OutputError, match=r"cannot write .*full\.mp4: No space left on device"):
        writer = AnnotatedVideoWriter(out, 64, 48, Fraction(1, 25), Fraction(25))
        for i in range(200):
            writer.write(frame, i)
        writer.close()
    assert out.is_symlink() and Path(out.readlink()) == Path("/dev/full")  # the device link itself untouched


def test_a_failed_render_leaves_no_half_video(tmp_path) -> None:
    out = tmp_path / "annotated.mp4"
    frame = np.zeros((48, 64, 3), np.uint8)
    with pytest.raises(ZeroDivisionError):
        with AnnotatedVideoWriter(out, 64, 48, Fraction(1, 25), Fraction(25)) as writer:
            for i in range(10):
                writer.write(frame, i)
            raise ZeroDivisionError
    assert list(tmp_path.iterdir()) == []  # neither the final name nor the temporary one
    with AnnotatedVideoWriter(out, 64, 48, Fraction(1, 25), Fraction(25)) as writer:
        for i in range(10):
            writer.write(frame, i)
    assert [p.name for p in tmp_path.iterdir()] == ["annotated.mp4"]
    assert probe(out).frames == 10


def test_undecodable_input_is_one_line_like_run(tmp_path) -> None:
    bad = tmp_path / "garbage.mp4"
    bad.write_bytes(np.random.default_rng(1).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    for read in (video_stream_params, probe, lambda p: next(iter_video_frames(p))):
        with pytest.raises(SourceError, match="is not a readable media file"):
            read(bad)
