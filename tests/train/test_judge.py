"""EMER-style overlap judges (local only)."""

from __future__ import annotations

import pytest

from emo_stream.train.judge import LexicalJudge, make_judge

REF = "the face is smiling and the voice sounds high and fast, so the person seems happy"


def test_lexical_judge_orders_overlap() -> None:
    j = make_judge("lexical")
    same = j.score(REF, "she is smiling and her voice is high and fast; happy", ["happy"], [])
    other = j.score(REF, "the person frowns, the voice is low and quiet; she is sad", ["happy"], ["sad"])
    empty = j.score(REF, "", ["happy"], [])
    assert 10 >= same.clue_overlap > other.clue_overlap > empty.clue_overlap == 0.0
    assert same.label_overlap == 10.0 and other.label_overlap == 0.0
    assert LexicalJudge().score("", "", [], []).label_overlap == 0.0


@pytest.mark.slow
def test_llm_judge_runs_locally_and_deterministically() -> None:
    """SmolLM2-135M via llama.cpp: valid, repeatable 0-10 scores. (It barely discriminates: measured
    clue overlap 4.65 for a matching, 4.44 for a contradicting and 5.15 for an empty explanation.)"""
    pytest.importorskip("llama_cpp")
    from emo_stream.errors import ModelFileError

    try:
        j = make_judge("llm", threads=1)
    except ModelFileError as exc:
        pytest.skip(f"no local GGUF judge: {exc}")
    try:
        a = j.score(REF, "she smiles, her voice is high", ["happy"], [])
        b = j.score(REF, "she smiles, her voice is high", ["happy"], [])
        assert a == b and 0 <= a.clue_overlap <= 10 and 0 <= a.label_overlap <= 10
    finally:
        j.close()
