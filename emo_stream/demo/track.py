"""Which state a viewer sees at a given moment, and the numbers shown beside it.

:class:`StateTrack` is for recorded states (a file annotated after the
pipeline ran): at frame time *t* it returns the latest state whose
``window_end <= t`` -- causal, what a live viewer with an instant engine would
have on screen -- plus the state rate, latency and the latest rationale with
its age at *t*.

:class:`LatestState` is the live counterpart: a thread-safe "latest wins" slot
the pipeline's sink writes and the UI loop reads without ever waiting.
"""

from __future__ import annotations

import bisect
import collections
import threading
import time
from collections.abc import Callable, Sequence

from emo_stream.demo.overlay import OverlayStats, latency_of
from emo_stream.state import EmotionState
from emo_stream.stream.sinks import Sink

#: States within this many seconds before *t* count towards the state rate.
RATE_HORIZON_S = 3.0


def _rationale_stamp(state: EmotionState) -> float:
    """The time the state's (fresh) rationale describes."""
    return state.window_end - (state.rationale_age_s or 0.0)


class StateTrack:
    """Recorded states, looked up causally by time (states must share one clock)."""

    def __init__(self, states: Sequence[EmotionState]) -> None:
        self.states = sorted(states, key=lambda s: (s.window_end, s.sequence))
        self.ends = [s.window_end for s in self.states]
        # index of the latest state with a non-empty rationale at or before each state
        self._rationale_idx: list[int | None] = []
        last: int | None = None
        for i, s in enumerate(self.states):
            if s.rationale.strip():
                last = i
            self._rationale_idx.append(last)

    def __len__(self) -> int:
        return len(self.states)

    def index_at(self, t: float) -> int | None:
        """Index of the latest state with ``window_end <= t`` (None before the first)."""
        i = bisect.bisect_right(self.ends, t + 1e-9) - 1
        return i if i >= 0 else None

    def at(self, t: float, **extra) -> tuple[EmotionState | None, OverlayStats]:
        """The state on screen at ``t`` and the overlay numbers for it (``extra`` goes into the stats)."""
        i = self.index_at(t)
        if i is None:
            return None, OverlayStats(now=t, note=extra.pop("note", "waiting for first state"), **extra)
        state = self.states[i]
        lo = bisect.bisect_left(self.ends, t - RATE_HORIZON_S)
        recent = self.ends[lo : i + 1]
        rate = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) >= 2 and recent[-1] > recent[0] else None
        rationale, age = None, None
        j = self._rationale_idx[i]
        if j is not None:
            r = self.states[j]
            rationale, age = r.rationale.strip(), max(0.0, t - _rationale_stamp(r))
        return state, OverlayStats(now=t, state_rate_hz=rate, latency_ms=latency_of(state), rationale=rationale, rationale_age_s=age, **extra)


class LatestState:
    """Latest-wins holder of the newest state (live mode), plus wall-clock state rate.

    ``put`` is called on the pipeline thread (through a ``CallbackSink``),
    ``snapshot`` on the UI/recorder thread; neither waits for the other beyond a
    tiny lock.
    """

    def __init__(self, wall: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._wall = wall
        self._state: EmotionState | None = None
        self._arrivals: collections.deque[float] = collections.deque(maxlen=16)
        self._rationale: EmotionState | None = None
        self._people: tuple[EmotionState, ...] = ()
        self.count = 0

    def put(self, state: EmotionState, people: Sequence[EmotionState] = ()) -> None:
        """The newest primary state and the other tracked people of its window."""
        with self._lock:
            self._state = state
            self._people = tuple(people)
            self._arrivals.append(self._wall())
            if state.rationale.strip():
                self._rationale = state
            self.count += 1

    @property
    def state(self) -> EmotionState | None:
        with self._lock:
            return self._state

    def people_of(self, state: EmotionState | None) -> tuple[EmotionState, ...]:
        """The other people of ``state``'s window; empty once a newer state replaced it (so a
        frame never shows one window's primary person beside another window's others)."""
        with self._lock:
            return self._people if state is not None and state is self._state else ()

    def snapshot(self, now: float | None = None, **extra) -> tuple[EmotionState | None, OverlayStats]:
        """The newest state and overlay numbers; ``now`` is the shown frame's time (state clock)."""
        with self._lock:
            state, arrivals, r = self._state, list(self._arrivals), self._rationale
        wall = self._wall()
        recent = [a for a in arrivals if wall - a <= RATE_HORIZON_S]
        rate = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) >= 2 and recent[-1] > recent[0] else None
        if state is None:
            return None, OverlayStats(now=now, note=extra.pop("note", "waiting for first state"), **extra)
        rationale = age = None
        if r is not None:
            rationale = r.rationale.strip()
            ref = now if now is not None else state.window_end
            age = max(0.0, ref - _rationale_stamp(r))
        return state, OverlayStats(now=now, state_rate_hz=rate, latency_ms=latency_of(state), rationale=rationale, rationale_age_s=age, **extra)


class LatestSink(Sink):
    """Feeds a :class:`LatestState` a whole window at a time: the primary state with the
    other tracked people (``write_person``), published at ``end_window``.

    WHY buffer until the window ends: publishing the primary state at once would show it
    for a frame or two without the people that come right after it.
    """

    def __init__(self, latest: LatestState) -> None:
        self.latest = latest
        self._state: EmotionState | None = None
        self._people: list[EmotionState] = []

    def write(self, state: EmotionState) -> None:
        if self._state is not None:  # a caller without end_window: publish the previous window
            self.end_window()
        self._state, self._people = state, []

    def write_person(self, state: EmotionState) -> None:
        self._people.append(state)

    def end_window(self) -> None:
        if self._state is not None:
            self.latest.put(self._state, self._people)
        self._state, self._people = None, []

    def close(self) -> None:
        self.end_window()
