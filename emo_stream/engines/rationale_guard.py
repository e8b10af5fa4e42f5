"""Publish a rationale only when it says what the clues say (and never what the person said).

The default engine's rationale comes from a 135M-parameter LLM that reads the
window's clues (``emo_stream.engines.clues.render``). Such a small model
completes the sentence fluently but freely: on Megamind it wrote "they speak in
a language that is not their native language" (no clue mentions a language),
and with transcripts off it still quoted the speaker ("they don't judge a book
by its cover"), because the transcript is in its prompt. :func:`guard_rationale`
is the last step before a rationale is published: it keeps the LLM's sentence
or replaces it by the caller's templated ``fallback`` (built from the clues,
so always true), and says why.

The check is lexical, on word stems (a deliberately small normaliser: plural,
-ing, -ed, -ly, possessive), and runs in two rules, privacy first:

1. **Transcript privacy** (when ``allow_transcript`` is false): the sentence
   must not reuse a transcript word, except stopwords, emotion label words
   (:data:`LABEL_WORDS`, built from :mod:`emo_stream.labels`) and the clue
   renderer's own fixed vocabulary (:data:`GENERIC_WORDS`,
   :data:`CLUE_WORDS`: "voice", "loud", "speaking" ... say nothing about
   *what* was said). Any other shared word -- a name, a place, an emotion word
   the person used ("wonderful") -- is a leak, as is a digit string.
2. **Invented facts**: every content word of the sentence must be supported:
   a stopword, a label word, an emotion word of the lexicon in
   :mod:`emo_stream.perception.text_clues`, a generic explanation word
   (:data:`GENERIC_WORDS`: "face", "voice", "seems", "because" ...) or a word
   of ``clue_facts`` (plus the transcript's words when transcripts are
   allowed). The renderer's quality words (:data:`CLUE_WORDS`: "loud",
   "fast", "smiling" ...) count only when ``clue_facts`` contains them, so
   "their voice is loud" over a "Voice: quiet." clue is replaced too. Numbers,
   languages, nationalities, places, people, objects and actions are not in
   any of these lists, so naming one the clues do not contain replaces the
   sentence.

Being lexical, the check errs on the side of replacing: a true paraphrase with
a word outside the lists is replaced by the (true) templated sentence, which
costs nothing but variety. It cannot catch a false statement made only of
allowed words ("the voice is not speaking" over "Voice: speaking."); the
prompt keeps those rare.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from emo_stream.labels import ALIASES, CIRCUMPLEX, LABEL_SETS
from emo_stream.perception.text_clues import EMOTION_LEXICON, tokenize

__all__ = ["guard_rationale"]

#: Function words: never evidence of a fact, never a leak on their own. "one" is
#: here because the prompt asks for "one sentence" and the model echoes it.
STOPWORDS = frozenset(
    """
a an the and or but nor so yet if then than that this these those there here it its it's itself
i me my mine we us our you your he him his she her hers they them their theirs they're they've
themselves himself herself someone something anyone anything everyone everything
is am are was were be been being do does did doing done have has had having
will would shall should can could may might must not no yes don't doesn't didn't isn't aren't
wasn't weren't won't can't cannot couldn't wouldn't shouldn't haven't hasn't hadn't
of in on at by for with from to into onto about as like than through over under up down out off
also too very quite rather somewhat slightly really just only even still more most less least
much many some any all both each either neither other another such same own
what which who whom whose when where why how while whereas although though because since
one ones way ways kind sort lot bit well
""".split()
)

#: Explanation words the rationale prompt invites ("explain which clues show the
#: emotion") that name a channel or the act of showing, not a fact about the scene.
GENERIC_WORDS = frozenset(
    """
person people someone face faces facial expression expressions look looks looking looked
appear appears appearing appeared seem seems seeming seemed show shows showing shown showed
voice voices tone tones speech sound sounds sounding vocal word words said say says saying
clue clues sign signs signal signals indicate indicates indicating indication suggest suggests
suggesting suggestion reflect reflects reveal reveals convey conveys express expresses expressing
emotion emotions emotional emotionally feel feels feeling feelings felt mood state
because likely probably possibly perhaps overall mostly mainly partly generally based evidence
manner way ways
clear clearly maybe briefly some strong strongly weak weakly mild mildly little
visible detected present camera microphone robot
""".split()
)

#: Words the clue renderer (``emo_stream.engines.clues``) uses for qualities of
#: face and voice. They carry no transcript content (privacy-neutral) but are
#: facts: a sentence may use them only where ``clue_facts`` says them.
CLUE_WORDS = frozenset(
    """
speaking speak speaks spoken silent silence quiet loud loudly soft softly low high pitch pitched
fast slow slowly quickly rapid agitated calm calmly calmer tense relaxed energetic
smile smiling smiles frown frowning frowns positive negative neutral compound visible
""".split()
)


def _label_words() -> frozenset[str]:
    """Every emotion label of every label set, its canonical name and aliases, plus
    the usual word forms ("sadness", "fearful", "surprised"), so "seems sad"/"looks
    sadness" are never counted as transcript words or invented facts."""
    words: set[str] = set(CIRCUMPLEX) | set(ALIASES) | set(ALIASES.values())
    for ls in LABEL_SETS.values():
        words.update(lab.lower() for lab in ls.labels)
    words.update(
        "happiness happily unhappy sadness sadly anger angrily angry fearful afraid scared "
        "surprised surprising disgusted disgusting contemptuous doubtful worry worrying worries "
        "neutrality uniform".split()
    )
    return frozenset(words)


LABEL_WORDS = _label_words()
_EMOTION_WORDS = frozenset(w for words in EMOTION_LEXICON.values() for w in words)
#: Digits are facts (counts, ages, times) like words: kept only where a clue has them.
_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")


def _stem(word: str) -> str:
    """A crude, symmetric normaliser: both sides of every comparison go through it,
    so it only has to map inflections of one word to one key, not find real roots."""
    w = word.lower().replace("\u2019", "'")
    if w.endswith("'s"):
        w = w[:-2]
    for suffix in ("ingly", "edly", "ing", "ies", "ied", "ed", "ly", "es", "s"):
        if w.endswith(suffix) and len(w) - len(suffix) >= 3:
            w = w[: -len(suffix)]
            if suffix in ("ies", "ied"):
                w += "y"
            break
    if w.endswith("i") and len(w) > 3:  # happily -> happi -> happy
        w = w[:-1] + "y"
    if len(w) > 3 and w[-1] == w[-2] and w[-1] not in "aeiouls":  # stopped -> stopp -> stop
        w = w[:-1]
    if w.endswith("e") and len(w) > 3:  # smile / smiling -> smil
        w = w[:-1]
    return w


def _stems(words: Iterable[str]) -> set[str]:
    return {_stem(w) for w in words}


_STOP_STEMS = _stems(STOPWORDS) | STOPWORDS
_LABEL_STEMS = _stems(LABEL_WORDS)
_GENERIC_STEMS = _stems(GENERIC_WORDS)
_CLUE_STEMS = _stems(CLUE_WORDS)
_EMOTION_STEMS = _stems(_EMOTION_WORDS)


def _content(text: str) -> dict[str, str]:
    """stem -> first surface form, for the non-stopword tokens and numbers of ``text``."""
    out: dict[str, str] = {}
    for tok in [*tokenize(text), *_NUMBER.findall(text)]:
        if tok in STOPWORDS:
            continue
        stem = _stem(tok)
        if stem in _STOP_STEMS:
            continue
        out.setdefault(stem, tok)
    return out


def _quote(words: Iterable[str], limit: int = 4) -> str:
    ws = sorted(set(words))
    return ", ".join(ws[:limit]) + (f" (+{len(ws) - limit})" if len(ws) > limit else "")


def guard_rationale(sentence: str, *, clue_facts: str, transcript: str | None, allow_transcript: bool, fallback: str) -> tuple[str, str | None]:
    """The rationale to publish and why it was replaced (None when ``sentence`` is kept).

    Args:
        sentence: the LLM's rationale ("" when there is none: returned as is).
        clue_facts: the clue text the LLM read (``clues.render(...)``): what may be said.
        transcript: what was said in the window (None or "" when nothing was heard).
        allow_transcript: True when transcripts may be published (``publish_transcript``);
            then the transcript's words are facts too.
        fallback: the sentence to publish instead, templated from the clues by the caller
            (it is trusted: build it from clue fields, never from the transcript when
            transcripts are off).

    Returns:
        ``(sentence, None)`` when the sentence passes both rules, else ``(fallback, reason)``
        with ``reason`` one line starting with the rule: ``"transcript words: ..."``
        (privacy) or ``"not in the clues: ..."`` (invented facts), naming the words.
    """
    if not sentence or not sentence.strip():
        return sentence, None
    words = _content(sentence)
    if transcript and not allow_transcript:
        said = _content(transcript)
        leaked = [
            surface for stem, surface in words.items() if stem in said and stem not in _LABEL_STEMS and stem not in _GENERIC_STEMS and stem not in _CLUE_STEMS
        ]
        if leaked:
            return fallback, f"transcript words: {_quote(leaked)}"
    supported = set(_content(clue_facts))
    if transcript and allow_transcript:
        supported |= set(_content(transcript))
    always = _LABEL_STEMS | _EMOTION_STEMS | _GENERIC_STEMS
    invented = [surface for stem, surface in words.items() if stem not in always and stem not in supported]
    if invented:
        return fallback, f"not in the clues: {_quote(invented)}"
    return sentence, None
