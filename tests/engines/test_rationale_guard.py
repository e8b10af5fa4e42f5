"""The rationale guard: published rationales say only what the clues say, never what was said.

The recorded cases are the real default engine's rationales (SmolLM2-135M,
greedy, ``rationale_every_s=0.5``) on the project's clips, with the clue text
that the LLM read, captured by wrapping ``DefaultEngine._rationale_suffix`` /
``_generate_rationale`` during ``emo-stream run --input .cache/media/megamind.avi``
and ``... astronaut_speech.mp4`` (2026-12-06). The live test at the end asks the
real LLM again through the engine's own prompt code.
"""

from __future__ import annotations

import types

import numpy as np
import pytest

from emo_stream.engines.rationale_guard import guard_rationale
from emo_stream.perception.text_clues import tokenize

FALLBACK = "The person seems sad: the face looks sad."
MEGAMIND_SAID = "You don't judge a book by its cover or a person from the outside. That's a relief to hear. You judge them based on their actions."
MEGAMIND_WORDS = f'Words: "{MEGAMIND_SAID}" (words: positive (compound +0.48)).'


def guard(sentence: str, clues: str, transcript: str | None = None, allow: bool = False) -> tuple[str, str | None]:
    return guard_rationale(sentence, clue_facts=clues, transcript=transcript, allow_transcript=allow, fallback=FALLBACK)


# (clue text, LLM sentence) pairs recorded on Megamind / astronaut_speech that state only clue facts.
KEPT = [
    ("Clues:\nFace: maybe fear.\nVoice: speaking.", "The person seems angry because of their facial expression, and the voice is speaking."),
    ("Clues:\nFace: maybe fear.\nVoice: speaking.", "The person seems neutral because they don't seem to have any emotions."),
    ("Clues:\nFace: maybe sad, some fear.\nVoice: speaking.",
     "The person seems sad because they are speaking, and the emotion they are speaking about is sad."),
    ("Clues:\nFace: clearly happy.\nVoice: speaking, low pitch.",
     "The person seems happy because they are speaking low pitch, which is a clear indication of their emotional state."),
    ("Clues:\nFace: clearly happy.\nVoice: speaking, low pitch, slow, calm.",
     "The person seems happy because they are speaking in a low, calm voice, which suggests they are not angry or upset."),
    ("Clues:\nFace: clearly happy.\nVoice: speaking, low pitch, calm.", "The person seems happy because of the low pitch and the calm voice."),
    ("Clues:\nFace: fear, some surprise.\nVoice: silent.",
     "The person seems worried because their face shows fear, and their voice is silent."),
]  # fmt: skip

# (clue text, LLM sentence, words the guard must name) recorded on the same clips: invented facts.
INVENTED = [
    ("Clues:\nFace: maybe sad.\nVoice: speaking.",
     "The person seems sad because they speak in a language that is not their native language.", {"language", "native"}),
    ("Clues:\nFace: maybe sad, some angry.\nVoice: speaking, fast.",
     "The person seems sad because they are speaking quickly and in a language that is not their native language.",
     {"language", "native"}),
    ("Clues:\nFace: fear, some surprise.\nVoice: silent.",
     "The person seems worried because they're not smiling, and their voice is silent.", {"smiling"}),
    ("Clues:\nFace: sad.\nVoice: speaking, fast.",
     "The person seems sad because of the facial expression of sadness, and the voice is fast because of the "
     "fast-paced nature of their speech.", {"nature"}),
    ("Clues:\nFace: maybe sad, some fear.\nVoice: speaking, calm.",
     "The person seems sad because they are speaking in a calm and soothing tone.", {"soothing"}),
    ("Clues:\nFace: maybe fear, some sad, briefly surprise.\nVoice: speaking, low pitch, slow.",
     "The person seems sad because they speak low-pitched, slow, and have a somewhat awkward tone.", {"awkward"}),
    ("Clues:\nFace: clearly happy.\nVoice: speaking.",
     "The person seems happy because they are speaking in a positive tone, and their voice is clearly happy.", {"positive"}),
]  # fmt: skip


@pytest.mark.parametrize(("clues", "sentence"), KEPT)
def test_sentences_that_state_only_clue_facts_are_published(clues: str, sentence: str) -> None:
    assert guard(sentence, clues) == (sentence, None)


@pytest.mark.parametrize(("clues", "sentence", "named"), INVENTED)
def test_invented_facts_are_replaced_by_the_templated_sentence(clues: str, sentence: str, named: set[str]) -> None:
    text, reason = guard(sentence, clues)
    assert text == FALLBACK
    assert reason is not None and reason.startswith("not in the clues: ")
    assert named <= set(reason.removeprefix("not in the clues: ").replace(",", " ").split())


def test_a_clue_quality_counts_only_where_the_clue_says_it() -> None:
    # "loud" is the renderer's own word: fine over a "loud" voice clue, invented over a quiet one
    assert guard("The person seems angry because their voice is loud.", "Clues:\nFace: angry.\nVoice: speaking, loud.")[1] is None
    assert guard("The person seems angry because their voice is loud.", "Clues:\nFace: angry.\nVoice: speaking, quiet.")[0] == FALLBACK


@pytest.mark.parametrize(
    "sentence",
    [
        "The person seems happy because they are 35.",  # a number
        "The person seems happy because they are French.",  # a nationality
        "The person seems happy because they are in Paris.",  # a place
        "The person seems happy because they hold a phone.",  # an object
        "The person seems happy because they talk to John.",  # a person
        "The person seems happy because they are dancing.",  # an action
    ],
)
def test_names_numbers_places_objects_and_actions_need_a_clue(sentence: str) -> None:
    assert guard(sentence, "Clues:\nFace: clearly happy.\nVoice: speaking.")[0] == FALLBACK


# Megamind's real rationales with the transcript in the prompt (transcripts off): each quotes the speaker.
LEAKS = [
    ("The person seems neutral because they don't judge based on their actions. They're not judging a book by its "
     "cover or a person from the outside.", {"actions", "book", "cover", "judge"}),
    ("The person seems surprise because they are not judging them based on their actions.", {"actions", "judging"}),
    ("The person seems surprise because they don't judge a book based on their actions.", {"actions", "book", "judge"}),
]  # fmt: skip


@pytest.mark.parametrize(("sentence", "named"), LEAKS)
def test_with_transcripts_off_a_rationale_never_reuses_what_was_said(sentence: str, named: set[str]) -> None:
    clues = f"Clues:\nFace: maybe surprise, some sad.\nVoice: speaking, low pitch, calm.\n{MEGAMIND_WORDS}"
    text, reason = guard(sentence, clues, MEGAMIND_SAID)
    assert text == FALLBACK
    assert reason is not None and reason.startswith("transcript words: ")
    assert named & set(reason.removeprefix("transcript words: ").replace(",", " ").split())


def test_with_transcripts_on_the_words_are_facts() -> None:
    clues = f"Clues:\nFace: maybe surprise, some sad.\nVoice: speaking, low pitch, calm.\n{MEGAMIND_WORDS}"
    sentence = "The person seems surprise because they don't judge a book based on their actions."
    assert guard(sentence, clues, MEGAMIND_SAID, allow=True) == (sentence, None)


def test_labels_and_the_clue_vocabulary_are_not_transcript_leaks() -> None:
    said = "I am so happy, my voice is loud today"
    clues = f'Clues:\nFace: clearly happy.\nVoice: speaking, loud.\nWords: "{said}" (words: positive).'
    assert guard("The person seems happy because their voice is loud.", clues, said)[1] is None
    # ... but any other word the person used is one ("today"), even when the clue text quotes it
    text, reason = guard("The person seems happy because today their voice is loud.", clues, said)
    assert text == FALLBACK and reason == "transcript words: today"


def test_digits_from_the_transcript_are_leaks() -> None:
    said = "my number is 5551234"
    text, reason = guard("The person seems neutral because of 5551234.", f'Clues:\nWords: "{said}".', said)
    assert text == FALLBACK and reason == "transcript words: 5551234"


def test_empty_rationales_pass_through() -> None:
    assert guard("", "Clues:\nFace: not visible.") == ("", None)
    assert guard("   ", "Clues:\nFace: not visible.") == ("   ", None)


# -- the real small LLM, through the default engine's own prompt code ------------------------------------------
@pytest.mark.slow
def test_real_llm_rationales_on_megamind_clues_publish_only_clue_facts() -> None:
    """SmolLM2-135M (llama.cpp) asked about Megamind's clues, transcripts off: whatever it says,
    what the guard publishes has no transcript word and no word outside the clue text's vocabulary."""
    from emo_stream.engines import clues as cl
    from emo_stream.engines.default import DefaultEngine
    from emo_stream.engines.rationale_guard import GENERIC_WORDS, LABEL_WORDS, STOPWORDS, _stem
    from emo_stream.labels import get_label_set
    from emo_stream.perception.text_clues import EMOTION_LEXICON
    from emo_stream.runtime.llama_cpp import LlamaCppConfig, LlamaCppRuntime

    fer = get_label_set("fer2013")
    label_set = get_label_set("mer2023")
    face = cl.FaceClue(fer.labels, np.array([0.05, 0.02, 0.15, 0.03, 0.35, 0.1, 0.3]), None, 1, 4)  # "maybe sad, some neutral"
    voice = cl.VoiceClue(0.9, None, 0.0, None, None, None)  # "speaking"
    words = cl.WordsClue(MEGAMIND_SAID, "words: positive (compound +0.48)", 0.48, {})
    llm = LlamaCppRuntime(LlamaCppConfig(n_threads=1))
    try:
        static = llm.chat_template.split(cl.SYSTEM_PROMPT, cl.instruction(label_set), "", answer_prefix=cl.ANSWER_PREFIX)
        engine = types.SimpleNamespace(llm=llm, label_set=label_set, _prefix=static.prefix,
                                       options=types.SimpleNamespace(rationale_max_tokens=32))  # fmt: skip
        said_words = set(tokenize(MEGAMIND_SAID)) - STOPWORDS - LABEL_WORDS - GENERIC_WORDS  # "person" is a generic word
        probs = np.array([0.1, 0.05, 0.05, 0.6, 0.1, 0.1])  # sad on top
        for clues in (cl.WindowClues(face, voice, None), cl.WindowClues(face, voice, words)):
            facts = cl.render(clues)
            sentence = DefaultEngine._generate_rationale(engine, DefaultEngine._rationale_suffix(engine, clues, probs))
            assert sentence.startswith("The person seems sad because")
            text, reason = guard_rationale(sentence, clue_facts=facts, transcript=clues.words and clues.words.text,
                                           allow_transcript=False, fallback=FALLBACK)  # fmt: skip
            assert (text, reason is None) in ((sentence, True), (FALLBACK, False))
            published = set(tokenize(text))
            assert not published & said_words, (sentence, text)
            # the vocabulary of the clues without the quote, the fallback and the fixed word lists (as stems)
            allowed = {*tokenize(facts.split("Words:")[0]), *tokenize(FALLBACK), *STOPWORDS, *LABEL_WORDS, *GENERIC_WORDS}
            allowed |= {w for ws in EMOTION_LEXICON.values() for w in ws}
            assert {_stem(w) for w in published if w not in STOPWORDS} <= {_stem(w) for w in allowed}, (sentence, text)
    finally:
        llm.close()
