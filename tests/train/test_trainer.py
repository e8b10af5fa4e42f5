"""The trainer on the synthetic set: it learns, resumes bitwise, streams; plus the pieces it is made of.

Acceptance numbers (tiny v1, CPU, one thread; see configs/train/synthetic_tiny.yaml):
held-out accuracy on 18 clips of 6 labels >= 0.5 (chance 1/6; measured 0.72).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from emo_stream.errors import ConfigError
from emo_stream.train.config import StageSection, TrainConfig
from emo_stream.train.trainer import (
    AnswerLoss,
    Trainer,
    _lr_lambda,
    global_batch_indices,
    make_example,
)

from .conftest import config_dict

# -- pieces ------------------------------------------------------------------------------


def test_lr_warmup_then_cosine() -> None:
    f = _lr_lambda(StageSection(name="s", steps=20, warmup_steps=4, min_lr_ratio=0.1, lr=1.0))
    assert [round(f(k), 6) for k in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(4) == pytest.approx(1.0) and f(12) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert f(20) == pytest.approx(0.1)
    vals = [f(k) for k in range(4, 21)]
    assert all(a >= b for a, b in zip(vals, vals[1:]))


def test_batches_are_epoch_permutations_and_pure() -> None:
    n = 10
    seen = [i for step in range(5) for i in global_batch_indices(0, 0, step, 4, n)]
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:20]) == list(range(10))  # every item once per epoch
    assert global_batch_indices(0, 0, 3, 4, n) == global_batch_indices(0, 0, 3, 4, n)
    assert global_batch_indices(0, 1, 0, 4, n) != global_batch_indices(0, 0, 0, 4, n)


@pytest.fixture(scope="module")
def data_and_model(synthetic_caches: Path) -> Any:
    from emo_stream.train.trainer import SplitData, build_model

    cfg = TrainConfig.from_dict(config_dict(synthetic_caches, synthetic_caches / "x"))
    model = build_model(cfg.model)
    return cfg, model, SplitData(cfg.data.train.manifest, cfg.data.train.cache, model)


@pytest.mark.slow
def test_examples_follow_emotion_llama_and_the_curriculum(data_and_model: Any) -> None:
    cfg, model, data = data_and_model
    st = cfg.stages[1]
    ex = [make_example(model, data.items[i % len(data)], 1, st, 0, i, 0, True, 160) for i in range(40)]
    assert all(e.task == "emotion" for e in ex)  # reason share starts at 0 (perception -> cognition)
    late = [make_example(model, data.items[i % len(data)], 1, st, st.steps - 1, i, 0, True, 160) for i in range(200)]
    share = sum(e.task == "reason" for e in late) / len(late)
    assert 0.1 < share < 0.3  # weight 0.2 at the end of the stage
    e = next(x for x in late if x.task == "reason")
    text = model.llm.decode(list(e.answer_ids))
    label = model.label_set.labels[e.item.label_index]
    assert text.endswith(label) and "therefore" in text and e.answer_ids[-1] == model.llm.eos_id
    assert "[reason]" in e.prompt and e.item.sample.subtitle.rstrip(".!?").lower()[:8] in e.prompt.lower()
    e0 = ex[0]
    assert model.llm.decode(list(e0.answer_ids)) == model.label_set.labels[e0.item.label_index]
    assert "[emotion]" in e0.prompt and e0.prompt.startswith("[INST] <video><VideoHere></video> <feature><FeatureHere></feature>")
    again = make_example(model, data.items[0], 1, st, st.steps - 1, 0, 0, True, 160)
    assert again == late[0]  # a pure function of (seed, stage, step, position)


@pytest.mark.slow
def test_batched_loss_equals_per_sample_loss(data_and_model: Any) -> None:
    from emo_stream.train.features import collate

    cfg, model, data = data_and_model
    model.eval()
    st = cfg.stages[1]
    ex = [make_example(model, data.items[i], 1, st, st.steps - 1, i, 0, True, 160) for i in range(5)]
    loss = AnswerLoss(model)
    with torch.no_grad():
        batched, _ = loss(collate([data.cache.load(e.item.window) for e in ex]), [e.prompt for e in ex], [e.answer_ids for e in ex])
        single = torch.cat([loss(collate([data.cache.load(e.item.window)]), [e.prompt], [e.answer_ids])[0] for e in ex])
    assert batched.shape == single.shape and torch.allclose(batched, single, atol=1e-5)
    # the emotion-task loss is exactly the label-scoring objective: -log p(label </s> | prompt)
    e = next(x for x in ex if x.task == "emotion") if any(x.task == "emotion" for x in ex) else None
    if e is not None:
        proj = model.project(collate([data.cache.load(e.item.window)]))
        prefix = model.llm.build_prefix(e.prompt, proj.slots)
        lp = model.llm.score_continuations(prefix, [list(e.answer_ids)])[0, 0]
        with torch.no_grad():
            mine = loss(collate([data.cache.load(e.item.window)]), [e.prompt], [e.answer_ids])[0].sum()
        assert float(mine) == pytest.approx(-float(lp), abs=1e-4)


# -- end to end ----------------------------------------------------------------------------


@pytest.mark.slow
def test_learns_far_above_chance_and_writes_everything(trained_run: Any) -> None:
    r = trained_run
    m = r.metrics
    assert r.steps == 200 and not r.stopped_early
    assert m["n"] == 18 and m["chance_accuracy"] == pytest.approx(1 / 6)
    assert m["accuracy"] >= 0.5, m  # measured 0.72 (chance 0.17)
    assert m["weighted_f1"] >= 0.4 and m["uar"] >= 0.5
    d = r.run_dir
    assert (d / "eval" / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    preds = [json.loads(x) for x in (d / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 18 and {"id", "target", "pred", "probs", "correct"} <= set(preds[0])
    log = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
    train = [e for e in log if e["kind"] == "train"]
    assert [e["step"] for e in train] == list(range(1, 201))
    assert np.mean([e["loss"] for e in train[80:100]]) < np.mean([e["loss"] for e in train[:20]]) - 1.0  # stage 1 learns
    assert train[120]["lr"] < train[109]["lr"] and train[100]["stage"] == "cognition"
    assert {e.get("reason_share", 0) for e in train[:100]} == {0.0} and max(e["reason_share"] for e in train[150:]) > 0
    final = json.loads((d / "final_metrics.json").read_text())
    assert final["eval"]["accuracy"] == m["accuracy"] and final["world_size"] == 1 and final["precision"] == "fp32"
    assert sorted(p.name for p in (d / "checkpoints").iterdir()) == ["latest", "step-000175", "step-000200"]


@pytest.mark.slow
def test_trained_model_streams_through_the_engine(trained_run: Any, synthetic_set: Any) -> None:
    """`emo-stream run --engine emotion-llama --weights RUN/model`: the same engine, a synthetic clip."""
    from emo_stream.config import StreamConfig
    from emo_stream.engines.base import make_engine
    from emo_stream.pipeline import Pipeline
    from emo_stream.stream.sinks import Sink
    from emo_stream.stream.sources.factory import open_sources

    class Collect(Sink):
        def __init__(self) -> None:
            self.states: list = []

        def write(self, state: Any) -> None:
            self.states.append(state)

    cfg = StreamConfig.from_dict(
        {"engine": {"name": "emotion-llama", "label_set": "mer2023", "options": {"weights": str(trained_run.model_dir), "threads": 1}}}
    )
    engine = make_engine(cfg)
    assert engine.model_id.startswith("emotion-llama/v1/model/mer2023")
    sink = Collect()
    clip = synthetic_set.root / "clips" / "angry_009.mp4"
    Pipeline(open_sources(str(clip), cfg), engine, [sink], cfg).run()
    assert sink.states and all(abs(sum(s.probabilities) - 1) < 1e-6 for s in sink.states)
    assert "random_weights" not in sink.states[-1].flags


@pytest.mark.slow
def test_resume_after_a_kill_is_bitwise_identical(synthetic_caches: Path, tmp_path: Path) -> None:
    """A short run (15 + 15 steps) stopped at step 23 (last checkpoint: 20) and resumed == uninterrupted."""
    from safetensors.torch import load_file

    stages = [
        {"name": "perception", "steps": 15, "trainable": ["projector"], "tasks": {"emotion": 1.0}, "lr": 1e-2, "warmup_steps": 2},
        {
            "name": "cognition",
            "steps": 15,
            "trainable": ["projector", "lora"],
            "tasks": {"emotion": 0.5, "reason": 0.5},
            "curriculum": "linear",
            "lr": 5e-3,
            "warmup_steps": 2,
        },
    ]
    d = config_dict(synthetic_caches, tmp_path / "unused", stages=stages, checkpoint={"every": 10, "keep_last": 2})
    cfg = TrainConfig.from_dict(d)
    full = Trainer(cfg, tmp_path / "full", progress=False).run()
    part = Trainer(cfg, tmp_path / "killed", progress=False, stop_after=23).run()
    assert part.stopped_early and part.steps == 23 and not (tmp_path / "killed" / "model").exists()
    assert (tmp_path / "killed" / "checkpoints" / "latest").read_text() == "step-000020"
    with pytest.raises(ConfigError, match="--resume"):
        Trainer(cfg, tmp_path / "killed", progress=False).run()
    res = Trainer(cfg, tmp_path / "killed", progress=False, resume=True).run()
    assert res.resumed_from == 20 and res.steps == 30
    a, b = load_file(str(full.model_dir / "model.safetensors")), load_file(str(res.model_dir / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert res.metrics == full.metrics
    la = (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()
    lb = (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()

    def strip(lines):
        return [{k: v for k, v in json.loads(x).items() if k != "seconds"} for x in lines]

    assert strip(la) == strip(lb)
    assert (tmp_path / "full" / "eval" / "predictions.jsonl").read_text() == (tmp_path / "killed" / "eval" / "predictions.jsonl").read_text()
    # a changed config cannot resume that run
    changed = TrainConfig.from_dict({**d, "seed": 1})
    with pytest.raises(ConfigError, match="different training config"):
        Trainer(changed, tmp_path / "killed", progress=False, resume=True).run()


def test_model_from_a_llama_dir_and_encoder_dirs(tmp_path: Path) -> None:
    """`model.llama_dir` + `model.encoders`: LLaMA-2 layout + local encoder dirs + a fresh projector/fusion."""
    from transformers import LlamaForCausalLM

    from emo_stream.model.encoders import AudioEncoder, AudioEncoderConfig
    from emo_stream.model.llm import LlamaLMConfig, build_word_tokenizer
    from emo_stream.train.config import ModelSection
    from emo_stream.train.trainer import build_model, trainable_names

    LlamaForCausalLM(LlamaLMConfig.tiny().llama_config()).save_pretrained(tmp_path / "llama")
    build_word_tokenizer().save_pretrained(str(tmp_path / "llama"))
    AudioEncoder(AudioEncoderConfig.tiny("hubert")).backbone.save_pretrained(tmp_path / "audio")
    m1 = build_model(ModelSection(llama_dir=str(tmp_path / "llama"), encoders={"audio": str(tmp_path / "audio")}, version="v1"))
    assert sorted(m1.encoders) == ["audio"] and m1.config.projector.feature_dims == (1024, 1024, 16)
    assert m1.config.llm.hidden_size == 32 and any("lora_" in n for n in trainable_names(m1, ["lora"]))
    m2 = build_model(ModelSection(llama_dir=str(tmp_path / "llama"), encoders={"audio": str(tmp_path / "audio")}, version="v2"))
    assert dict(m2.config.fusion.modalities)["audio"] == 16 and m2.config.fusion.llm_width == 32
    with pytest.raises(ConfigError, match="unknown view"):
        build_model(ModelSection(llama_dir=str(tmp_path / "llama"), encoders={"eeg": "x"}))
