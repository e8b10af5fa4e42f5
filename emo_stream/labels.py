"""Emotion label sets and the mapping between them.

Datasets disagree on names and on which emotions exist: MELD says ``joy`` where
MER2023 says ``happy``; MERR has ``doubt`` and ``contempt``, DFEW has ``disgust``,
MER2023 has none of them. Every label here is an alias of one *canonical*
emotion, and a documented nearest-neighbour table says where a canonical emotion
goes when the target set lacks it. Mapping probabilities therefore always
conserves mass and is deterministic.

Valence/arousal come from circumplex coordinates per canonical emotion
(Russell 1980; values in [-1, 1], read off the usual circumplex plots and
rounded). They are a prior, not a measurement: engines blend them with
measured cues such as prosodic arousal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from emo_stream.errors import ConfigError

#: canonical emotion -> (valence, arousal) on the circumplex.
CIRCUMPLEX: dict[str, tuple[float, float]] = {
    "happy": (0.80, 0.50),
    "surprise": (0.30, 0.80),
    "neutral": (0.00, 0.00),
    "sad": (-0.70, -0.40),
    "angry": (-0.60, 0.70),
    "fear": (-0.70, 0.70),
    "worried": (-0.50, 0.40),
    "disgust": (-0.70, 0.30),
    "contempt": (-0.60, 0.20),
    "doubt": (-0.30, 0.10),
}

#: Where a canonical emotion goes when a target set does not contain it, in order
#: of preference. "worried" and "fear" are the same family at different
#: intensities; "contempt" and "disgust" are both rejection; "doubt" is closest
#: to a low-arousal, mildly negative neutral.
FALLBACKS: dict[str, tuple[str, ...]] = {
    "worried": ("fear", "sad", "neutral"),
    "fear": ("worried", "surprise", "sad"),
    "contempt": ("disgust", "angry"),
    "disgust": ("contempt", "angry"),
    "doubt": ("worried", "neutral"),
    "surprise": ("neutral",),
    "happy": ("neutral",),
    "sad": ("neutral",),
    "angry": ("neutral",),
    "neutral": ("doubt",),
}

#: dataset label -> canonical emotion (lower-case).
ALIASES: dict[str, str] = {
    "joy": "happy",
    "happiness": "happy",
    "anger": "angry",
    "sadness": "sad",
    "surprised": "surprise",
    "fearful": "fear",
    "disgusted": "disgust",
    "worry": "worried",
}


def canonical(label: str) -> str:
    """Return the canonical emotion a dataset label stands for."""
    key = label.strip().lower()
    key = ALIASES.get(key, key)
    if key not in CIRCUMPLEX:
        raise ConfigError(f"unknown emotion label {label!r}; known: {sorted(CIRCUMPLEX)} and aliases {sorted(ALIASES)}")
    return key


@dataclass(frozen=True)
class LabelSet:
    """An ordered set of emotion labels, as a dataset or model defines it.

    Order matters: probability vectors are indexed by it.
    """

    id: str
    labels: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.id:
            raise ConfigError("label set id must not be empty")
        if len(self.labels) < 2:
            raise ConfigError(f"label set {self.id!r} needs at least two labels")
        canon = [canonical(lab) for lab in self.labels]
        if len(set(canon)) != len(canon):
            raise ConfigError(f"label set {self.id!r} has two labels for the same emotion: {self.labels}")

    def __len__(self) -> int:
        return len(self.labels)

    def index(self, label: str) -> int:
        """Index of ``label`` (or of any alias of the same emotion)."""
        want = canonical(label)
        for i, lab in enumerate(self.labels):
            if canonical(lab) == want:
                return i
        raise ConfigError(f"label {label!r} is not in label set {self.id!r} {self.labels}")

    @property
    def canonical_labels(self) -> tuple[str, ...]:
        return tuple(canonical(lab) for lab in self.labels)

    def circumplex(self) -> np.ndarray:
        """(n, 2) valence/arousal coordinates of each label."""
        return np.array([CIRCUMPLEX[c] for c in self.canonical_labels], dtype=np.float64)


#: Label sets of the datasets emo_stream trains and evaluates on, in each
#: dataset's own order (the order Emotion-LLaMA's code and the papers use).
LABEL_SETS: dict[str, LabelSet] = {
    ls.id: ls
    for ls in (
        LabelSet("mer2023", ("neutral", "angry", "happy", "sad", "worried", "surprise")),
        LabelSet("merr", ("happy", "sad", "neutral", "angry", "worried", "surprise", "fear", "contempt", "doubt")),
        LabelSet("dfew", ("happy", "sad", "neutral", "angry", "surprise", "disgust", "fear")),
        LabelSet("meld", ("neutral", "joy", "surprise", "anger", "sadness", "disgust", "fear")),
        # The FER2013 expression net's output order (angry, disgust, fear, happy, sad, surprise, neutral).
        LabelSet("fer2013", ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")),
    )
}


def get_label_set(label_set_id: str) -> LabelSet:
    """Look up a registered label set by id (case-insensitive)."""
    try:
        return LABEL_SETS[label_set_id.lower()]
    except KeyError:
        raise ConfigError(f"unknown label set {label_set_id!r}; choose one of {sorted(LABEL_SETS)}") from None


def nearest_label_index(emotion: str, target: LabelSet) -> int:
    """Index in ``target`` that ``emotion`` (any alias) maps to: itself if present,
    else the first of its documented FALLBACKS (breadth first) that is."""
    canon = canonical(emotion)
    tcanon = target.canonical_labels
    seen: set[str] = set()
    frontier = [canon]
    while frontier:
        nxt: list[str] = []
        for c in frontier:
            if c in seen:
                continue
            seen.add(c)
            if c in tcanon:
                return tcanon.index(c)
            nxt.extend(FALLBACKS.get(c, ()))
        frontier = nxt
    # Every set we register has "neutral"; a custom set without it still gets a
    # deterministic answer: the label nearest on the circumplex.
    va = np.array(CIRCUMPLEX[canon])
    return int(np.argmin(np.linalg.norm(target.circumplex() - va, axis=1)))


def mapping_matrix(source: LabelSet, target: LabelSet) -> np.ndarray:
    """(len(source), len(target)) 0/1 matrix; each row has exactly one 1."""
    m = np.zeros((len(source), len(target)), dtype=np.float64)
    for i, c in enumerate(source.canonical_labels):
        m[i, nearest_label_index(c, target)] = 1.0
    return m


def map_probabilities(probs: Sequence[float] | np.ndarray, source: LabelSet, target: LabelSet) -> np.ndarray:
    """Move a probability vector from one label set to another, conserving mass."""
    p = np.asarray(probs, dtype=np.float64)
    if p.shape != (len(source),):
        raise ValueError(f"expected {len(source)} probabilities for {source.id}, got shape {p.shape}")
    return p @ mapping_matrix(source, target)


def valence_arousal(probs: Sequence[float] | np.ndarray, label_set: LabelSet) -> tuple[float, float]:
    """Expected circumplex coordinates under ``probs``."""
    p = np.asarray(probs, dtype=np.float64)
    v, a = p @ label_set.circumplex()
    return float(v), float(a)


def normalize(probs: Mapping[str, float] | Sequence[float] | np.ndarray) -> np.ndarray:
    """Clip negatives/NaNs to zero and renormalise; all-zero input becomes uniform."""
    values = list(probs.values()) if isinstance(probs, Mapping) else probs
    p = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    p = np.clip(p, 0.0, None)
    total = p.sum()
    if total <= 0:
        return np.full(p.shape, 1.0 / p.size)
    return p / total
