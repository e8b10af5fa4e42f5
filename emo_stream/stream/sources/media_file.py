"""Video and audio from one media file, decoded with PyAV.

A file is the reproducible stand-in for a robot's camera + microphone, so it
must behave like real input without pretending to be perfect:

* Timestamps are media time in seconds from the container's start, so a
  window cut at t = 4.0 s holds the same pictures and sound on every run and
  on every machine, however fast decoding goes.
* Damage is data, not a crash: every packet is decoded in its own
  ``try``; a packet FFmpeg rejects is skipped, counted in
  ``stats.corrupt_packets`` and reported as a ``corrupt_input``
  :class:`SourceEvent` so the states covering it can be flagged. Real files
  have such packets (the Megamind clip has one bad AC3 packet). Damage a
  decoder would silently conceal (a corrupt MJPEG frame) is made an error
  with FFmpeg's ``err_detect=explode``, so it is reported the same way.
* Audio timestamps are continuous (first packet's time + samples emitted)
  because container timestamps of compressed audio jitter by a few ms, and a
  window boundary should not move samples around. Only a real gap
  (> :data:`AUDIO_GAP_S`) restarts the audio clock at the packet's time.
* A file that cannot be used fails at :meth:`MediaFileSource.open` with one
  :class:`SourceError` line saying what is wrong with it, never a traceback
  from deep inside FFmpeg.
* Pictures are turned the way a player shows them (a phone clip's display
  matrix, see :mod:`.orientation`), and frames that were turned carry a
  ``rotated`` flag. Audio is conditioned by the one
  :class:`~.audio_convert.AudioStamper` (over-range float audio, recorded
  clipping, cancelling channels, DC offset and non-finite samples are
  repaired where possible and flagged).
* A file that ends before its container says it should (cut off by a full
  disk, an interrupted copy, ``head -c``) streams what it has and then reports
  a ``truncated`` event (and ``stats.truncated``), so the last states say the
  input stopped early rather than that the person fell silent.

Decoding runs on the consumer's thread (the caller of ``samples()``), so an
unpaced file streams losslessly at whatever speed the engine goes; wrap it in
:class:`~emo_stream.stream.sources.pacing.PacedSource` to make it live-like.
"""

from __future__ import annotations

import stat
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, cast

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from emo_stream.errors import SourceError
from emo_stream.stream.downscale import scaled_size
from emo_stream.stream.samples import AUDIO, VIDEO, AudioChunk, Sample, SourceEvent, VideoFrame
from emo_stream.stream.sources.audio_convert import AUDIO_GAP_S, AudioStamper
from emo_stream.stream.sources.base import ConditionEvents, Source
from emo_stream.stream.sources.orientation import frame_orientation

__all__ = ["AUDIO_GAP_S", "MediaFileSource", "PtsGuesser", "WavFileSource", "read_audio"]

#: The input is called truncated when its samples end this much (seconds) or
#: more before the container's declared duration: more than the last frame's
#: or audio packet's length, which is all intact files fall short by.
TRUNCATION_SLACK_S = 0.25

#: ``open`` decodes until the first picture or sound appears; a file that has
#: produced nothing after this many packets is reported as undecodable.
PROBE_PACKETS = 256

#: Consecutive demuxer errors after which the rest of a file is given up.
MAX_DEMUX_ERRORS = 8

_KINDS = (VIDEO, AUDIO)

#: FFmpeg demuxers that "decode" ordinary text (the tty demuxer turns any .txt
#: into a video of rendered characters). Such input is a user mistake, not media.
_NOT_MEDIA_FORMATS = frozenset({"tty"})


def _first_line(exc: BaseException) -> str:
    """FFmpeg's reason without the errno and path noise PyAV adds."""
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return str(reason).splitlines()[0].strip()


class MediaFileSource(Source):
    """Decode the video and/or audio track of one file into samples.

    Args:
        path: the media file (anything FFmpeg reads: mp4, avi, mkv, webm, wav ...).
        sample_rate: output audio rate; audio is always mono float32.
        max_frame_side: downscale pictures whose longer side exceeds this
            (aspect kept; done by libswscale, so OpenCV is not needed).
        streams: which of ``{"video", "audio"}`` to deliver. ``None`` means
            every kind the file has; an explicit set requires each kind to exist.

    After :meth:`open`, :attr:`streams` says what the file really provides and
    :attr:`duration` is the container's duration in seconds (None if unknown).
    ``samples()`` is a single pass over the file.
    """

    live = False
    clock = "media"

    def __init__(
        self,
        path: str | Path,
        sample_rate: int = 16000,
        max_frame_side: int | None = None,
        streams: Iterable[str] | None = None,
    ) -> None:
        super().__init__()
        self.path = Path(path).expanduser()
        self.name = f"file:{self.path.name}"
        self.sample_rate = int(sample_rate)
        self.max_frame_side = max_frame_side
        self._wanted = None if streams is None else frozenset(streams)
        if self._wanted is not None and (not self._wanted or not self._wanted <= set(_KINDS)):
            raise ValueError(f"streams must be a non-empty subset of {_KINDS}, got {sorted(self._wanted)}")
        self._lock = threading.Lock()
        self._container: av.container.InputContainer | None = None
        self._selected: dict[str, av.stream.Stream] = {}
        self._closed = False
        self._pending: list[Sample] = []
        self._gen: Iterator[Sample] | None = None
        self.duration: float | None = None
        self.fps: float | None = None
        # decoding state
        self._start = 0.0
        self._packets = 0
        self._stamper = AudioStamper(self.sample_rate, stats=self.stats)
        self._conditions = ConditionEvents()
        self._v_last: float | None = None
        self._a_last: float | None = None  # start of the last audio chunk emitted
        self._declared_end: float | None = None  # where the container says the selected tracks end
        self._riff_short: str | None = None  # a RIFF (WAV/AVI) header promising more bytes than the file has
        self._pts_guess = PtsGuesser()
        self._v_step = 0.04
        self._v_size: dict[tuple[int, int], tuple[int, int]] = {}
        self._reformatter = VideoReformatter()

    # -- Source API -----------------------------------------------------
    @property
    def streams(self) -> frozenset[str]:
        """Kinds delivered (empty before :meth:`open`)."""
        return frozenset(self._selected)

    def open(self) -> None:
        """Open and probe the file; raise :class:`SourceError` if it cannot give any sample."""
        self._check_path()
        try:
            container = av.open(str(self.path), mode="r", metadata_errors="ignore")
        except av.error.FFmpegError as exc:
            raise SourceError(f"{self.path} is not a readable media file ({_first_line(exc)})") from None
        except OSError as exc:  # e.g. permission denied surfacing as a plain OSError
            raise SourceError(f"{self.path} cannot be read ({exc.strerror or exc})") from None
        if container.format.name in _NOT_MEDIA_FORMATS:
            name = container.format.name
            container.close()
            raise SourceError(f"{self.path} is not a media file (FFmpeg would only render it as {name} text)")
        try:
            self._setup(container)
            self._prime()
        except BaseException:
            container.close()
            self._container = None
            self._selected = {}
            raise

    def samples(self) -> Iterator[Sample]:
        if self._gen is None:
            raise RuntimeError(f"{self.name}: call open() before samples()")
        while self._pending:
            yield self._pending.pop(0)
        yield from self._gen

    def close(self) -> None:
        # Under the lock: a consumer thread may be inside a decode call right now,
        # and freeing the container under it would crash FFmpeg.
        with self._lock:
            self._closed = True
            if self._container is not None:
                self._container.close()
                self._container = None

    # -- opening --------------------------------------------------------
    def _check_path(self) -> None:
        p = self.path
        if not p.exists():
            raise SourceError(f"input file not found: {p}")
        if p.is_dir():
            raise SourceError(f"{p} is a directory, not a media file")
        try:
            st = p.stat()
        except OSError as exc:
            raise SourceError(f"{p} cannot be read ({exc.strerror or exc})") from None
        # Only a regular file's size means anything: a FIFO (``mkfifo`` + a writer,
        # how a pipeline feeds a file reader) or a character device reports 0 and
        # streams whatever its writer sends; one closed without data fails in
        # av.open like any undecodable input.
        if stat.S_ISREG(st.st_mode) and st.st_size == 0:
            raise SourceError(f"{p} is empty (0 bytes)")

    def _setup(self, container: av.container.InputContainer) -> None:
        found: dict[str, av.stream.Stream] = {}
        for kind in _KINDS:
            candidates = [s for s in container.streams if s.type == kind and not _is_cover_art(s) and s.codec_context is not None]
            if candidates:
                # FFmpeg's choice among several tracks (e.g. the main video, not a thumbnail)
                try:
                    best = container.streams.best(kind)  # type: ignore[arg-type]  # PyAV's stubs want a Literal; kind is "video" or "audio"
                except Exception:
                    best = None
                found[kind] = best if best in candidates else candidates[0]
        wanted = self._wanted if self._wanted is not None else frozenset(_KINDS)
        missing = sorted(self._wanted - set(found)) if self._wanted is not None else []
        if missing:
            raise SourceError(f"{self.path} has no {' or '.join(missing)} track")
        selected = {k: s for k, s in found.items() if k in wanted}
        if not selected:
            raise SourceError(f"{self.path} has no audio or video track")
        self._container = container
        self._selected = selected
        self._start = container.start_time / 1e6 if container.start_time is not None else 0.0
        if container.duration is not None and container.duration > 0:
            self.duration = container.duration / 1e6
        else:
            durs = [float(s.duration * s.time_base) for s in selected.values() if s.duration and s.time_base]
            self.duration = max(durs) if durs else None
        self._declared_end = self._expected_end(container, selected)
        self._riff_short = _riff_shortfall(self.path)
        for stream in selected.values():
            _report_concealed_damage(stream)
        video = selected.get(VIDEO)
        if video is not None:
            cast(av.video.stream.VideoStream, video).thread_type = "AUTO"  # frame threads: ~2x faster h264 on 2 cores, same output
            rate = video.average_rate or video.guessed_rate
            if rate:
                self.fps = float(rate)
                self._v_step = 1.0 / self.fps

    def _expected_end(self, container: av.container.InputContainer, selected: dict[str, av.stream.Stream]) -> float | None:
        """Media time (from the start) at which the selected tracks should end, if the container says."""
        ends = [float(s.duration * s.time_base) + float((s.start_time or 0) * s.time_base) - self._start
                for s in selected.values() if s.duration and s.time_base]  # fmt: skip
        if ends:
            return max(ends)
        av_streams = [s for s in container.streams if s.type in _KINDS and not _is_cover_art(s)]
        if self.duration is not None and len(av_streams) == len(selected):  # (mkv: per-track durations unknown)
            return self.duration
        return None

    def _prime(self) -> None:
        """Decode up to the first real sample, so a file FFmpeg opens but cannot decode fails here."""
        self._gen = self._decode()
        got_sample = False
        for item in self._gen:
            self._pending.append(item)
            if not isinstance(item, SourceEvent):
                got_sample = True
                break
            if self._packets >= PROBE_PACKETS:
                break
        if not got_sample:
            why = f"; {self.stats.corrupt_packets} corrupt packets" if self.stats.corrupt_packets else ""
            raise SourceError(f"{self.path} has no decodable audio or video{why}")

    # -- decoding -------------------------------------------------------
    def _decode(self) -> Iterator[Sample]:
        """Generator over the whole file; one packet per lock hold, yields outside the lock."""
        demux = None
        demux_errors = 0
        while True:
            done = False
            with self._lock:
                if self._closed or self._container is None:
                    return
                if demux is None:
                    demux = self._container.demux(*self._selected.values())
                try:
                    packet = next(demux)
                except StopIteration:
                    out, done = self._finish(), True
                except av.error.FFmpegError as exc:
                    # A broken container structure; a fresh demux() continues from the
                    # demuxer's current position, so one bad chunk does not end the file.
                    demux, demux_errors = None, demux_errors + 1
                    out = [self._corrupt(None, None, exc)]
                    if demux_errors >= MAX_DEMUX_ERRORS:
                        out += self._finish(f"gave up after {demux_errors} demuxer errors; the rest of the file is unreadable")
                        done = True
                else:
                    demux_errors = 0
                    self._packets += 1
                    out = self._decode_packet(packet)
            yield from out
            if done:
                return

    def _decode_packet(self, packet: av.Packet) -> list[Sample]:
        kind = packet.stream.type
        try:
            frames: list[Any] = packet.decode()  # VideoFrames or AudioFrames, as kind says (the stubs pick VideoFrame)
        except av.error.FFmpegError as exc:
            return [self._corrupt(kind, packet, exc)]
        out: list[Sample] = []
        for frame in frames:
            if kind == VIDEO:
                out.extend(self._video(frame))
            else:
                out.extend(self._audio(frame))
        return out

    def _finish(self, why: str | None = None) -> list[Sample]:
        """End of input: the resampler's last samples, then a ``truncated`` event if the file stopped early."""
        out = self._audio_chunks(self._stamper.flush()) if AUDIO in self._selected else []
        if why is None:
            why = self._truncation()
        if why is not None:
            self.stats.truncated = True
            self.stats.note_error(f"{self.path}: {why}")
            lasts = [x for x in (self._v_last, self._a_last) if x is not None]
            # at the start of the last sample of the stream that ended first: inside the last windows
            out.append(SourceEvent(min(lasts) if lasts else 0.0, "truncated", why))
        return out

    def _truncation(self) -> str | None:
        """Why the file ended early, or None when it ended where it should."""
        if self._riff_short is not None:
            return self._riff_short
        if self._declared_end is None or self._closed:
            return None
        ends = []
        if self._v_last is not None:
            ends.append(self._v_last + self._v_step)
        a_end = self._stamper.next_t
        if a_end is not None:
            ends.append(a_end)
        got = max(ends, default=0.0)
        if got < self._declared_end - TRUNCATION_SLACK_S:
            return f"input ends at {got:.2f}s but the container says {self._declared_end:.2f}s (truncated file?)"
        return None

    def _corrupt(self, kind: str | None, packet: av.Packet | None, exc: BaseException) -> SourceEvent:
        self.stats.corrupt_packets += 1
        reason = _first_line(exc)
        self.stats.note_error(f"corrupt {kind or 'container'} data: {reason}")
        t = None
        if packet is not None and packet.pts is not None and packet.time_base is not None:
            t = float(packet.pts * packet.time_base) - self._start
        if t is None:
            t = self._last_time(kind)
        what = f"{kind} packet" if kind else "container data"
        return SourceEvent(t, "corrupt_input", f"{what} at {t:.3f}s skipped: {reason}")

    def _last_time(self, kind: str | None) -> float:
        a = self._stamper.next_t
        if kind == VIDEO:
            return self._v_last if self._v_last is not None else 0.0
        if kind == AUDIO:
            return a if a is not None else 0.0
        return max([x for x in (a, self._v_last) if x is not None], default=0.0)

    def _time(self, pts: int | None, time_base) -> float | None:
        if pts is None or time_base is None:
            return None
        return float(pts * time_base) - self._start

    def _video(self, frame: av.VideoFrame) -> list[Sample]:
        t = self._time(self._pts_guess.guess(frame.pts, frame.dts), frame.time_base)
        if t is None or (self._v_last is not None and t <= self._v_last):
            # missing or non-increasing pts (broken files): one nominal frame later,
            # so timestamps stay strictly increasing as the timeline requires
            t = 0.0 if self._v_last is None else self._v_last + self._v_step
        self._v_last = t
        w, h = self._target_size(frame.width, frame.height)
        resize = (w, h) != (frame.width, frame.height)
        # One reformatter (one swscale context) for the whole stream, single-threaded.
        # frame.to_ndarray()/frame.reformat() build a fresh context per frame, and since
        # FFmpeg 8 each context starts its own slice-thread pool (one thread per core);
        # the array is a view of the converted frame, so every picture kept in the
        # timeline or a result buffer kept its pool alive: a paced soak grew from 122 to
        # 411 OS threads (issue 14). Output is bit-identical to the per-frame path.
        img = self._reformatter.reformat(frame, width=w, height=h, format="bgr24", interpolation="AREA" if resize else None, threads=1).to_ndarray()
        turn = frame_orientation(frame, self._selected.get(VIDEO))
        out: list[Sample] = []
        if not turn.identity:
            img = turn.apply(img)
            self.stats.note_condition("rotated")
            ev = self._conditions.event(t, "rotated", f"display matrix applied: {turn.describe()}")
            if ev is not None:
                out.append(ev)
        out.append(VideoFrame(t=t, image=np.ascontiguousarray(img), index=self.stats.frames))
        self.stats.frames += 1
        return out

    def _target_size(self, w: int, h: int) -> tuple[int, int]:
        size = self._v_size.get((w, h))
        if size is None:
            size = scaled_size(w, h, self.max_frame_side)
            self._v_size[(w, h)] = size
        return size

    def _audio(self, frame: av.AudioFrame) -> list[Sample]:
        return self._audio_chunks(self._stamper.push_frame(frame, self._time(frame.pts, frame.time_base)))

    def _audio_chunks(self, items: list[Sample]) -> list[Sample]:
        for item in items:
            if isinstance(item, AudioChunk):
                self._a_last = item.t
        return items


class WavFileSource(MediaFileSource):
    """Audio-only input from any audio file (wav, flac, mp3, ogg ...).

    The same decoder as :class:`MediaFileSource` restricted to the audio track:
    a video track or embedded cover art in the file is ignored, and a file
    without audio is an error.
    """

    def __init__(self, path: str | Path, sample_rate: int = 16000) -> None:
        super().__init__(path, sample_rate=sample_rate, streams=(AUDIO,))
        self.name = f"audio:{self.path.name}"


def read_audio(path: str | Path, sample_rate: int = 16000) -> np.ndarray:
    """A whole audio (or video) file's audio as one mono float32 array at ``sample_rate``.

    For offline use (tests, feature extraction): the same decoder and resampler
    the stream uses, so offline and streaming see identical samples. Gaps are
    not re-inserted; missing/undecodable files raise :class:`SourceError`.
    """
    with WavFileSource(path, sample_rate=sample_rate) as src:
        chunks = [s.samples for s in src.samples() if isinstance(s, AudioChunk)]
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)


class PtsGuesser:
    """FFmpeg's ``guess_correct_pts`` (what it calls ``best_effort_timestamp``).

    PyAV exposes only the raw frame ``pts``, which in AVI files with packed
    B-frames comes out of order (1, 2, 3, 5, 4, ...). FFmpeg counts how often
    pts and dts each go backwards and trusts whichever is less faulty; doing the
    same here gives the timestamps ffprobe and ffplay show.
    """

    def __init__(self) -> None:
        self.faulty_pts = 0
        self.faulty_dts = 0
        self.last_pts: int | None = None
        self.last_dts: int | None = None

    def guess(self, pts: int | None, dts: int | None) -> int | None:
        if dts is not None:
            self.faulty_dts += self.last_dts is not None and dts <= self.last_dts
            self.last_dts = dts
        elif pts is not None:
            self.last_dts = pts
        if pts is not None:
            self.faulty_pts += self.last_pts is not None and pts <= self.last_pts
            self.last_pts = pts
        elif dts is not None:
            self.last_pts = dts
        if pts is not None and (self.faulty_pts <= self.faulty_dts or dts is None):
            return pts
        return dts

    __call__ = guess


#: Decoder option that turns damage a decoder would conceal into an error.
#: MJPEG (and H.264 slices) with corrupt entropy-coded data otherwise decode
#: "successfully" into smeared pictures with nothing but a log line; with
#: ``explode`` the packet fails, and :meth:`MediaFileSource._decode_packet`
#: skips and reports it like any other corrupt packet. Intact files decode
#: identically (checked on every format of the bad-input corpus).
_ERR_DETECT = {"err_detect": "explode"}


def _report_concealed_damage(stream: av.stream.Stream) -> None:
    """Make the stream's decoder fail on damage it would otherwise conceal (see :data:`_ERR_DETECT`)."""
    ctx = stream.codec_context
    try:
        ctx.options = {**dict(ctx.options or {}), **_ERR_DETECT}
    except (AttributeError, TypeError, ValueError):  # a PyAV without codec options: concealment stays silent
        pass


def _is_cover_art(stream: av.stream.Stream) -> bool:
    """An embedded still picture (mp3/m4a album art) is not a video track."""
    try:
        return bool(stream.disposition & av.stream.Disposition.attached_pic)
    except (AttributeError, TypeError):
        return False


def _riff_shortfall(path: Path) -> str | None:
    """For RIFF files (WAV, AVI): the header's promised size when the file is shorter, else None.

    FFmpeg sizes a WAV's data by what is on disk, so a cut WAV would look whole
    by its duration; the RIFF header still says how long it was written.
    Streamed WAVs write 0 or 0xFFFFFFFF there ("unknown") and are not judged.
    """
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            return None  # a pipe has no size to compare, and reading its head here would eat it
        with path.open("rb") as fh:
            head = fh.read(12)
        size = st.st_size
    except OSError:
        return None
    if len(head) < 12 or head[:4] != b"RIFF":
        return None
    declared = int.from_bytes(head[4:8], "little") + 8
    if declared <= 12 or declared >= 0xFFFFFFFF:
        return None
    if size < declared:
        return f"the file has {size} bytes but its RIFF header says {declared} (truncated file?)"
    return None
