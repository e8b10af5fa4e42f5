"""The full model: config validation, end to end (tiny v1/v2), persistence, and the real 7B parameter count."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from emo_stream.errors import ConfigError, ModelFileError
from emo_stream.model.emotion_llama import (
    EmotionLlama,
    EmotionLlamaConfig,
    ModalityInputs,
    build_emotion_llama,
    trainable_parameter_report,
)
from emo_stream.model.encoders import EncoderOutput
from emo_stream.model.llm import LlamaLMConfig
from emo_stream.model.projectors import EmotionLlamaProjectorConfig
from emo_stream.model.prompts import FEATURE_SLOT, VIDEO_SLOT

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _frames(n: int = 4) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [rng.integers(0, 256, (36, 48, 3), dtype=np.uint8) for _ in range(n)]


def _audio(n: int = 12000) -> np.ndarray:
    return (np.random.default_rng(2).standard_normal(n) * 0.1).astype(np.float32)


@pytest.fixture(scope="module", params=["v1", "v2"])
def model(request) -> EmotionLlama:
    torch.manual_seed(0)
    m = build_emotion_llama(EmotionLlamaConfig.tiny(request.param)).eval()
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.5)
    return m


def test_real_7b_trainable_parameters() -> None:
    cfg = EmotionLlamaConfig.emotion_llama_7b()
    r = trainable_parameter_report(cfg)
    print("\nEmotion-LLaMA 7B:", r.summary())
    ll = cfg.llm.llama
    d, layers, r_lora = ll["hidden_size"], ll["num_hidden_layers"], cfg.llm.lora.r
    assert r.lora == layers * len(cfg.llm.lora.target_modules) * 2 * r_lora * d  # A (r x d) + B (d x r) per target
    p = cfg.projector
    linear = lambda i, o: i * o + o  # noqa: E731
    expected_proj = linear(p.vision_width * p.group, d) + linear(p.vision_width, d) + sum(linear(f, d) for f in p.feature_dims)
    assert r.projector_trainable == expected_proj  # ln_vision is frozen
    assert r.projector == expected_proj + 2 * p.vision_width
    assert r.trainable == r.lora + r.projector_trainable  # encoders and LLaMA frozen
    assert 6.7e9 < r.llm_base < 6.8e9  # LLaMA-2-7B
    # The paper's "34M trainable (0.495%)" is the LoRA alone, as peft reports it for the LLM.
    assert 0.49 < r.lora_percent_of_llm < 0.50
    assert set(r.encoders) == {"global", "face", "temporal", "audio"}


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_tiny_config_round_trips_through_json(version: str) -> None:
    cfg = EmotionLlamaConfig.tiny(version)
    again = EmotionLlamaConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg


def test_config_validation() -> None:
    tiny = EmotionLlamaConfig.tiny("v1")
    with pytest.raises(ConfigError, match="llm_width"):
        dataclasses.replace(tiny, projector=EmotionLlamaProjectorConfig.tiny(llm_width=64))
    with pytest.raises(ConfigError, match="projector expects"):
        dataclasses.replace(tiny, projector=dataclasses.replace(tiny.projector, num_patches=8))
    with pytest.raises(ConfigError, match="fusion"):
        dataclasses.replace(tiny, version="v2")
    with pytest.raises(ConfigError, match="slots"):
        dataclasses.replace(tiny, prompt_template="[INST] <VideoHere> {subtitle_clause}[{task}] {instruction} [/INST]")
    with pytest.raises(ConfigError):
        dataclasses.replace(tiny, label_set="nope")
    with pytest.raises(ConfigError):
        EmotionLlamaConfig.from_dict({**tiny.to_dict(), "typo": 1})


def test_freezing_follows_emotion_llama(model: EmotionLlama) -> None:
    assert not any(p.requires_grad for p in model.encoders.parameters())
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("projector.") or "lora_" in n for n in trainable)
    assert not any("ln_vision" in n for n in trainable)


def test_end_to_end_probabilities(model: EmotionLlama) -> None:
    inp = model.preprocess(_frames(), _audio())
    enc = model.encode(inp)
    assert set(enc) == {"global", "face", "temporal", "audio"}
    proj = model.project(enc)
    probs = model.label_probabilities(proj, subtitle="i am fine")
    assert probs.shape == (1, len(model.label_set))
    assert torch.isfinite(probs).all() and (probs >= 0).all()
    torch.testing.assert_close(probs.sum(-1), torch.ones(1, dtype=probs.dtype))
    merr = model.label_probabilities(proj, label_set="merr")
    assert merr.shape == (1, 9)
    text = model.rationale(proj, max_new_tokens=4)
    assert len(text) == 1 and isinstance(text[0], str)


def test_missing_modalities_reduce_tokens(model: EmotionLlama) -> None:
    full = model.project(model.encode(model.preprocess(_frames(), _audio())))
    silent = model.project(model.encode(model.preprocess(_frames(), np.zeros(8000, np.float32))))
    blind = model.project(model.encode(model.preprocess([], _audio())))
    if model.config.version == "v1":
        assert int(full.mask.sum()) == model.config.projector.num_video_tokens + 4
        assert silent.slots[FEATURE_SLOT].mask[0].tolist() == [True, True, False, True]
        assert not blind.slots[VIDEO_SLOT].mask.any() and blind.slots[FEATURE_SLOT].mask[0].tolist() == [False, False, True, False]
    else:
        a = model.projector.config.names.index("audio")
        assert silent.attention[0, :, a].eq(0).all() and full.attention[0, :, a].gt(0).all()
        assert blind.attention[0, :, :a].eq(0).all()
    p_full = model.label_probabilities(full)
    p_blind = model.label_probabilities(blind)
    assert not torch.allclose(p_full, p_blind)


def test_precomputed_features_bypass_encoders(model: EmotionLlama) -> None:
    inp = model.preprocess(_frames(), _audio())
    enc = model.encode(inp)
    again = model.encode(ModalityInputs(features={"audio": enc["audio"]}, global_pixels=inp.global_pixels))
    assert set(again) == {"audio", "global"} and again["audio"] is enc["audio"]
    fake = EncoderOutput(tokens=enc["audio"].tokens * 0 + 1, mask=enc["audio"].mask, pooled=enc["audio"].pooled * 0 + 1)
    a = model.label_probabilities(model.project({**enc, "audio": fake}))
    b = model.label_probabilities(model.project(enc))
    assert not torch.allclose(a, b)


def test_save_and_load_round_trip(model: EmotionLlama, tmp_path) -> None:
    inp = model.preprocess(_frames(), _audio())
    expected = model.classify(inp, subtitle="hello there")
    d = model.save_pretrained(tmp_path / "m")
    assert {"config.json", "model.safetensors", "tokenizer"} <= {p.name for p in d.iterdir()}
    loaded = EmotionLlama.from_pretrained(d)
    assert loaded.config == model.config
    assert torch.equal(loaded.classify(inp, subtitle="hello there"), expected)
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_load_errors_are_model_file_errors(tmp_path) -> None:
    torch.manual_seed(0)
    m = build_emotion_llama(EmotionLlamaConfig.tiny("v1"))
    with pytest.raises(ModelFileError, match="model.safetensors"):
        EmotionLlama.from_pretrained(tmp_path)
    d = m.save_pretrained(tmp_path / "m")
    from safetensors.torch import load_file, save_file

    sd = load_file(str(d / "model.safetensors"))
    dropped = sorted(sd)[0]
    del sd[dropped]
    sd["projector.extra.weight"] = torch.zeros(2)
    save_file(sd, str(d / "model.safetensors"), metadata={"format": "emo_stream.emotion_llama"})
    with pytest.raises(ModelFileError, match=r"missing 1 .*unexpected 1"):
        EmotionLlama.from_pretrained(d)
    (d / "config.json").write_text('{"format": "something-else"}')
    with pytest.raises(ModelFileError, match="not an emo_stream"):
        EmotionLlama.from_pretrained(d)


def test_build_needs_matching_encoder_and_llm_widths() -> None:
    cfg = EmotionLlamaConfig.tiny("v1")
    with pytest.raises(ConfigError):
        dataclasses.replace(cfg, llm=LlamaLMConfig.tiny(hidden_size=48))
