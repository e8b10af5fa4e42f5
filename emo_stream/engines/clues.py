"""Unimodal clues of one window and their rendering as LLM prompt text.

EMER (seed 003) has an LLM disambiguate unimodal clues; this module is the
"clues as text" half. The text is deliberately compact and numeric-light: the
135M reasoner reads words better than tables, and every token of the per-window
suffix is evaluated on the hot path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from emo_stream.labels import LabelSet

SYSTEM_PROMPT = (
    "You are an expert in affective computing. You read clues about a person from a robot's "
    "camera and microphone, and you name the emotion the person most likely feels."
)


def instruction(label_set: LabelSet) -> str:
    """The static part of the user turn: the label vocabulary and the answer format."""
    return f"Possible emotions: {', '.join(label_set.labels)}.\nAnswer with one of these words."


#: The assistant turn starts with this; labels are scored as its continuation (" happy" ...).
ANSWER_PREFIX = "Emotion:"


def label_continuations(label_set: LabelSet) -> list[str]:
    """Labels as the tokens that follow :data:`ANSWER_PREFIX` (leading space: one BPE word)."""
    return [" " + lab for lab in label_set.labels]


@dataclass(frozen=True)
class FaceClue:
    """Facial expression over the window (FER2013 labels)."""

    labels: tuple[str, ...]
    mean: np.ndarray
    peak_label: str | None
    n_faces: int
    n_frames: int


@dataclass(frozen=True)
class VoiceClue:
    """Voice activity and prosody over the window."""

    speech_ratio: float
    arousal: float | None  # prosodic arousal in [-1, 1], None without enough speech
    confidence: float  # how much the speaker normaliser has seen (0..1)
    pitch_z: float | None
    energy_z: float | None
    rate_z: float | None


@dataclass(frozen=True)
class WordsClue:
    """What was said recently and its sentiment."""

    text: str
    hint: str  # one line from TextClueExtractor.prompt_hint()
    valence: float  # VADER compound in [-1, 1]
    evidence: Mapping[str, float]  # canonical emotion -> keyword strength (0..1)


@dataclass(frozen=True)
class WindowClues:
    face: FaceClue | None
    voice: VoiceClue | None
    words: WordsClue | None

    @property
    def empty(self) -> bool:
        return self.face is None and self.voice is None and self.words is None


def _level(z: float | None, low: str | None, mid: str | None, high: str | None) -> str | None:
    if z is None or not np.isfinite(z):
        return None
    return high if z > 0.75 else low if z < -0.75 else mid


def _strength(p: float) -> str:
    return "clearly " if p >= 0.7 else "" if p >= 0.4 else "maybe "


def render_face(face: FaceClue) -> str:
    """Qualitative, not numeric: words the small LLM reads well, and text that stays
    the same from window to window (so its KV cache is reused, see DefaultEngine)."""
    order = np.argsort(face.mean)[::-1]
    first, second = int(order[0]), int(order[1])
    out = f"Face: {_strength(face.mean[first])}{face.labels[first]}"
    if face.mean[second] >= 0.2:
        out += f", some {face.labels[second]}"
    if face.peak_label and face.peak_label not in (face.labels[first], face.labels[second]):
        out += f", briefly {face.peak_label}"
    return out + "."


def render_voice(voice: VoiceClue) -> str:
    if voice.speech_ratio < 0.05:
        return "Voice: silent."
    parts = ["speaking" if voice.speech_ratio >= 0.3 else "a few words"]
    for z, words in (
        (voice.pitch_z, ("low pitch", None, "high pitch")),
        (voice.energy_z, ("quiet", None, "loud")),
        (voice.rate_z, ("slow", None, "fast")),
    ):
        level = _level(z, *words)
        if level:
            parts.append(level)
    if voice.arousal is not None and voice.confidence >= 0.2:
        if voice.arousal > 0.3:
            parts.append("agitated")
        elif voice.arousal < -0.3:
            parts.append("calm")
    return "Voice: " + ", ".join(parts) + "."


def render_words(words: WordsClue, max_chars: int = 240) -> str:
    text = words.text if len(words.text) <= max_chars else "..." + words.text[-max_chars:]
    return f'Words: "{text}" ({words.hint}).' if words.hint else f'Words: "{text}".'


def render(clues: WindowClues) -> str:
    """The per-window part of the prompt (one clue per line)."""
    lines = []
    if clues.face is not None:
        lines.append(render_face(clues.face))
    else:
        lines.append("Face: not visible.")
    if clues.voice is not None:
        lines.append(render_voice(clues.voice))
    if clues.words is not None:
        lines.append(render_words(clues.words))
    return "Clues:\n" + "\n".join(lines)
