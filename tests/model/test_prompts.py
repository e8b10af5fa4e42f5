"""Emotion-LLaMA's prompt, byte for byte, and its tokenization with a real LLaMA-style sentencepiece tokenizer.

The reference strings below are what ``first_face.py`` + ``MiniGPTBase``'s
``"[INST] {} [/INST]"`` produce (their format strings are restated in
:func:`_original`, which is the specification, not our code path).
"""

from __future__ import annotations

import io
import json
import random
import sys
from pathlib import Path

import pytest

from emo_stream.errors import ConfigError, ModelFileError
from emo_stream.labels import get_label_set
from emo_stream.model.emotion_llama import EmotionLlamaConfig
from emo_stream.model.llm import load_tokenizer
from emo_stream.model.prompts import (
    EMOTION_INSTRUCTIONS,
    FEATURE_SLOT,
    PROMPT_TEMPLATE_V2,
    REASON_INSTRUCTIONS,
    VIDEO_SLOT,
    build_prompt,
    emotion_instruction,
    prompt_vocabulary,
    random_instruction,
    split_prompt,
)
from emo_stream.prompt_cli import count_text_tokens

MERR_EXAMPLE = (
    "[INST] <video><VideoHere></video> <feature><FeatureHere></feature> The person in video says: I can't believe you "
    "did that.  [emotion] Please determine which emotion label in the video represents: happy, sad, neutral, angry, "
    "worried, surprise, fear, contempt, doubt.  [/INST]"
)


def _original(sentence: str, task: str, instruction: str) -> str:
    """The original's string formatting (first_face.py __getitem__ + MiniGPTBase.prompt_template)."""
    character_line = f"The person in video says: {sentence}. "
    user = f"<video><VideoHere></video> <feature><FeatureHere></feature> {character_line} [{task}] {instruction} "
    return f"[INST] {user} [/INST]"


def test_merr_emotion_prompt_is_the_original_byte_for_byte() -> None:
    merr = get_label_set("merr")
    p = build_prompt(task="emotion", label_set=merr, subtitle="I can't believe you did that")
    assert p == MERR_EXAMPLE
    assert p == _original("I can't believe you did that", "emotion", EMOTION_INSTRUCTIONS["merr"][0])
    assert "that.  [emotion]" in p and "doubt.  [/INST]" in p


@pytest.mark.parametrize("sentence", ["", "Really.", "Why?!", "ok"])
def test_transcript_edge_cases_match_the_original_formatting(sentence: str) -> None:
    merr = get_label_set("merr")
    for task, instruction in (("emotion", EMOTION_INSTRUCTIONS["merr"][0]), ("reason", REASON_INSTRUCTIONS[0])):
        assert build_prompt(task=task, label_set=merr, subtitle=sentence) == _original(sentence, task, instruction)
    # no transcript keeps the clause; a final period is not stripped ("..", as format gives)
    assert "says: .  [emotion]" in build_prompt(task="emotion", label_set=merr)
    assert "says: Really..  [" in build_prompt(task="emotion", label_set=merr, subtitle="Really.")


def test_transcript_whitespace_and_placeholders_are_cleaned() -> None:
    merr = get_label_set("merr")
    assert build_prompt(task="emotion", label_set=merr, subtitle="  I can't\n believe  it ") == _original(
        "I can't believe it", "emotion", EMOTION_INSTRUCTIONS["merr"][0]
    )
    for sneaky in ("look <VideoHere> here", "<Video<VideoHere>Here>", "a <FeatureHere>"):
        p = build_prompt(task="emotion", label_set=merr, subtitle=sneaky)
        assert split_prompt(p).slots == (VIDEO_SLOT, FEATURE_SLOT)
    with pytest.raises(ConfigError):
        build_prompt(task="sing", label_set=merr)


def test_both_instruction_wordings_are_selectable() -> None:
    merr, mer = get_label_set("merr"), get_label_set("mer2023")
    nine = EMOTION_INSTRUCTIONS["merr"][0]
    six = EMOTION_INSTRUCTIONS["mer2023"][0]
    assert "contempt, doubt." in nine and six.endswith("worried, surprise.")
    assert emotion_instruction(merr) == nine and emotion_instruction(mer) == six  # auto: the set's own
    assert emotion_instruction(mer, wording="merr") == nine
    assert emotion_instruction(merr, wording="mer2023", index=3) == EMOTION_INSTRUCTIONS["mer2023"][3]
    assert emotion_instruction(mer, wording="labels").endswith(": " + ", ".join(mer.labels) + ".")
    assert random_instruction("emotion", merr, random.Random(1), wording="mer2023") in EMOTION_INSTRUCTIONS["mer2023"]
    with pytest.raises(ConfigError, match="wording"):
        emotion_instruction(merr, wording="mer2024")
    # The published-model config uses the MERR wording even when scoring MER2023's six labels.
    cfg = EmotionLlamaConfig.emotion_llama_7b()
    assert cfg.instruction_wording == "merr" and cfg.label_set == "mer2023"
    assert nine in cfg.render_prompt("emotion", "hi") and six not in cfg.render_prompt("emotion", "hi")
    assert EmotionLlamaConfig.from_dict(cfg.to_dict()).instruction_wording == "merr"
    with pytest.raises(ConfigError):
        EmotionLlamaConfig(instruction_wording="nine")


def test_v2_template_keeps_the_v1_spacing() -> None:
    p = build_prompt(task="emotion", label_set=get_label_set("merr"), subtitle="hi", template=PROMPT_TEMPLATE_V2)
    assert split_prompt(p).slots == (VIDEO_SLOT,)
    assert "says: hi.  [emotion]" in p and p.endswith(".  [/INST]")


# -- a real LLaMA-style tokenizer ---------------------------------------------------------


def _train_sentencepiece(tmp: Path) -> bytes:
    """A tiny LLaMA-style sentencepiece BPE model (byte fallback, dummy prefix, whitespace kept as LLaMA does)."""
    spm = pytest.importorskip("sentencepiece")
    texts = prompt_vocabulary() + ["I can't believe you did that.", "The person in video says: hello there."]
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts * 3),
        model_writer=buf,
        vocab_size=400,
        model_type="bpe",
        byte_fallback=True,
        add_dummy_prefix=True,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        split_digits=True,
        allow_whitespace_only_pieces=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        num_threads=1,
        minloglevel=2,
        character_coverage=1.0,
        hard_vocab_limit=False,
    )
    return buf.getvalue()


@pytest.fixture(scope="module")
def llama_tok_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LLaMA-2-like tokenizer dir with only tokenizer.model (no tokenizer.json), as Llama-2-7b-chat ships."""
    d = tmp_path_factory.mktemp("llama_tok")
    (d / "tokenizer.model").write_bytes(_train_sentencepiece(d))
    (d / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "LlamaTokenizer",
                "bos_token": "<s>",
                "eos_token": "</s>",
                "unk_token": "<unk>",
                "add_bos_token": True,
                "add_eos_token": False,
                "legacy": False,
            }
        ),
        encoding="utf-8",
    )
    return d


def test_tokenizer_model_only_dir_loads_and_tokenizes_like_sentencepiece(llama_tok_dir: Path) -> None:
    import sentencepiece as spm

    tok = load_tokenizer(llama_tok_dir)
    sp = spm.SentencePieceProcessor(model_file=str(llama_tok_dir / "tokenizer.model"))
    for text in split_prompt(MERR_EXAMPLE).texts:
        assert tok(text, add_special_tokens=False)["input_ids"] == sp.encode(text)
    assert tok.bos_token_id == sp.bos_id() == 1


def test_token_counts_of_the_original_prompt(llama_tok_dir: Path) -> None:
    tok = load_tokenizer(llama_tok_dir)
    texts = split_prompt(MERR_EXAMPLE).texts
    assert texts[0] == "[INST] <video>" and texts[1] == "</video> <feature>"
    n = count_text_tokens(MERR_EXAMPLE, tok)
    assert n == 1 + sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)
    # Each double space is one extra "▁" token: the hand-tidied prompt is exactly 2 tokens short.
    tidy = MERR_EXAMPLE.replace(".  [", ". [")
    assert tidy.count("  ") == 0 and count_text_tokens(tidy, tok) == n - 2
    pieces = tok.tokenize(texts[2])
    assert pieces.count("▁") - tok.tokenize(split_prompt(tidy).texts[2]).count("▁") == 2  # the two lone "▁"
    # With no transcript the clause still costs its tokens ("says: ." then the double space).
    empty = build_prompt(task="emotion", label_set=get_label_set("merr"))
    said = len(tok(" The person in video says: I can't believe you did that.", add_special_tokens=False)["input_ids"])
    assert count_text_tokens(empty, tok) < n and count_text_tokens(empty, tok) > n - said


def test_tokenizer_errors_name_the_real_cause(tmp_path: Path, llama_tok_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "tok"
    d.mkdir()
    (d / "tokenizer.model").write_bytes((llama_tok_dir / "tokenizer.model").read_bytes())
    monkeypatch.setitem(sys.modules, "sentencepiece", None)  # an environment without the package
    with pytest.raises(ModelFileError, match="sentencepiece package is not installed") as info:
        load_tokenizer(d)
    assert "tiktoken" not in str(info.value)
    monkeypatch.undo()
    (d / "tokenizer.model").write_bytes(b"not a sentencepiece model")
    with pytest.raises(ModelFileError, match=r"cannot be loaded from tokenizer.model \(sentencepiece\)") as info:
        load_tokenizer(d)
    assert "\n" not in str(info.value)
