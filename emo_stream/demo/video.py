"""Video in and out for the demo, with PyAV (its own FFmpeg; OpenCV is not needed here).

Reading: :func:`iter_video_frames` decodes a file's video track with the same
timestamps :class:`~emo_stream.stream.sources.media_file.MediaFileSource` gives
the pipeline (FFmpeg's best-effort pts, media seconds from the container
start), so frame *t* and the states' window ends are on one time line.

Writing: :class:`AnnotatedVideoWriter` encodes H.264 (libx264 from PyAV's
FFmpeg; OpenCV's wheels cannot write H.264) into .mp4 / .mov / .mkv / .avi,
and puts audio next to it:

* from a file (:meth:`AnnotatedVideoWriter.copy_audio_from`): the original
  audio packets are **copied** (no re-encode, bit-exact sound, same
  timestamps) when the output container can hold the codec; otherwise decoded
  and re-encoded to AAC at the original rate and layout;
* from a microphone (:meth:`AnnotatedVideoWriter.enable_live_audio` +
  :meth:`write_audio`): mono float32 chunks encoded to AAC.

Frame timing is preserved exactly: each output frame gets its input frame's
pts in the input's time base, and its duration; the frame count is the input's.

Rotation: a phone clip's display matrix is applied when reading (the file
source's :mod:`~emo_stream.stream.sources.orientation`, so overlay boxes drawn
from the pipeline's face positions land on the same picture), and
:func:`video_stream_params` / :func:`probe` report the *displayed* size. The
output is written upright at that size with no display matrix, so every player
shows it as the input was shown, the overlay text the right way up.

"Identical outside the overlay": drawing happens in BGR, but converting
BGR -> YUV for the encoder would change every pixel by rounding. When the
input frame is yuv420p (almost every camera/file), the writer keeps the
input's *original* Y/U/V samples wherever the drawn frame equals the decoded
input frame and takes the converted samples only where the overlay changed a
pixel (for U/V: any changed pixel in the 2x2 block). With ``lossless=True``
(x264 ``qp=0``) the decoded output therefore equals the decoded input
bit for bit outside the overlay regions (which :mod:`.overlay` aligns to whole
2x2 blocks); the default (``crf`` 18) is visually lossless and far smaller but
not bit-exact.

Known container behaviours (timestamps are kept; these are the muxers'):
Matroska cannot store negative timestamps, so a source whose audio starts
before zero (AAC priming) is shifted as a whole (A/V sync kept); MP4 drops an
AC3 packet it cannot parse at the start of a stream (Megamind's corrupt first
packet).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import cast

import av
import numpy as np

from emo_stream.demo.errors import DemoError
from emo_stream.durable import atomic_path
from emo_stream.errors import SourceError
from emo_stream.outputs import write_error
from emo_stream.stream.sources.media_file import PtsGuesser
from emo_stream.stream.sources.orientation import IDENTITY, Orientation, frame_orientation

log = logging.getLogger(__name__)

#: output suffix -> FFmpeg muxer
CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".avi": "avi"}

#: audio codecs each muxer takes by stream copy (others are re-encoded to AAC).
_COPY_OK = {
    "mp4": {"aac", "mp3", "ac3", "eac3", "alac", "opus", "flac"},
    "mov": {"aac", "mp3", "ac3", "eac3", "alac", "pcm_s16le", "pcm_s24le", "pcm_f32le"},
    "matroska": None,  # everything
    "avi": {"mp3", "ac3", "aac", "pcm_s16le", "pcm_u8"},
}

#: x264 settings: lossless (qp 0) or visually lossless (crf 18).
LOSSLESS_OPTIONS = {"qp": "0", "preset": "ultrafast"}
LOSSY_OPTIONS = {"crf": "18", "preset": "veryfast"}


def output_format(path: str | Path) -> str:
    """The FFmpeg muxer for an output path, or a :class:`DemoError` naming the supported suffixes."""
    suffix = Path(path).suffix.lower()
    if suffix not in CONTAINERS:
        raise DemoError(f"cannot write video to {path}: use one of {', '.join(sorted(CONTAINERS))}")
    return CONTAINERS[suffix]


def check_output_path(path: str | Path) -> Path:
    """Validate an output video path early (suffix, writable folder), before any long work."""
    p = Path(path).expanduser()
    output_format(p)
    if p.is_dir():
        raise DemoError(f"{p} is a directory; give a video file name such as annotated.mp4")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DemoError(f"cannot create the folder for {p}: {exc.strerror or exc}") from None
    return p


# -- reading ----------------------------------------------------------------------------------
def open_input(path: str | Path) -> av.container.InputContainer:
    """Open a media file for reading, or refuse in one line (:class:`SourceError`).

    Every read of the demo goes through here, so an undecodable file (random
    bytes, a truncated header) gets the same one-line refusal as
    ``emo-stream run`` (:class:`~emo_stream.stream.sources.media_file.MediaFileSource`)
    instead of PyAV's ``InvalidDataError`` traceback.
    """
    try:
        return av.open(str(path), metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        reason = str(getattr(exc, "strerror", None) or exc or type(exc).__name__).splitlines()[0].strip()
        raise SourceError(f"{path} is not a readable media file ({reason})") from None
    except OSError as exc:
        raise SourceError(f"{path} cannot be read ({exc.strerror or exc})") from None


@dataclass(frozen=True)
class VideoInfo:
    """What a video file holds; frame count by decoding (``count_frames=True``) or from the container."""

    path: Path
    width: int
    height: int
    frames: int | None
    duration_s: float | None  # container duration
    video_duration_s: float | None  # first frame start to last frame end, from the decoded pts
    fps: float | None
    time_base: Fraction
    video_codec: str
    pix_fmt: str | None
    audio_codec: str | None
    audio_rate: int | None
    audio_channels: int | None
    audio_duration_s: float | None
    frame_times: tuple[float, ...] = ()  # decoded presentation times (``count_frames`` only)
    rotation: int = 0  # display rotation applied (degrees counter-clockwise, as ffprobe says); width/height are after it


def probe(path: str | Path, count_frames: bool = True) -> VideoInfo:
    """Describe a video file (``count_frames`` decodes every frame: exact count and pts span)."""
    p = Path(path)
    with open_input(p) as c:
        if not c.streams.video:
            raise SourceError(f"{p} has no video track")
        vs = c.streams.video[0]
        rate = vs.average_rate or vs.guessed_rate
        a = c.streams.audio[0] if c.streams.audio else None
        adur = None
        if a is not None and a.duration and a.time_base:
            adur = float(a.duration * a.time_base)
        frames, vdur = vs.frames or None, None
        tb = vs.time_base or Fraction(1, 90000)
        times: list[float] = []
        turn = IDENTITY
        if count_frames:
            for f in _decoded(c, vs):
                times.append(f.pts_s)
                if f.index == 0:
                    turn = f.orientation
            frames = len(times)
            if times:
                step = 1.0 / float(rate) if rate else 0.0
                vdur = times[-1] - times[0] + step
        else:
            turn = _first_orientation(c, vs)
        width, height = turn.display_size(vs.codec_context.width, vs.codec_context.height)
        return VideoInfo(
            path=p,
            width=width,
            height=height,
            frames=frames,
            duration_s=c.duration / 1e6 if c.duration else None,
            video_duration_s=vdur,
            fps=float(rate) if rate else None,
            time_base=tb,
            video_codec=vs.codec_context.name,
            pix_fmt=vs.codec_context.pix_fmt,
            audio_codec=a.codec_context.name if a is not None else None,
            audio_rate=a.codec_context.sample_rate if a is not None else None,
            audio_channels=a.codec_context.channels if a is not None else None,
            audio_duration_s=adur,
            frame_times=tuple(times),
            rotation=turn.degrees if turn.quarter_turns else 0,
        )


def _first_orientation(container: av.container.InputContainer, vs) -> Orientation:
    """The display orientation of a track, from its first decodable frame (the container rewound after)."""
    turn = IDENTITY
    for f in _decoded(container, vs):
        turn = f.orientation
        break
    try:
        container.seek(0, stream=vs)
    except (av.error.FFmpegError, OSError):  # unseekable: callers reopen the file anyway
        pass
    return turn


@dataclass(frozen=True)
class DecodedFrame:
    """One decoded picture: ``t`` media seconds from the container start (the pipeline's time),
    ``pts`` the raw timestamp in ``time_base`` (what the writer keeps), the PyAV frame
    (as decoded: not turned) and how it is to be shown."""

    index: int
    t: float
    pts: int
    pts_s: float
    time_base: Fraction
    frame: av.VideoFrame
    orientation: Orientation = IDENTITY

    def bgr(self) -> np.ndarray:
        """The picture as displayed (display rotation applied), BGR."""
        return np.ascontiguousarray(self.orientation.apply(self.frame.to_ndarray(format="bgr24")))


def _decoded(container: av.container.InputContainer, vs: av.video.stream.VideoStream) -> Iterator[DecodedFrame]:
    vs.thread_type = "AUTO"
    tb = vs.time_base or Fraction(1, 90000)
    start = container.start_time / 1e6 if container.start_time is not None else 0.0
    rate = vs.average_rate or vs.guessed_rate
    step = max(1, round(1 / (float(rate) * tb))) if rate else 1
    guess = PtsGuesser()  # the file source's rule, so overlay and window timing agree
    last: int | None = None
    index = 0

    def frames_of(packet):
        try:
            return packet.decode()
        except av.error.FFmpegError as exc:  # a corrupt packet: skip it, as the pipeline does
            log.warning("skipping a corrupt video packet: %s", exc)
            return []

    for packet in container.demux(vs):
        for frame in frames_of(packet):
            pts = guess(frame.pts, frame.dts)
            if pts is None or (last is not None and pts <= last):
                pts = 0 if last is None else last + step
            last = pts
            pts_s = float(pts * tb)
            turn = frame_orientation(frame, vs)
            yield DecodedFrame(index=index, t=pts_s - start, pts=pts, pts_s=pts_s, time_base=tb, frame=frame, orientation=turn)
            index += 1


def iter_video_frames(path: str | Path) -> Iterator[DecodedFrame]:
    """Decode the (first) video track of a file, in display order, with pipeline-compatible times."""
    c = open_input(path)
    try:
        if not c.streams.video:
            raise SourceError(f"{path} has no video track; the demo draws on video")
        yield from _decoded(c, c.streams.video[0])
    finally:
        c.close()


def video_stream_params(path: str | Path) -> tuple[int, int, Fraction, Fraction | None, bool]:
    """(displayed width, displayed height, time base, frame rate, has audio) of a file's first video track.

    The size is what :meth:`DecodedFrame.bgr` returns: a portrait phone clip
    stored as 1920x1080 with a 90-degree display matrix is 1080x1920 here.
    """
    with open_input(path) as c:
        if not c.streams.video:
            raise SourceError(f"{path} has no video track; the demo draws on video")
        vs = c.streams.video[0]
        turn = _first_orientation(c, vs)
        width, height = turn.display_size(vs.codec_context.width, vs.codec_context.height)
        return (width, height, vs.time_base or Fraction(1, 90000), vs.average_rate or vs.guessed_rate, bool(c.streams.audio))


# -- writing --------------------------------------------------------------------------------------
def splice_yuv420(drawn_bgr: np.ndarray, source_bgr: np.ndarray, source_yuv: np.ndarray) -> np.ndarray:
    """yuv420p planes (PyAV's stacked (H*3/2, W) layout) of ``drawn_bgr`` that keep ``source_yuv``
    wherever the drawing did not change a pixel (see the module docstring)."""
    h, w = drawn_bgr.shape[:2]
    ne = drawn_bgr != source_bgr
    changed = ne[..., 0] | ne[..., 1] | ne[..., 2]  # (3x faster than np.any(axis=2))
    out = source_yuv.copy()
    if not changed.any():
        return out
    new = av.VideoFrame.from_ndarray(drawn_bgr, format="bgr24").reformat(format="yuv420p").to_ndarray()
    np.copyto(out[:h], new[:h], where=changed)
    # one U/V sample per 2x2 block: it changes when any of its four pixels did
    cmask = changed[0::2, 0::2] | changed[1::2, 0::2] | changed[0::2, 1::2] | changed[1::2, 1::2]
    q = h // 4  # U and V are each (h/2) x (w/2), stored as h/4 rows of width w
    for k in range(2):
        rows = slice(h + k * q, h + (k + 1) * q)
        plane = out[rows].reshape(h // 2, w // 2)  # a view (rows are contiguous)
        np.copyto(plane, new[rows].reshape(h // 2, w // 2), where=cmask)
    return out


class AnnotatedVideoWriter:
    """Encode annotated frames (H.264) with the input's timing, plus audio.

    Args:
        path: output file (.mp4, .mov, .mkv, .avi).
        width, height: frame size.
        time_base: time base of the ``pts`` given to :meth:`write` (the input's).
        rate: nominal frame rate (metadata and last-frame duration); None for variable.
        lossless: x264 ``qp=0`` (decoded output == decoded input outside the overlay).
    """

    def __init__(
        self,
        path: str | Path,
        width: int,
        height: int,
        time_base: Fraction,
        rate: Fraction | None = None,
        lossless: bool = False,
    ) -> None:
        self.path = check_output_path(path)
        self.format = output_format(self.path)
        self.width, self.height = int(width), int(height)
        self.time_base = Fraction(time_base)
        self.rate = Fraction(rate) if rate else None
        self.lossless = lossless
        self.frames_written = 0
        self.audio_mode = "none"  # "copy <codec>" | "aac (re-encoded from <codec>)" | "aac (microphone)"
        self.audio_packets = 0
        self._last_pts: int | None = None
        self._a_in: av.container.InputContainer | None = None
        self._a_in_stream: av.audio.stream.AudioStream | None = None
        self._a_packets: Iterator[av.Packet] | None = None
        self._a_pending: av.Packet | None = None
        self._a_out: av.audio.stream.AudioStream | None = None
        self._a_copy = False
        self._a_live_rate: int | None = None
        self._a_live_next = 0
        # Written under a temporary name and renamed by close() (atomic_path): a full
        # disk or a crash half way leaves no half video under the final name. Through
        # a Python file object rather than FFmpeg's own file protocol: FFmpeg's
        # writer records a failed write (ENOSPC) without telling the muxer, which
        # then crashed (SIGSEGV) finishing the file; Python's write raises, and
        # PyAV hands that OSError back from mux()/close().
        self._out: av.container.OutputContainer | None = None
        self._files = contextlib.ExitStack()
        with self._failing():
            target = self._files.enter_context(atomic_path(self.path))
            self._file = self._files.enter_context(open(target, "wb", buffering=0))
            self._out = av.open(self._file, mode="w", format=self.format)
            self._video = self._add_video_stream()

    @property
    def _output(self) -> av.container.OutputContainer:
        """The container being written (until :meth:`close` or :meth:`abort`)."""
        if self._out is None:
            raise RuntimeError(f"{self.path}: the writer is closed")
        return self._out

    # -- setup -------------------------------------------------------------------------------------
    def _add_video_stream(self):
        even = self.width % 2 == 0 and self.height % 2 == 0
        self.pix_fmt = "yuv420p" if even else "yuv444p"  # x264 4:2:0 needs even sizes
        codec = "libx264"
        try:
            av.codec.Codec(codec, "w")
        except Exception:
            codec = "ffv1" if self.lossless and self.format in ("matroska", "avi") else "mpeg4"
        kwargs = {"rate": self.rate} if self.rate else {}
        vs = self._output.add_stream(codec, **kwargs)
        vs.width, vs.height = self.width, self.height
        vs.pix_fmt = self.pix_fmt
        vs.time_base = self.time_base
        vs.codec_context.time_base = self.time_base
        if codec == "libx264":
            vs.codec_context.options = dict(LOSSLESS_OPTIONS if self.lossless else LOSSY_OPTIONS)
        elif codec == "mpeg4":
            vs.codec_context.options = {"qscale": "1" if self.lossless else "3"}
            vs.codec_context.bit_rate = 8_000_000
        self.video_codec = codec
        return vs

    def copy_audio_from(self, source: str | Path) -> str:
        """Put the audio track of ``source`` into the output (copy, or AAC re-encode); returns the mode."""
        c = open_input(source)
        if not c.streams.audio:
            c.close()
            return self.audio_mode
        a = c.streams.audio[0]
        try:
            best = c.streams.best("audio")
            if isinstance(best, av.audio.stream.AudioStream):
                a = best
        except Exception:  # noqa: S110 - older PyAV: keep the first audio track
            pass
        name = a.codec_context.name
        allowed = _COPY_OK.get(self.format)
        self._a_in, self._a_in_stream = c, a
        self._a_packets = iter(c.demux(a))
        if allowed is None or name in allowed:
            if hasattr(self._out, "add_stream_from_template"):  # PyAV >= 13
                out = self._output.add_stream_from_template(a)
            else:
                out = self._output.add_stream(template=a)  # type: ignore[call-overload]  # PyAV < 13; the stubs are 13+
            try:
                out.codec_context.codec_tag = "\0\0\0\0"  # let the muxer pick its own tag (AVI's 0x2000 is not MP4's ac-3)
            except Exception:  # noqa: S110 - best effort; the muxer copes for most codecs
                pass
            self._a_out, self._a_copy = out, True
            self.audio_mode = f"copy {name}"
        else:
            channels = a.codec_context.channels or 2  # an unspecified layout ("1 channels") cannot be encoded
            layout = {1: "mono", 2: "stereo"}.get(channels) or av.AudioLayout(channels).name  # type: ignore[arg-type]  # PyAV's stubs lack the channel-count form
            rate = a.codec_context.sample_rate or 48000
            out = self._output.add_stream("aac", rate=rate, layout=layout)
            out.time_base = Fraction(1, rate)
            self._a_out, self._a_copy = out, False
            self.audio_mode = f"aac (re-encoded from {name})"
        return self.audio_mode

    def enable_live_audio(self, sample_rate: int) -> None:
        """Accept mono float32 chunks through :meth:`write_audio` (encoded to AAC)."""
        self._a_out = out = self._output.add_stream("aac", rate=int(sample_rate), layout="mono")
        out.time_base = Fraction(1, int(sample_rate))
        self._a_live_rate = int(sample_rate)
        self.audio_mode = "aac (microphone)"

    # -- writing ------------------------------------------------------------------------------------
    def write(
        self,
        image: np.ndarray,
        pts: int,
        *,
        source: av.VideoFrame | None = None,
        source_bgr: np.ndarray | None = None,
    ) -> None:
        """Encode one drawn BGR frame at ``pts`` (in ``time_base``).

        With ``source`` (the decoded input frame) and ``source_bgr`` (its BGR
        picture before drawing) the input's own YUV samples are kept where the
        drawing left pixels unchanged (not for a turned input: its decoded
        planes are not the displayed picture's).
        """
        if image.shape[:2] != (self.height, self.width):
            raise ValueError(f"frame is {image.shape[1]}x{image.shape[0]}, the video is {self.width}x{self.height}")
        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1  # the muxer needs strictly increasing timestamps
        frame = None
        if (
            source is not None
            and source_bgr is not None
            and self.pix_fmt == "yuv420p"
            and source.format.name == "yuv420p"
            and (source.width, source.height) == (self.width, self.height)
            and frame_orientation(source).identity
        ):
            frame = av.VideoFrame.from_ndarray(splice_yuv420(image, source_bgr, source.to_ndarray()), format="yuv420p")
        if frame is None:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24")
        frame.pts = int(pts)
        frame.time_base = self.time_base
        if self.rate:
            try:  # the last frame's duration makes the container's duration exact (PyAV >= 14)
                frame.duration = max(1, round(1 / (self.rate * self.time_base)))
            except AttributeError:
                pass
        if self._out is None:
            raise RuntimeError(f"{self.path}: write() after close()")
        with self._failing():
            self._mux(self._video.encode(frame))
            self._last_pts = int(pts)
            self.frames_written += 1
            if self._a_packets is not None:
                self._pump_audio(float(pts * self.time_base) + 0.5)

    def write_audio(self, t: float, samples: np.ndarray) -> None:
        """Encode a mono float32 chunk starting ``t`` seconds after the video's zero (live audio)."""
        if self._a_live_rate is None or self._a_out is None:  # enable_live_audio() sets both
            raise RuntimeError("enable_live_audio() first")
        rate, a_out = self._a_live_rate, self._a_out
        start = round(t * rate)
        if start + samples.shape[0] <= self._a_live_next:
            return  # entirely before what was written (or before zero)
        if start < self._a_live_next:
            samples = samples[self._a_live_next - start :]
            start = self._a_live_next
        if start > self._a_live_next:  # a gap: fill with silence so audio stays in sync
            samples = np.concatenate([np.zeros(start - self._a_live_next, np.float32), samples])
            start = self._a_live_next
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples, dtype=np.float32)[None, :], format="flt", layout="mono")
        frame.sample_rate = rate
        frame.pts = start
        frame.time_base = Fraction(1, rate)
        if self._out is None:
            raise RuntimeError(f"{self.path}: write_audio() after close()")
        with self._failing():
            self._mux(a_out.encode(frame))
        self._a_live_next = start + samples.shape[0]

    def _mux(self, packets) -> None:
        for packet in packets:
            self._output.mux(packet)

    def _pump_audio(self, until_s: float | None) -> None:
        """Mux source audio packets up to ``until_s`` seconds (None: all that is left)."""
        a_out = self._a_out
        if a_out is None:  # copy_audio_from() sets it right after the packets
            raise RuntimeError(f"{self.path}: no audio stream for the source's audio")
        while True:
            if self._a_pending is None:
                if self._a_packets is None:  # callers check; a pump that ran out has returned
                    return
                try:
                    self._a_pending = next(self._a_packets)
                except StopIteration:
                    self._a_packets = None
                    return
                except av.error.FFmpegError as exc:
                    log.warning("audio demux error, rest of the audio dropped: %s", exc)
                    self._a_packets = None
                    return
            pkt = self._a_pending
            ts = pkt.pts if pkt.pts is not None else pkt.dts
            if ts is None:  # no dts and no pts: the demuxer's end-of-stream marker
                self._a_pending = None
                continue
            t = float(ts * pkt.time_base)
            if until_s is not None and t > until_s:
                return
            self._a_pending = None
            if self._a_copy:
                pkt.stream = a_out
                self._output.mux(pkt)
                self.audio_packets += 1
            else:
                try:
                    frames = cast(list[av.AudioFrame], pkt.decode())  # a packet of the audio track (the stubs say VideoFrame)
                except av.error.FFmpegError as exc:
                    log.warning("skipping a corrupt audio packet: %s", exc)
                    continue
                for fr in frames:
                    fr.pts = None  # let the encoder count samples
                    self._mux(a_out.encode(fr))
                    self.audio_packets += 1

    def close(self) -> None:
        """Flush encoders, write the rest of the audio, finish the file and move it
        under its final name (safe to call twice; a no-op after :meth:`abort`)."""
        if self._out is None:
            return
        with self._failing():
            self._mux(self._video.encode(None))
            if self._a_packets is not None:
                self._pump_audio(None)
            if self._a_out is not None and not self._a_copy:
                self._mux(self._a_out.encode(None))
            self._out.close()
            self._out = None
            self._close_audio_input()
            self._files.close()  # closes the file, then renames it over the final name

    def abort(self, exc: BaseException | None = None) -> None:
        """Drop the video being written: nothing appears under the final name (safe to call twice)."""
        out, self._out = self._out, None
        if out is not None:
            with contextlib.suppress(Exception):
                out.close()
        self._close_audio_input()
        exc = exc if exc is not None else RuntimeError("aborted")
        with contextlib.suppress(Exception):  # atomic_path sees an exception: removes the temporary file
            self._files.__exit__(type(exc), exc, exc.__traceback__)

    def _close_audio_input(self) -> None:
        if self._a_in is not None:
            with contextlib.suppress(Exception):
                self._a_in.close()
            self._a_in = None

    @contextlib.contextmanager
    def _failing(self) -> Iterator[None]:
        """A write the OS or the encoder refuses aborts the file and becomes one line
        (``cannot write PATH: No space left on device``)."""
        try:
            yield
        except (OSError, av.error.FFmpegError) as exc:
            self.abort(exc)
            raise write_error(self.path, exc) from None
        except BaseException as exc:
            self.abort(exc)
            raise

    def __enter__(self) -> AnnotatedVideoWriter:
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if exc is not None:
            self.abort(exc)
        else:
            self.close()
