"""Cuts windows from the timeline every hop, by capture time.

Window ends are a fixed grid: ``t0 + k * hop`` (k >= 1), where ``t0`` is the
first capture time seen. A window ending at ``T`` is cut once every expected
stream has delivered data up to ``T`` (the *watermark*), so video and audio are
complete regardless of which arrives first. A live stream that stays silent
longer than ``stream_timeout_s`` (an unplugged microphone) stops holding the
watermark back: it is reported as stalled and the other streams carry on.

The scheduler never waits and never queues: it returns the windows that are
ready now. What happens when the engine is slower than the hop (drop the
oldest, latest wins) is the pipeline's policy.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from emo_stream.config import BufferConfig, WindowConfig
from emo_stream.stream.frame_selection import FRAME_SELECTORS
from emo_stream.stream.samples import AUDIO, VIDEO, SourceEvent, VideoFrame
from emo_stream.stream.timeline import AudioSpan, Timeline

#: At the end of a stream, a window may end this far after the last sample
#: (a frame at 2.96 s of a 25 fps, 3.0 s clip covers up to 3.0 s).
FINAL_WINDOW_SLACK_S = 0.1

#: Audio coverage below which a window is flagged ``audio_gap``.
MIN_AUDIO_COVERAGE = 0.9


@dataclass(frozen=True)
class Window:
    """Everything an engine gets for one state.

    Attributes:
        index: k - 1 for the window ending at ``t0 + k * hop``; gaps in the
            indices a consumer sees are dropped windows.
        start, end: capture-time bounds, [start, end).
        frames: the K selected frames, in time order (fewer if fewer exist).
        n_frames: all frames that fell in the window (K are selected from them).
        audio: the window's audio (mono float32), or None when none was captured.
        streams_expected: what the source(s) provide; a missing expected stream
            is a flagged absence, an unexpected one is simply not there.
        events: source events inside the window (corrupt packets, disconnects).
        stalled: expected streams that stopped delivering.
        clock: what the times are measured on ("media", "monotonic", "ros").
        final: no window follows (the inputs ended): engines flush what they
            hold back (e.g. an utterance still open at the end of a file).
        cut_at: host monotonic time the window was cut (for latency accounting).
    """

    index: int
    start: float
    end: float
    frames: tuple[VideoFrame, ...]
    n_frames: int
    audio: AudioSpan | None
    streams_expected: frozenset[str]
    events: tuple[SourceEvent, ...] = ()
    stalled: frozenset[str] = frozenset()
    clock: str = "media"
    final: bool = False
    cut_at: float = field(default=0.0, compare=False)

    @property
    def modalities(self) -> set[str]:
        """Raw streams with data in this window ("video", "audio")."""
        present = set()
        if self.frames:
            present.add(VIDEO)
        if self.audio is not None:
            present.add(AUDIO)
        return present

    @property
    def flags(self) -> list[str]:
        """Conditions of the input, in a stable order, for the state's ``flags``."""
        out = [e.kind for e in self.events]
        for stream in sorted(self.streams_expected):
            if stream == VIDEO and not self.frames:
                out.append("no_video")
            if stream == AUDIO and self.audio is None:
                out.append("no_audio")
        if self.audio is not None and self.audio.coverage < MIN_AUDIO_COVERAGE:
            out.append("audio_gap")
        out += [f"{s}_stalled" for s in sorted(self.stalled)]
        if not self.streams_expected & {VIDEO, AUDIO}:
            out.append("no_input")
        return list(dict.fromkeys(out))

    @property
    def audio_samples(self) -> np.ndarray | None:
        return None if self.audio is None else self.audio.samples


class Scheduler:
    """Decides when windows are complete and cuts them from a :class:`Timeline`."""

    def __init__(
        self,
        timeline: Timeline,
        window: WindowConfig,
        buffers: BufferConfig,
        streams_expected: Iterable[str],
        *,
        live: bool = False,
        clock_name: str = "media",
        wall_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.timeline = timeline
        self.cfg = window
        self.buffers = buffers
        self.streams_expected = frozenset(streams_expected)
        self.live = live
        self.clock_name = clock_name
        self._wall = wall_clock
        self._select = FRAME_SELECTORS[window.frame_selection]
        self._ended: set[str] = set()
        self._last_arrival: dict[str, float] = {}
        self._k = 1  # next window ends at t0 + k * hop
        self._last_end: float | None = None
        self._t0: float | None = None
        self._final_sent = False
        self.windows_cut = 0

    # -- inputs -------------------------------------------------------------------
    def note_arrival(self, stream: str) -> None:
        """Record that ``stream`` delivered something now (wall clock), for stall detection."""
        self._last_arrival[stream] = self._wall()

    def end_stream(self, stream: str) -> None:
        """``stream`` will deliver nothing more (end of file, source closed)."""
        self._ended.add(stream)

    def end_all(self) -> None:
        self._ended |= self.streams_expected

    # -- state ----------------------------------------------------------------------
    @property
    def t0(self) -> float | None:
        """Origin of the window grid: the first capture time seen, frozen once the
        first window is cut (a late sample stamped earlier must not shift the grid)."""
        return self._t0 if self._t0 is not None else self.timeline.first_t

    @property
    def next_end(self) -> float | None:
        if self.t0 is None:
            return None
        k = self._k if self.cfg.emit_partial else max(self._k, math.ceil(self.cfg.length_s / self.cfg.hop_s - 1e-9))
        return self.t0 + k * self.cfg.hop_s

    def stalled(self) -> frozenset[str]:
        """Live streams silent for longer than ``stream_timeout_s`` (never for files)."""
        if not self.live:
            return frozenset()
        now = self._wall()
        out = set()
        for s in self.streams_expected - self._ended:
            last = self._last_arrival.get(s)
            if last is None or now - last > self.buffers.stream_timeout_s:
                out.add(s)
        return frozenset(out)

    def watermark(self) -> float:
        """Capture time up to which every stream that can still deliver has delivered."""
        stalled = self.stalled()
        marks = []
        for s in self.streams_expected:
            if s in self._ended or s in stalled:
                continue
            marks.append(self.timeline.latest.get(s, float("-inf")))
        if marks:
            return min(marks)
        # Nothing can deliver any more: everything seen so far is complete.
        return self.timeline.newest

    # -- cutting -------------------------------------------------------------------
    @property
    def _slack(self) -> float:
        """How far past the last sample the end of stream reaches (a frame covers ~one period)."""
        return min(self.cfg.hop_s / 2, FINAL_WINDOW_SLACK_S)

    def ready_windows(self) -> list[Window]:
        """All windows that are complete now, oldest first; at the end of the input, the rest.

        The end-of-stream rule: once every expected stream has ended, exactly one
        window is marked ``final`` and it is the last window ever returned:

        * grid windows ending up to ``slack`` past the last sample are cut (the
          last frame still covers about a frame period after its timestamp) and
          the last of them is final, if the input ends within ``slack`` of it;
        * otherwise one more window ending at the last sample is cut and is
          final (an 11.26 s clip with a 0.5 s hop gets a state at 11.26 s).

        That rule needs the window that will be final still *unsent* when the
        end is seen, so before the end a window ending at ``T`` is cut only once
        data exists strictly beyond ``T`` (beyond ``T + slack`` for files read
        as fast as possible, where waiting costs nothing and the final window
        then never trails the previous one by less than ``slack``). Without it,
        an input whose end fell 0-0.1 s after a hop multiple had already been
        sent that window, non-final, and had nothing left to mark (issue 13).
        Live and paced input waits only until the next sample after ``T`` (one
        frame or audio chunk, and only when a sample lands exactly on ``T``).
        """
        out: list[Window] = []
        if self.t0 is None or self._final_sent:
            return out
        ended = self._ended >= self.streams_expected
        mark = self.watermark()
        stalled = self.stalled()
        holdback = 0.0 if self.live else self._slack
        while True:
            end = self.next_end
            assert end is not None
            if ended:
                if end > mark + self._slack + 1e-9:
                    break
            elif end >= mark - holdback - 1e-9:
                break
            out.append(self._cut(end, stalled))
            self._k = round((end - self.t0) / self.cfg.hop_s) + 1
        if ended:
            self._final_sent = True
            newest = self.timeline.newest
            if not (out and newest <= out[-1].end + self._slack + 1e-9):
                # Data runs on past the last window (sent now or earlier): by the
                # hold-back above it ends strictly after it, so this never repeats one.
                # Its index is that of the grid slot it ends in (a short input with
                # emit_partial off gets the slot of its end, not 0).
                slot = max(self._k - 1, math.ceil((newest - self.t0) / self.cfg.hop_s - 1e-9) - 1)
                out.append(self._cut(newest, stalled, index=slot))
            # The final window also owns events from after its end: a source reports
            # how it ended (``truncated``) at its last sample, which may lie in the
            # slack past the last grid window (a cut WAV ending at 1.099 s, final
            # window at 1.0 s) and would otherwise reach no state at all.
            last = out[-1]
            events = self.timeline.events_between(last.start if last.index > 0 else float("-inf"), float("inf"))
            out[-1] = dataclasses.replace(last, final=True, events=tuple(events))
        if out:
            self._last_end = out[-1].end
            next_end = self.next_end
            assert next_end is not None  # windows were cut, so t0 is known
            self.timeline.forget_before(next_end - self.cfg.length_s - self.cfg.hop_s)
        return out

    def _cut(self, end: float, stalled: frozenset[str], index: int | None = None) -> Window:
        t0 = self.t0
        assert t0 is not None, "a window is cut only after the first sample set t0"
        self._t0 = t0
        start = max(t0, end - self.cfg.length_s)
        # The final window ends at the last sample's timestamp: include that sample.
        in_window = self.timeline.frames_between(start, end + (1e-6 if index is not None else 0.0))
        frames = self._select(in_window, self.cfg.frames_per_window, start, end)
        if index is None:
            index = round((end - t0) / self.cfg.hop_s) - 1
        self.windows_cut += 1
        return Window(
            index=index,
            start=start,
            end=end,
            frames=tuple(frames),
            n_frames=len(in_window),
            audio=self.timeline.audio_between(start, end) if AUDIO in self.streams_expected else None,
            streams_expected=self.streams_expected,
            # The first window also owns events from before the first sample
            # (e.g. a corrupt packet at the very start of a file).
            events=tuple(self.timeline.events_between(start if index > 0 else float("-inf"), end)),
            stalled=stalled,
            clock=self.clock_name,
            cut_at=self._wall(),
        )
