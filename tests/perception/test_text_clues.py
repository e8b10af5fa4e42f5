"""VADER sentiment and emotion keywords of transcripts."""

from __future__ import annotations

import sys

import pytest

from emo_stream.labels import CIRCUMPLEX
from emo_stream.perception.text_clues import EMOTION_LEXICON, EMOTION_PHRASES, TextClueExtractor, keyword_evidence, tokenize


@pytest.fixture(scope="module")
def clues() -> TextClueExtractor:
    return TextClueExtractor()


def test_positive_and_negative_sentiment(clues: TextClueExtractor) -> None:
    pos = clues.analyze("I am so happy, this is wonderful")
    neg = clues.analyze("this is terrible, I hate it")
    assert pos.sentiment.compound > 0.5 and pos.sentiment.pos > pos.sentiment.neg
    assert neg.sentiment.compound < -0.5 and neg.sentiment.neg > neg.sentiment.pos
    assert pos.valence == pos.sentiment.compound
    s = pos.sentiment
    assert s.pos + s.neg + s.neu == pytest.approx(1.0, abs=0.01)


def test_keywords_give_per_label_evidence(clues: TextClueExtractor) -> None:
    happy = clues.analyze("I am so happy, this is wonderful")
    assert set(happy.evidence) == {"happy"}
    assert happy.matches["happy"] == ("happy", "wonderful")
    assert happy.evidence["happy"] > 0.75  # two hits, one intensified
    angry = clues.analyze("this is terrible, I hate it")
    assert set(angry.evidence) == {"angry"}
    scared = clues.analyze("I'm really scared and nervous about tomorrow")
    assert set(scared.evidence) == {"fear", "worried"}
    assert scared.evidence["fear"] > scared.evidence["worried"]  # "really" intensifies the first
    mixed = clues.analyze("Wow, I can't believe it, that is disgusting")
    assert set(mixed.evidence) == {"surprise", "disgust"}
    assert mixed.matches["surprise"] == ("can't believe", "wow")


def test_negation_cancels_keywords(clues: TextClueExtractor) -> None:
    c = clues.analyze("I'm not happy about this")
    assert "happy" not in c.evidence and c.negated == ("happy",)
    assert c.sentiment.compound < 0  # VADER handles the negation itself
    sure = clues.analyze("I'm not sure that is right")
    assert set(sure.evidence) == {"doubt"}  # the phrase carries its own negator


def test_neutral_and_empty_text(clues: TextClueExtractor) -> None:
    c = clues.analyze("He might even have been made amiable himself")  # LibriVox 0930 transcript
    assert c.evidence == {}
    empty = clues.analyze("   ")
    assert empty.n_words == 0 and empty.evidence == {} and empty.sentiment.compound == 0.0
    assert empty.prompt_hint() == "words: none"


def test_prompt_hint_names_tone_and_words(clues: TextClueExtractor) -> None:
    hint = clues.analyze("I am so happy, this is wonderful").prompt_hint()
    assert hint.startswith("words: positive (compound +0.")
    assert "happy (happy, wonderful)" in hint


def test_cache_returns_same_object(clues: TextClueExtractor) -> None:
    a = clues.analyze("this is terrible, I hate it")
    b = clues.analyze("this is  terrible, I hate it ")
    assert a is b


def test_lexicon_is_canonical_and_unambiguous() -> None:
    seen: dict[str, str] = {}
    for table in (EMOTION_LEXICON, EMOTION_PHRASES):
        for label, words in table.items():
            assert label in CIRCUMPLEX and label != "neutral"
            for word in words:
                assert seen.setdefault(word, label) == label, word
                assert tokenize(word) == word.split(), word
    evidence, _, _ = keyword_evidence(tokenize("fear fear fear fear"))
    assert 0.9 < evidence["fear"] < 1.0


def test_missing_vader_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vaderSentiment.vaderSentiment", None)
    with pytest.raises(ImportError, match="vaderSentiment"):
        TextClueExtractor()
