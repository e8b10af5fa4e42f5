"""GGUF export (LoRA merged, F16 / Q8_0 / Q4_K_M) and the llama.cpp LLM runtime vs torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emo_stream.export.gguf_export import (
    F16_LABEL_PROB_BOUND,
    Q8_0_LABEL_PROB_BOUND,
    random_slots,
)
from emo_stream.model.prompts import split_prompt
from emo_stream.runtime.lm import LlamaCppLM, TorchLM

pytest.importorskip("llama_cpp")


@pytest.fixture(scope="module")
def cpp_f16(manifest_v1, sharp_model):
    lm = LlamaCppLM.load(manifest_v1.path(manifest_v1["gguf"]["variants"]["F16"]["file"]), sharp_model.llm.tokenizer, n_threads=1)
    yield lm
    lm.close()


@pytest.mark.slow
def test_manifest_records_gguf_facts(manifest_v1, sharp_model):
    from emo_stream.runtime.llama_cpp import read_gguf_index

    g = manifest_v1["gguf"]
    assert g["projector_output_width"] == g["n_embd"] == sharp_model.config.llm.hidden_size == 32
    assert g["lora_merged"] and g["vocab"] == "word-level" and g["embedding_scale"] == 1.0
    assert set(g["variants"]) == {"F16", "Q8_0", "Q4_K_M"}
    assert g["variants"]["Q8_0"]["tensor_types"] == {"Q8_0": 16, "F32": 5}
    assert g["variants"]["F16"]["tensor_types"] == {"F16": 16, "F32": 5}
    # Q4_K_M needs 256-wide rows; the 32-wide tiny model falls back (recorded, not hidden)
    assert "Q4_K" not in g["variants"]["Q4_K_M"]["tensor_types"]
    idx = read_gguf_index(manifest_v1.path(g["variants"]["Q8_0"]["file"]))
    md = idx.metadata
    assert md["general.architecture"] == "llama" and md["llama.embedding_length"] == 32 and md["tokenizer.ggml.model"] == "llama"
    assert md["tokenizer.ggml.bos_token_id"] == 1 and md["tokenizer.ggml.eos_token_id"] == 2
    for q, bound in (("F16", F16_LABEL_PROB_BOUND), ("Q8_0", Q8_0_LABEL_PROB_BOUND)):
        par = g["variants"][q]["parity"]
        assert par["label_prob_max_abs_diff"] < bound and par["embd_vs_ids_logit_max_abs_diff"] == 0.0


@pytest.mark.slow
def test_merged_lora_logits_match_torch(cpp_f16, sharp_model):
    """Token-id logits of the F16 GGUF vs the torch model *with* its (non-zero) LoRA adapters."""
    lm = sharp_model.llm
    ids = [lm.bos_id] + lm.encode("[INST] the person smiles and sounds calm . [emotion] happy or sad ? [/INST]")
    got = cpp_f16.runtime.logits_for_inputs([np.asarray(ids, dtype=np.int32)], all_positions=True)
    with torch.no_grad():
        ref = lm.model(input_ids=torch.tensor([ids])).logits[0].numpy()
        base = lm.model.get_base_model()
        with lm.model.disable_adapter():
            no_lora = base(input_ids=torch.tensor([ids])).logits[0].numpy()
    err = np.abs(got - ref).max()
    assert err < 0.02 * np.abs(ref).max(), err
    assert np.abs(no_lora - ref).max() > 20 * err  # the adapters matter, and they were merged


@pytest.mark.slow
def test_token_embeddings_through_embd_equal_token_ids(cpp_f16, sharp_model):
    lm = sharp_model.llm
    ids = np.asarray([lm.bos_id] + lm.encode("please determine which emotion label in the video represents"), dtype=np.int32)
    rt = cpp_f16.runtime
    by_ids = rt.logits_for_inputs([ids], all_positions=True)
    by_embd = rt.logits_for_inputs([rt.token_embeddings(ids)], all_positions=True)
    assert np.array_equal(by_ids, by_embd)
    # the torch model's own embedding rows (F16-rounded in the GGUF) give the same logits within F16 error
    torch_rows = lm.embed_ids(ids.tolist()).detach().numpy()
    assert np.abs(rt.logits_for_inputs([torch_rows], all_positions=True) - by_ids).max() < 1e-2


def _slots(model, batch_seed: int, present: bool = True):
    prompt = model.prompt("emotion", "", model.label_set)
    return prompt, random_slots(model, split_prompt(prompt).slots, np.random.default_rng(batch_seed), present=present)


@pytest.mark.slow
@pytest.mark.parametrize("quant, bound", [("F16", F16_LABEL_PROB_BOUND), ("Q8_0", Q8_0_LABEL_PROB_BOUND)])
def test_label_probabilities_match_torch(quant, bound, manifest_v1, sharp_model):
    cpp = LlamaCppLM.load(manifest_v1.path(manifest_v1["gguf"]["variants"][quant]["file"]), sharp_model.llm.tokenizer, n_threads=1)
    ref = TorchLM(sharp_model.llm)
    labels = sharp_model.label_set.labels
    try:
        worst = 0.0
        for seed, present in ((0, True), (1, False), (2, True)):
            prompt, slots = _slots(sharp_model, seed, present)
            p_ref, p_cpp = ref.label_probs(prompt, slots, labels), cpp.label_probs(prompt, slots, labels)
            assert p_cpp.shape == (1, len(labels)) and abs(p_cpp.sum() - 1) < 1e-9
            worst = max(worst, float(np.abs(p_ref - p_cpp).max()))
        assert p_ref.max() > 0.3  # a peaked distribution, so the comparison means something
        assert worst < bound, worst
    finally:
        cpp.close()


@pytest.mark.slow
def test_static_prefix_is_evaluated_once_and_batches_are_scored_per_row(cpp_f16, sharp_model):
    import torch

    from emo_stream.model.projectors import SlotTokens

    labels = sharp_model.label_set.labels
    prompt, a = _slots(sharp_model, 3)
    _, b = _slots(sharp_model, 4, present=False)
    batch = {k: SlotTokens(torch.cat([a[k].tokens, b[k].tokens]), torch.cat([a[k].mask, b[k].mask])) for k in a}
    before = cpp_f16.runtime.stats.prefix_evals
    both = cpp_f16.label_probs(prompt, batch, labels)
    again = cpp_f16.label_probs(prompt, a, labels)
    assert cpp_f16.runtime.stats.prefix_evals - before <= 1  # BOS + "[INST] <video>" stays in the KV cache
    np.testing.assert_allclose(both[0], again[0], atol=1e-6)
    prefix, parts = cpp_f16.prompt_parts(prompt, batch, 1)
    assert prefix[0] == sharp_model.llm.bos_id and prefix[1:] == sharp_model.llm.encode(split_prompt(prompt).texts[0])
    soft = [p for p in parts if p.dtype == np.float32]
    assert [len(s) for s in soft] == [int(batch[k].mask[1].sum()) for k in split_prompt(prompt).slots]  # masked tokens left out
    np.testing.assert_allclose(both, TorchLM(sharp_model.llm).label_probs(prompt, batch, labels), atol=F16_LABEL_PROB_BOUND)


@pytest.mark.slow
def test_rationale_generation_and_detokenization(cpp_f16, sharp_model):
    from emo_stream.runtime.lm import _IDS_MARK

    prompt = sharp_model.prompt("reason", "", sharp_model.label_set)
    _, slots = _slots(sharp_model, 5)
    slots = {k: v for k, v in slots.items() if k in split_prompt(prompt).slots}
    text = cpp_f16.generate(prompt, slots, max_new_tokens=6)
    assert len(text) == 1 and isinstance(text[0], str)
    tok = sharp_model.llm.tokenizer
    ids = tok("the person smiles , and sounds calm .", add_special_tokens=False)["input_ids"]
    assert cpp_f16.runtime.detokenize(ids).strip() == tok.decode(ids)
    assert cpp_f16.runtime.tokenize(_IDS_MARK + "5,2") == [5, 2]


def _llama_style_tokenizer(path):
    """A SentencePiece-BPE tokenizer laid out like LLaMA-2's tokenizer.json (byte fallback, metaspace, Sequence decoder)."""
    from tokenizers import Tokenizer, decoders, normalizers
    from tokenizers.models import BPE
    from tokenizers.trainers import BpeTrainer
    from transformers import PreTrainedTokenizerFast

    from emo_stream.model.prompts import prompt_vocabulary

    tok = Tokenizer(BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    tok.train_from_iterator(prompt_vocabulary() * 2, BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False))
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    hf.save_pretrained(path)
    from emo_stream.model.llm import load_tokenizer

    return load_tokenizer(path)


def test_llama2_style_tokenizer_goes_through_gguf_llama_hf_vocab(tmp_path, sharpen_model):
    """The real-LLaMA vocabulary path (gguf.LlamaHfVocab), on a small trained tokenizer of the same layout."""
    import dataclasses

    from emo_stream.export.common import SourceModel
    from emo_stream.export.gguf_export import export_gguf
    from emo_stream.model.emotion_llama import EmotionLlamaConfig, build_emotion_llama
    from emo_stream.model.llm import LlamaLMConfig

    tok = _llama_style_tokenizer(tmp_path / "tok")
    cfg = EmotionLlamaConfig.tiny("v1")
    cfg = dataclasses.replace(cfg, llm=dataclasses.replace(LlamaLMConfig.tiny(vocab_size=320), lora=cfg.llm.lora))
    torch.manual_seed(0)
    model = sharpen_model(build_emotion_llama(cfg, tokenizer=tok)).eval()
    m = export_gguf(SourceModel(model, {"source": "test", "random_weights": True}), tmp_path / "e", quants=("F16",), threads=1)
    g = m["gguf"]
    assert g["vocab"] == "llama-hf" and g["n_vocab"] == 320
    assert g["variants"]["F16"]["parity"]["label_prob_max_abs_diff"] < F16_LABEL_PROB_BOUND
    cpp = LlamaCppLM.load(tmp_path / "e" / g["variants"]["F16"]["file"], tok, n_threads=1)
    try:
        ids = tok("the person smiles and sounds calm", add_special_tokens=False)["input_ids"]
        assert cpp.runtime.detokenize(ids).strip() == tok.decode(ids)
        assert cpp.runtime.n_vocab == 320 and cpp.runtime.eos_token == tok.eos_token_id
    finally:
        cpp.close()
