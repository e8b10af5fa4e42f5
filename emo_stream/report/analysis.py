"""Pure analysis of a recorded state sequence: time spans, segments, shares.

No plotting and no I/O except :func:`load_states`, so everything here is
testable with hand-made states.

Time model: state *i* reports on window ``[window_start, window_end]`` but
consecutive windows overlap (W = 2 s, H = 0.5 s by default), so a state is
taken to *cover* only what is new since the previous one: ``[window_end - hop,
window_end]`` (clipped to its window), with ``hop`` the median step between
window ends. Spans and segment durations are unions of these covers, so they
add up to the stream's length instead of W/H times it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emo_stream.errors import EmoStreamError
from emo_stream.state import EmotionState, primary_stream
from emo_stream.stats import percentile

#: Segment label used when a state's probabilities are uniform (no evidence / not an emotion model).
UNIFORM = "(uniform)"


class ReportError(EmoStreamError):
    """The states cannot be reported on (missing, empty or malformed JSONL)."""


def load_states(path: str | Path) -> list[EmotionState]:
    """The primary person's stream of a states JSONL file (see :func:`load_all_states`)."""
    return primary_stream(load_all_states(path))


def load_all_states(path: str | Path) -> list[EmotionState]:
    """Read every state of a states JSONL file, every tracked person's, in file order;
    one-line :class:`ReportError` naming the bad line on failure."""
    p = Path(path).expanduser()
    if not p.exists():
        raise ReportError(f"states file not found: {p}")
    if p.is_dir():
        raise ReportError(f"{p} is a directory, not a states JSONL file")
    states: list[EmotionState] = []
    try:
        fh = p.open(encoding="utf-8")
    except OSError as exc:
        raise ReportError(f"cannot read {p}: {exc.strerror or exc}") from None
    n = 0
    with fh:
        try:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    states.append(EmotionState.from_json(line))
                except (json.JSONDecodeError, ValueError, TypeError, KeyError) as exc:
                    reason = str(exc).splitlines()[0][:160]
                    raise ReportError(f"{p}:{n} is not an EmotionState JSON line ({reason})") from None
        except UnicodeDecodeError:
            raise ReportError(f"{p}:{n + 1} is not UTF-8 text; is this a states JSONL file?") from None
    if not states:
        raise ReportError(f"{p} holds no states (empty file)")
    return states


def people_streams(states: Sequence[EmotionState]) -> dict[str, list[EmotionState]]:
    """Each tracked person's states, sorted, by ``person_id`` in order of first appearance.

    Empty when the states describe one person (no ids, or a single id): such a
    stream's report is the single-person report, unchanged.
    """
    by_id: dict[str, list[EmotionState]] = {}
    for s in states:
        by_id.setdefault(s.person_id, []).append(s)
    if len(by_id) < 2:
        return {}
    return {pid: sort_states(ss) for pid, ss in by_id.items()}


def check_consistent(states: Sequence[EmotionState]) -> None:
    """One label set and one clock per report."""
    sets = {(s.label_set, s.labels) for s in states}
    if len(sets) > 1:
        raise ReportError(f"the states mix label sets {sorted({s[0] for s in sets})}; report one stream at a time")
    clocks = {s.clock for s in states}
    if len(clocks) > 1:
        raise ReportError(f"the states mix clocks {sorted(clocks)}; report one stream at a time")


def sort_states(states: Sequence[EmotionState]) -> list[EmotionState]:
    return sorted(states, key=lambda s: (s.window_end, s.sequence))


def hop_of(states: Sequence[EmotionState]) -> float:
    """Median step between consecutive window ends (the hop); window length for a single state."""
    ends = np.array([s.window_end for s in states], dtype=np.float64)
    steps = np.diff(ends)
    steps = steps[steps > 1e-9]
    if steps.size:
        return float(np.median(steps))
    s = states[0]
    return max(1e-3, s.window_end - s.window_start)


def covers(states: Sequence[EmotionState], hop: float | None = None) -> list[tuple[float, float]]:
    """The ``[start, end]`` each (sorted) state covers (see module docstring)."""
    hop = hop_of(states) if hop is None else hop
    out = []
    prev_end: float | None = None
    for s in states:
        start = max(s.window_start, s.window_end - hop)
        if prev_end is not None:
            start = max(start, min(prev_end, s.window_end))
        out.append((start, s.window_end))
        prev_end = s.window_end
    return out


def spans(states: Sequence[EmotionState], predicate: Callable[[EmotionState], bool], hop: float | None = None) -> list[tuple[float, float]]:
    """Merged time spans where ``predicate(state)`` holds."""
    result: list[list[float]] = []
    for s, (a, b) in zip(states, covers(states, hop)):
        if not predicate(s):
            continue
        if result and a <= result[-1][1] + 1e-6:
            result[-1][1] = max(result[-1][1], b)
        else:
            result.append([a, b])
    return [(a, b) for a, b in result]


def modality_spans(states: Sequence[EmotionState], modality: str, hop: float | None = None) -> list[tuple[float, float]]:
    return spans(states, lambda s: modality in s.modalities, hop)


def span_total(sp: Sequence[tuple[float, float]]) -> float:
    return float(sum(b - a for a, b in sp))


def is_uniform(state: EmotionState) -> bool:
    p = state.probabilities
    return bool(p) and max(p) - min(p) < 1e-6


def display_label(state: EmotionState) -> str:
    """The top label, or :data:`UNIFORM` when there is none worth naming."""
    return UNIFORM if is_uniform(state) else state.top_label


@dataclass(frozen=True)
class Segment:
    """Consecutive states with the same top label."""

    index: int
    label: str
    start: float
    end: float
    states: int
    mean_confidence: float
    mean_valence: float | None
    mean_arousal: float | None
    modality_share: dict[str, float]
    rationales: tuple[str, ...]
    first_sequence: int
    last_sequence: int

    @property
    def duration(self) -> float:
        return self.end - self.start


def _mean_or_none(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(vals)) if vals else None


def segments(states: Sequence[EmotionState], hop: float | None = None, max_rationales: int = 2) -> list[Segment]:
    """Group sorted states into runs of the same top label (see :func:`display_label`)."""
    cov = covers(states, hop)
    out: list[Segment] = []
    run: list[int] = []

    def close_run() -> None:
        if not run:
            return
        ss = [states[i] for i in run]
        mods = sorted({m for s in ss for m in s.modalities})
        rationales: list[str] = []
        for s in ss:
            r = " ".join(s.rationale.split())
            if r and r not in rationales:
                rationales.append(r)
            if len(rationales) >= max_rationales:
                break
        out.append(
            Segment(
                index=len(out),
                label=display_label(ss[0]),
                start=cov[run[0]][0],
                end=cov[run[-1]][1],
                states=len(ss),
                mean_confidence=float(np.mean([s.confidence for s in ss])),
                mean_valence=_mean_or_none([s.valence for s in ss]),
                mean_arousal=_mean_or_none([s.arousal for s in ss]),
                modality_share={m: sum(m in s.modalities for s in ss) / len(ss) for m in mods},
                rationales=tuple(rationales),
                first_sequence=ss[0].sequence,
                last_sequence=ss[-1].sequence,
            )
        )

    for i, s in enumerate(states):
        if run and display_label(states[run[-1]]) != display_label(s):
            close_run()
            run = []
        run.append(i)
    close_run()
    return out


@dataclass(frozen=True)
class Overview:
    """Whole-stream numbers for the summary."""

    states: int
    start: float
    end: float
    hop: float
    label_set: str
    labels: tuple[str, ...]
    model_ids: tuple[str, ...]
    clock: str
    label_time_share: dict[str, float]  # display label -> share of covered time
    mean_probabilities: dict[str, float]
    modality_share: dict[str, float]  # modality -> share of covered time
    flags: dict[str, int]
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    sequence_gaps: int
    rationales: int


def overview(states: Sequence[EmotionState], segs: Sequence[Segment] | None = None, hop: float | None = None) -> Overview:
    hop = hop_of(states) if hop is None else hop
    segs = segments(states, hop) if segs is None else segs
    cov = covers(states, hop)
    total = sum(b - a for a, b in cov) or 1.0
    share: dict[str, float] = {}
    for seg in segs:
        share[seg.label] = share.get(seg.label, 0.0) + seg.duration / total
    probs = np.array([s.probabilities for s in states], dtype=np.float64)
    mods = {m: span_total(modality_spans(states, m, hop)) / total for m in ("video", "audio", "face", "voice", "text")}
    flags: dict[str, int] = {}
    for s in states:
        for f in s.flags:
            flags[f] = flags.get(f, 0) + 1
    lat = [float(v) for s in states if (v := s.latency_ms.get("engine")) is not None]
    seqs = [s.sequence for s in states]
    gaps = sum(max(0, b - a - 1) for a, b in zip(seqs, seqs[1:]))
    return Overview(
        states=len(states),
        start=min(s.window_start for s in states),
        end=max(s.window_end for s in states),
        hop=hop,
        label_set=states[0].label_set,
        labels=tuple(states[0].labels),
        model_ids=tuple(dict.fromkeys(s.model_id for s in states)),
        clock=states[0].clock,
        label_time_share=dict(sorted(share.items(), key=lambda kv: -kv[1])),
        mean_probabilities={lab: float(probs[:, i].mean()) for i, lab in enumerate(states[0].labels)},
        modality_share=mods,
        flags=dict(sorted(flags.items(), key=lambda kv: -kv[1])),
        latency_p50_ms=percentile(lat, 50),
        latency_p95_ms=percentile(lat, 95),
        sequence_gaps=int(gaps),
        rationales=sum(bool(s.rationale.strip()) for s in states),
    )
