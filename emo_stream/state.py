"""``EmotionState``: the one output contract of emo_stream.

One state per window. The Python dataclass, the JSONL line and the ROS message
(``emo_msgs/EmotionState``) carry the same fields, so a consumer can switch
transports without re-learning the schema. Invariants are checked at
construction (probabilities sum to 1, top label is the arg-max, window bounds
ordered) so a broken engine fails loudly at the source instead of producing
silent garbage downstream.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from emo_stream.labels import LabelSet, canonical, normalize

SCHEMA_VERSION = 1

#: Modalities a state can report as present.
#: video/audio: samples of that stream fell in the window; face: a face was found;
#: voice: speech was detected; text: a transcript was available.
MODALITIES = ("video", "audio", "face", "voice", "text")

#: What ``stamp`` is measured on: media time of a file, the host's monotonic
#: clock for live devices, or ROS time for topic inputs.
CLOCKS = ("media", "monotonic", "ros")

_PROB_TOL = 1e-4

#: A person id: usable as one ROS topic-name token (REP 155's /humans/faces/<id>/...).
_PERSON_ID = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")


@dataclass(frozen=True)
class EmotionState:
    """What the person most likely feels during one window.

    Attributes:
        stamp: window end in seconds on ``clock`` (the moment the state describes).
        window_start, window_end: the window the evidence came from.
        sequence: 0, 1, 2 ... per stream; gaps mean dropped windows.
        label_set: id of the label set (``mer2023``, ``merr`` ...).
        labels, probabilities: aligned; probabilities sum to 1.
        top_label, confidence: the arg-max and its probability.
        valence, arousal: in [-1, 1], ``None`` when the engine does not estimate them.
        modalities: which of :data:`MODALITIES` contributed.
        rationale: a short explanation, empty when not refreshed this window.
        rationale_age_s: seconds since the last rationale was written (0 when
            fresh), ``None`` when there has never been one.
        latency_ms: per-stage wall time for this window (engine stages,
            ``engine`` total, ``pipeline`` from window ready to state built).
        model_id: what produced it (engine, weights, label set).
        flags: conditions a consumer should know (``audio_gap``,
            ``corrupt_input``, ``not_an_emotion_model`` ...).
        signals: numeric clues the engine measured (motion energy, speech ratio ...).
        clock: one of :data:`CLOCKS`.
        transcript: what was said recently; empty unless the user opted in to
            publishing transcripts (emotion data and speech are personal).
        person_id: the tracker's stable id of the person this state describes
            (``p1``, ``p2`` ...; :mod:`emo_stream.perception.people`). ``""``
            when the engine does not track people: the state is then about the
            one primary person, as before ids existed, so old JSONL files (no
            such key) read back unchanged. An id is a valid ROS name token
            (REP 155 puts it into topic names: ``/humans/faces/<id>/...``).
    """

    stamp: float
    window_start: float
    window_end: float
    sequence: int
    label_set: str
    labels: tuple[str, ...]
    probabilities: tuple[float, ...]
    top_label: str
    confidence: float
    valence: float | None
    arousal: float | None
    modalities: tuple[str, ...]
    rationale: str
    rationale_age_s: float | None
    latency_ms: Mapping[str, float]
    model_id: str
    flags: tuple[str, ...] = ()
    signals: Mapping[str, float] = field(default_factory=dict)
    clock: str = "media"
    transcript: str = ""
    person_id: str = ""

    def __post_init__(self) -> None:
        errors: list[str] = []
        if len(self.labels) != len(self.probabilities):
            errors.append(f"{len(self.labels)} labels but {len(self.probabilities)} probabilities")
        probs = np.asarray(self.probabilities, dtype=np.float64)
        if probs.size and (not np.all(np.isfinite(probs)) or probs.min() < 0):
            errors.append(f"probabilities must be finite and >= 0: {self.probabilities}")
        elif probs.size and abs(probs.sum() - 1.0) > _PROB_TOL:
            errors.append(f"probabilities sum to {probs.sum():.6f}, not 1")
        if probs.size and not errors:
            best = int(np.argmax(probs))
            if self.top_label != self.labels[best] or abs(self.confidence - probs[best]) > _PROB_TOL:
                errors.append(f"top_label/confidence {self.top_label}/{self.confidence} != arg-max {self.labels[best]}/{probs[best]}")
        if not (math.isfinite(self.window_start) and math.isfinite(self.window_end)) or self.window_start > self.window_end:
            errors.append(f"window [{self.window_start}, {self.window_end}] is not an ordered finite interval")
        if abs(self.stamp - self.window_end) > 1e-9:
            errors.append("stamp must equal window_end")
        if self.sequence < 0:
            errors.append("sequence must be >= 0")
        for name in ("valence", "arousal"):
            v = getattr(self, name)
            if v is not None and not (math.isfinite(v) and -1.0 <= v <= 1.0):
                errors.append(f"{name}={v} is outside [-1, 1]")
        unknown = set(self.modalities) - set(MODALITIES)
        if unknown:
            errors.append(f"unknown modalities {sorted(unknown)}")
        if self.clock not in CLOCKS:
            errors.append(f"clock {self.clock!r} not in {CLOCKS}")
        if not isinstance(self.person_id, str) or (self.person_id and not _PERSON_ID.fullmatch(self.person_id)):
            errors.append(f"person_id {self.person_id!r} must be empty or a letter then letters, digits or '_' (at most 64)")
        if errors:
            raise ValueError("invalid EmotionState: " + "; ".join(errors))

    # -- construction ---------------------------------------------------------
    @classmethod
    def build(
        cls,
        *,
        label_set: LabelSet,
        probabilities: Sequence[float] | np.ndarray,
        window_start: float,
        window_end: float,
        sequence: int,
        model_id: str,
        valence: float | None = None,
        arousal: float | None = None,
        modalities: Iterable[str] = (),
        rationale: str = "",
        rationale_age_s: float | None = None,
        latency_ms: Mapping[str, float] | None = None,
        flags: Iterable[str] = (),
        signals: Mapping[str, float] | None = None,
        clock: str = "media",
        transcript: str = "",
        person_id: str = "",
    ) -> EmotionState:
        """Build a state from raw engine output: normalises the probabilities,
        derives the top label, clips valence/arousal into range and orders
        modalities canonically."""
        p = normalize(probabilities)
        if p.shape != (len(label_set),):
            raise ValueError(f"{label_set.id} has {len(label_set)} labels, engine gave {p.shape[0]} probabilities")
        best = int(np.argmax(p))
        present = set(modalities)
        return cls(
            stamp=float(window_end),
            window_start=float(window_start),
            window_end=float(window_end),
            sequence=int(sequence),
            label_set=label_set.id,
            labels=tuple(label_set.labels),
            probabilities=tuple(float(x) for x in p),
            top_label=label_set.labels[best],
            confidence=float(p[best]),
            valence=_clip_unit(valence),
            arousal=_clip_unit(arousal),
            modalities=tuple(m for m in MODALITIES if m in present),
            rationale=rationale,
            rationale_age_s=rationale_age_s,
            latency_ms={k: float(v) for k, v in (latency_ms or {}).items()},
            model_id=model_id,
            flags=tuple(dict.fromkeys(flags)),
            signals={k: float(v) for k, v in (signals or {}).items() if math.isfinite(float(v))},
            clock=clock,
            transcript=transcript,
            person_id=person_id,
        )

    # -- views ----------------------------------------------------------------
    def probability(self, label: str) -> float:
        """Probability of ``label`` (or an alias of the same emotion)."""
        want = canonical(label)
        for lab, p in zip(self.labels, self.probabilities):
            if canonical(lab) == want:
                return p
        raise KeyError(f"{label!r} is not among {self.labels}")

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["labels"] = list(self.labels)
        d["probabilities"] = list(self.probabilities)
        d["modalities"] = list(self.modalities)
        d["flags"] = list(self.flags)
        d["latency_ms"] = dict(self.latency_ms)
        d["signals"] = dict(self.signals)
        return {"schema": SCHEMA_VERSION, **d}

    def to_json(self) -> str:
        """One JSON object on one line (the JSONL sink's format)."""
        return json.dumps(self.as_dict(), separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EmotionState:
        data = dict(d)
        schema = data.pop("schema", SCHEMA_VERSION)
        if schema != SCHEMA_VERSION:
            raise ValueError(f"EmotionState schema {schema} is not supported (this is {SCHEMA_VERSION})")
        for key in ("labels", "probabilities", "modalities", "flags"):
            data[key] = tuple(data.get(key, ()))
        return cls(**data)

    @classmethod
    def from_json(cls, line: str) -> EmotionState:
        return cls.from_dict(json.loads(line))


def _clip_unit(x: float | None) -> float | None:
    if x is None or not math.isfinite(x):
        return None
    return float(min(1.0, max(-1.0, x)))


def read_jsonl(path: str) -> list[EmotionState]:
    """Read a JSONL file written by :class:`emo_stream.stream.sinks.JsonlSink`."""
    with open(path, encoding="utf-8") as fh:
        return [EmotionState.from_json(line) for line in fh if line.strip()]


def primary_stream(states: Sequence[EmotionState]) -> list[EmotionState]:
    """The primary person's states of a recorded stream that may hold several people.

    A JSONL sink writes each window's primary state first and the other tracked
    people's after it (same ``sequence``), so the primary stream is the first
    state of each window in file order; a file of one person is returned
    unchanged. Tools that describe one stream (reports) read this; per-person
    views group by ``person_id`` instead.
    """
    seen: set[tuple[int, float]] = set()
    out: list[EmotionState] = []
    for s in states:
        key = (s.sequence, s.window_end)
        if key not in seen:
            seen.add(key)
            out.append(s)
    return out
