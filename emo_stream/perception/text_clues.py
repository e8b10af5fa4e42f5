"""What the words of a transcript say about emotion: sentiment and emotion keywords.

Two cheap, transparent clues rather than a text classifier:

* VADER (Hutto & Gilbert 2014; ``vaderSentiment`` package, lexicon shipped in
  the wheel) gives valence: ``compound`` in [-1, 1] plus the pos/neg/neu
  proportions. It handles negation ("not happy"), intensifiers and
  punctuation, and was built for short informal utterances, which is what a
  robot hears.
* :data:`EMOTION_LEXICON`, a small hand-curated table of unambiguous English
  emotion words per canonical emotion (``emo_stream.labels``). Valence alone
  cannot tell sad from angry from afraid; explicit words ("I'm scared", "this
  is so annoying") can, and they are the strongest text cue an LLM prompt or
  late fusion can get. Words whose emotional sense depends on context are left
  out on purpose ("great deal", "sorry", "miss", "mad about"), and every
  word maps to exactly one emotion.

Keyword rules: words are matched on lower-cased tokens; a word preceded within
:data:`NEGATION_WINDOW` tokens by a negator ("not", "never", "don't" ...) does
not count (it is listed in ``negated``: "not happy" is not evidence of any one
emotion); an intensifier right before ("so", "very", "really" ...) counts 1.5x.
Multi-word phrases are matched first and are never negated (they contain
their own negator, e.g. "not sure"). Evidence per label is
``1 - exp(-0.7 * weighted hits)``: 0.50 for one plain hit, 0.75 for two, so
a single word is suggestive and repetition adds with diminishing returns.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from emo_stream.labels import canonical

#: canonical emotion -> single words that express it.
EMOTION_LEXICON: dict[str, tuple[str, ...]] = {
    "happy": (
        "happy",
        "happier",
        "happiest",
        "happily",
        "happiness",
        "glad",
        "joy",
        "joyful",
        "delighted",
        "delightful",
        "pleased",
        "cheerful",
        "excited",
        "thrilled",
        "wonderful",
        "fantastic",
        "awesome",
        "lovely",
        "enjoy",
        "enjoyed",
        "enjoying",
        "fun",
        "laugh",
        "laughing",
        "yay",
        "hooray",
        "proud",
        "grateful",
        "thankful",
        "love",
        "loved",
    ),
    "sad": (
        "sad",
        "sadder",
        "saddest",
        "sadly",
        "sadness",
        "unhappy",
        "depressed",
        "depressing",
        "miserable",
        "heartbroken",
        "grief",
        "grieving",
        "cry",
        "crying",
        "cried",
        "tears",
        "lonely",
        "sorrow",
        "disappointed",
        "disappointing",
        "hopeless",
        "gloomy",
        "upset",
    ),
    "angry": (
        "angry",
        "angrier",
        "anger",
        "furious",
        "fury",
        "rage",
        "annoyed",
        "annoying",
        "irritated",
        "irritating",
        "hate",
        "hated",
        "hates",
        "hatred",
        "outraged",
        "outrageous",
        "pissed",
        "frustrated",
        "frustrating",
        "resent",
        "livid",
    ),
    "fear": (
        "afraid",
        "scared",
        "scary",
        "frightened",
        "frightening",
        "terrified",
        "terrifying",
        "terror",
        "fear",
        "fearful",
        "panic",
        "panicking",
        "horrified",
        "dread",
        "petrified",
    ),
    "worried": (
        "worried",
        "worry",
        "worries",
        "worrying",
        "anxious",
        "anxiety",
        "nervous",
        "concerned",
        "uneasy",
        "stressed",
        "apprehensive",
    ),
    "surprise": (
        "surprised",
        "surprise",
        "surprising",
        "surprisingly",
        "shocked",
        "shocking",
        "astonished",
        "astonishing",
        "amazed",
        "unexpected",
        "unexpectedly",
        "wow",
        "whoa",
        "unbelievable",
    ),
    "disgust": (
        "disgusting",
        "disgusted",
        "disgust",
        "gross",
        "revolting",
        "nasty",
        "sickening",
        "yuck",
        "eww",
        "repulsive",
        "vile",
    ),
    "contempt": ("pathetic", "contempt", "despise", "despicable", "worthless", "ridiculous"),
    "doubt": ("doubt", "doubts", "doubtful", "unsure", "uncertain", "skeptical", "sceptical", "suspicious", "questionable"),
}

#: canonical emotion -> multi-word phrases (matched before single words, never negated).
EMOTION_PHRASES: dict[str, tuple[str, ...]] = {
    "angry": ("fed up", "sick of"),
    "surprise": ("can't believe", "cannot believe", "no way"),
    "doubt": ("not sure", "don't know", "no idea"),
    "fear": ("freaked out", "freaking out"),
}

NEGATORS = frozenset(
    {
        "not",
        "no",
        "never",
        "nothing",
        "nobody",
        "none",
        "neither",
        "nor",
        "without",
        "hardly",
        "barely",
        "don't",
        "doesn't",
        "didn't",
        "isn't",
        "aren't",
        "wasn't",
        "weren't",
        "won't",
        "wouldn't",
        "can't",
        "cannot",
        "couldn't",
        "shouldn't",
        "ain't",
        "haven't",
        "hasn't",
        "hadn't",
    }
)
INTENSIFIERS = frozenset({"so", "very", "really", "extremely", "totally", "incredibly", "super", "absolutely", "completely"})
NEGATION_WINDOW = 3
INTENSIFIER_WEIGHT = 1.5
EVIDENCE_RATE = 0.7

_TOKEN = re.compile(r"[a-z]+(?:'[a-z]+)?")


def _check_lexicon() -> dict[str, str]:
    """Validate the tables once at import; return word -> emotion."""
    index: dict[str, str] = {}
    for table in (EMOTION_LEXICON, EMOTION_PHRASES):
        for label, words in table.items():
            if canonical(label) != label:
                raise ValueError(f"lexicon label {label!r} is not canonical")
            for word in words:
                if word in index and index[word] != label:
                    raise ValueError(f"lexicon word {word!r} maps to both {index[word]!r} and {label!r}")
                index[word] = label
    return index


_WORD_TO_LABEL = _check_lexicon()
_PHRASES = sorted(
    ((tuple(p.split()), label) for label, phrases in EMOTION_PHRASES.items() for p in phrases),
    key=lambda item: -len(item[0]),
)


def tokenize(text: str) -> list[str]:
    """Lower-case word tokens; typographic apostrophes become ASCII so "don’t" matches."""  # noqa: RUF002 - the typographic apostrophe is the point
    return _TOKEN.findall(text.lower().replace("\u2019", "'"))


@dataclass(frozen=True)
class Sentiment:
    """VADER scores: ``compound`` in [-1, 1]; pos + neg + neu = 1 (all 0 for empty text)."""

    compound: float
    pos: float
    neg: float
    neu: float


@dataclass(frozen=True)
class TextClues:
    """Emotion clues of one transcript.

    ``evidence``: canonical emotion -> [0, 1] from keywords (only emotions that
    were hit). ``matches``: the words/phrases behind each. ``negated``: emotion
    words cancelled by a negator.
    """

    text: str
    n_words: int
    sentiment: Sentiment
    evidence: Mapping[str, float] = field(default_factory=dict)
    matches: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    negated: tuple[str, ...] = ()

    @property
    def valence(self) -> float:
        """Valence the words suggest (VADER compound)."""
        return self.sentiment.compound

    def prompt_hint(self) -> str:
        """One line for an LLM prompt, e.g. ``words: positive (compound +0.86); emotion words: happy (happy, wonderful)``."""
        if not self.n_words:
            return "words: none"
        c = self.sentiment.compound
        tone = "positive" if c >= 0.05 else "negative" if c <= -0.05 else "neutral"  # VADER's own cut-offs
        parts = [f"words: {tone} (compound {c:+.2f})"]
        if self.evidence:
            ranked = sorted(self.evidence, key=lambda k: -self.evidence[k])
            parts.append("emotion words: " + ", ".join(f"{k} ({', '.join(self.matches[k])})" for k in ranked))
        if self.negated:
            parts.append("negated: " + ", ".join(self.negated))
        return "; ".join(parts)


def keyword_evidence(tokens: list[str]) -> tuple[dict[str, float], dict[str, tuple[str, ...]], tuple[str, ...]]:
    """(evidence, matches, negated) from tokens, by the rules in the module doc."""
    weights: dict[str, float] = {}
    matches: dict[str, list[str]] = {}
    negated: list[str] = []
    used = [False] * len(tokens)
    for words, label in _PHRASES:
        n = len(words)
        for i in range(len(tokens) - n + 1):
            if not any(used[i : i + n]) and tuple(tokens[i : i + n]) == words:
                used[i : i + n] = [True] * n
                boost = INTENSIFIER_WEIGHT if i > 0 and tokens[i - 1] in INTENSIFIERS else 1.0
                weights[label] = weights.get(label, 0.0) + boost
                matches.setdefault(label, []).append(" ".join(words))
    for i, tok in enumerate(tokens):
        word_label = _WORD_TO_LABEL.get(tok)
        if word_label is None or used[i]:
            continue
        if any(t in NEGATORS for t in tokens[max(0, i - NEGATION_WINDOW) : i]):
            negated.append(tok)
            continue
        boost = INTENSIFIER_WEIGHT if i > 0 and tokens[i - 1] in INTENSIFIERS else 1.0
        weights[word_label] = weights.get(word_label, 0.0) + boost
        matches.setdefault(word_label, []).append(tok)
    evidence = {k: 1.0 - math.exp(-EVIDENCE_RATE * w) for k, w in weights.items()}
    return evidence, {k: tuple(v) for k, v in matches.items()}, tuple(negated)


class TextClueExtractor:
    """VADER + keyword clues, memoised per transcript.

    Overlapping windows see the same transcript several times; a small LRU
    cache makes repeats free.
    """

    def __init__(self, cache_size: int = 256) -> None:
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")
        try:
            from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
        except ImportError as exc:
            from emo_stream.errors import missing_dependency  # an ImportError too: callers' fallbacks still work

            raise missing_dependency("vaderSentiment", "text sentiment", "engine") from exc
        self._vader: Any = SentimentIntensityAnalyzer()
        self._cache: OrderedDict[str, TextClues] = OrderedDict()
        self._cache_size = cache_size

    def analyze(self, text: str) -> TextClues:
        """Clues of one transcript (empty text -> neutral, no evidence)."""
        key = " ".join(text.split())
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        tokens = tokenize(key)
        if tokens:
            s = self._vader.polarity_scores(key)
            sentiment = Sentiment(float(s["compound"]), float(s["pos"]), float(s["neg"]), float(s["neu"]))
        else:
            sentiment = Sentiment(0.0, 0.0, 0.0, 0.0)
        evidence, matches, negated = keyword_evidence(tokens)
        clues = TextClues(key, len(tokens), sentiment, evidence, matches, negated)
        if self._cache_size:
            self._cache[key] = clues
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return clues
