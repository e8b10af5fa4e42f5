"""Prompts, the local test tokenizer, input assembly, cached label scoring and greedy generation."""

from __future__ import annotations

import random

import pytest
import torch

from emo_stream.errors import ConfigError
from emo_stream.labels import LABEL_SETS, get_label_set
from emo_stream.model.llm import EmotionLlamaLM, LlamaLMConfig, LoraSettings, build_word_tokenizer, load_tokenizer
from emo_stream.model.projectors import SlotTokens
from emo_stream.model.prompts import (
    FEATURE_SLOT,
    PROMPT_TEMPLATE,
    REASON_INSTRUCTIONS,
    VIDEO_SLOT,
    build_prompt,
    emotion_instruction,
    random_instruction,
    split_prompt,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tok():
    return build_word_tokenizer()


@pytest.fixture(scope="module")
def lm(tok) -> EmotionLlamaLM:
    torch.manual_seed(0)
    model = EmotionLlamaLM(LlamaLMConfig.tiny(), tokenizer=tok).eval()
    with torch.no_grad():  # LoRA B starts at zero; make the adapters matter
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.5)
    return model


def _slots(b: int, h: int, masks: list[list[int]] | None = None) -> dict[str, SlotTokens]:
    g = torch.Generator().manual_seed(3)
    vm = torch.tensor(masks, dtype=torch.bool) if masks else torch.ones(b, 4, dtype=torch.bool)
    return {
        VIDEO_SLOT: SlotTokens(torch.randn(b, 4, h, generator=g), vm),
        FEATURE_SLOT: SlotTokens(torch.randn(b, 4, h, generator=g), torch.ones(b, 4, dtype=torch.bool)),
    }


# -- prompts -------------------------------------------------------------------


def test_prompt_slots_survive_user_text() -> None:
    # Byte-for-byte fidelity of the prompt text is pinned in test_prompts.py.
    merr = get_label_set("merr")
    no_sub = build_prompt(task="reason", label_set=merr)
    assert "says: .  [reason]" in no_sub and no_sub.endswith(f"[reason] {REASON_INSTRUCTIONS[0]}  [/INST]")
    sneaky = build_prompt(task="emotion", label_set=merr, subtitle="look <VideoHere> here")
    assert split_prompt(sneaky).slots == (VIDEO_SLOT, FEATURE_SLOT)
    with pytest.raises(ConfigError):
        build_prompt(task="sing", label_set=merr)


def test_emotion_instructions_list_each_label_set() -> None:
    for ls in LABEL_SETS.values():
        text = emotion_instruction(ls)
        assert all(lab in text for lab in ls.labels)
    assert random_instruction("reason", get_label_set("mer2023"), random.Random(0)) in REASON_INSTRUCTIONS


def test_split_prompt_orders_slots() -> None:
    seg = split_prompt(PROMPT_TEMPLATE)
    assert seg.slots == (VIDEO_SLOT, FEATURE_SLOT)
    assert seg.texts[0] == "[INST] <video>" and seg.texts[1] == "</video> <feature>"
    with pytest.raises(ConfigError):
        split_prompt("<VideoHere> and <VideoHere>")


# -- tokenizer -------------------------------------------------------------------


def test_word_tokenizer_is_a_real_tokenizer(tok, tmp_path) -> None:
    assert (tok.unk_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    for ls in LABEL_SETS.values():
        for lab in ls.labels:
            ids = tok(lab, add_special_tokens=False)["input_ids"]
            assert len(ids) == 1 and ids[0] != tok.unk_token_id
    prompt = build_prompt(task="emotion", label_set=get_label_set("merr"))
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    assert tok.unk_token_id not in ids
    assert tok("xyzzy", add_special_tokens=False)["input_ids"] == [tok.unk_token_id]
    assert tok.decode(tok("happy </s>", add_special_tokens=False)["input_ids"], skip_special_tokens=True) == "happy"
    tok.save_pretrained(str(tmp_path / "tok"))
    again = load_tokenizer(tmp_path / "tok")
    assert again(prompt, add_special_tokens=False)["input_ids"] == ids


# -- LoRA ------------------------------------------------------------------------


def test_lora_defaults_and_targets(lm) -> None:
    d = LoraSettings()
    assert (d.r, d.alpha, d.dropout, d.target_modules) == (64, 16, 0.05, ("q_proj", "v_proj"))
    trainable = [n for n, p in lm.named_parameters() if p.requires_grad]
    layers = lm.config.llama["num_hidden_layers"]
    assert len(trainable) == layers * 2 * 2
    assert all("lora_" in n and (".q_proj." in n or ".v_proj." in n) for n in trainable)
    k = EmotionLlamaLM(LlamaLMConfig(llama=LlamaLMConfig.tiny().llama, lora=LoraSettings(r=2, target_modules=("k_proj",))))
    assert {n.split(".")[-4] for n, p in k.named_parameters() if p.requires_grad} == {"k_proj"}
    with pytest.raises(ConfigError):
        LoraSettings(r=0)


# -- assembly --------------------------------------------------------------------


def test_prefix_drops_masked_tokens_and_left_pads(lm, tok) -> None:
    h = lm.hidden_size
    prompt = build_prompt(task="emotion", label_set=get_label_set("mer2023"), subtitle="hello")
    slots = _slots(2, h, masks=[[1, 1, 1, 1], [1, 0, 1, 0]])
    pre = lm.build_prefix(prompt, slots)
    n_text = sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in split_prompt(prompt).texts)
    assert pre.lengths.tolist() == [1 + n_text + 8, 1 + n_text + 6]
    assert pre.attention_mask[1, :2].tolist() == [0, 0]  # row 1 is 2 shorter: left padding
    assert pre.position_ids[1, 2] == 0 and pre.position_ids[0, 0] == 0
    assert torch.equal(pre.embeds[0, 0], lm.embed_ids([tok.bos_token_id])[0])
    # values under a False mask never reach the LLM
    changed = {k: SlotTokens(v.tokens.clone(), v.mask) for k, v in slots.items()}
    changed[VIDEO_SLOT].tokens[1, 1] += 1000.0
    assert torch.equal(lm.build_prefix(prompt, changed).embeds, pre.embeds)
    with pytest.raises(ConfigError):
        lm.build_prefix(prompt, {VIDEO_SLOT: slots[VIDEO_SLOT]})


# -- scoring and generation ----------------------------------------------------------


def test_cached_batched_scoring_equals_naive(lm) -> None:
    prompt = build_prompt(task="emotion", label_set=get_label_set("merr"), subtitle="i am fine")
    pre = lm.build_prefix(prompt, _slots(2, lm.hidden_size, masks=[[1, 1, 1, 1], [0, 1, 1, 0]]))
    answers = ["happy", "sad", "very happy", "neutral and calm"]  # 1- to 3-word answers (+ </s>)
    conts = lm.continuation_ids(answers)
    assert [len(c) for c in conts] == [2, 2, 3, 4]
    fast = lm.score_continuations(pre, conts)
    slow = lm.score_continuations_naive(pre, conts)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(fast[0], fast[1])  # the rows' different inputs matter


def test_label_probabilities_are_normalised_and_padding_invariant(lm) -> None:
    ls = get_label_set("mer2023")
    prompt = build_prompt(task="emotion", label_set=ls)
    slots = _slots(2, lm.hidden_size, masks=[[1, 1, 1, 1], [1, 0, 0, 0]])
    lp = lm.label_log_probs(lm.build_prefix(prompt, slots), ls.labels)
    assert lp.shape == (2, len(ls))
    torch.testing.assert_close(lp.exp().sum(-1), torch.ones(2))
    alone = {k: SlotTokens(v.tokens[1:], v.mask[1:]) for k, v in slots.items()}
    torch.testing.assert_close(lp[1:], lm.label_log_probs(lm.build_prefix(prompt, alone), ls.labels), rtol=1e-5, atol=1e-5)


def test_greedy_generation_matches_uncached_argmax(lm) -> None:
    prompt = build_prompt(task="reason", label_set=get_label_set("mer2023"))
    pre = lm.build_prefix(prompt, _slots(1, lm.hidden_size))
    out = lm.generate(pre, max_new_tokens=5)[0]
    assert 1 <= len(out) <= 5
    seq = pre.embeds[0]
    expected = []
    with torch.no_grad():
        for _ in range(len(out)):
            nxt = int(lm.model(inputs_embeds=seq.unsqueeze(0)).logits[0, -1, : len(lm.tokenizer)].argmax())
            expected.append(nxt)
            seq = torch.cat([seq, lm.embed_ids([nxt])], dim=0)
    assert out == expected
    assert isinstance(lm.decode(out), str)
