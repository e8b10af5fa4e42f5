"""Training config: YAML loading, validation, path resolution, curriculum and stage arithmetic."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from emo_stream.errors import ConfigError
from emo_stream.train.config import BatchSection, StageSection, TrainConfig

REPO = Path(__file__).resolve().parents[2]


def _base(tmp_path: Path, **extra) -> dict:
    d = {"data": {"train": {"manifest": "d/train.jsonl", "cache": "d/cache"}}, "stages": [{"name": "a", "steps": 10}]}
    d.update(extra)
    return d


def test_shipped_examples_load() -> None:
    for p in sorted((REPO / "configs" / "train").glob("*.yaml")):
        cfg = TrainConfig.from_yaml(p)
        assert cfg.total_steps > 0 and Path(cfg.data.train.manifest).is_absolute(), p


def test_paths_resolve_against_the_config_file(tmp_path: Path) -> None:
    p = tmp_path / "sub" / "c.yaml"
    p.parent.mkdir()
    p.write_text(yaml.safe_dump(_base(tmp_path, run_dir="runs/x")))
    cfg = TrainConfig.from_yaml(p)
    assert cfg.data.train.manifest == str(tmp_path / "sub" / "d" / "train.jsonl")
    assert cfg.run_dir == str(tmp_path / "sub" / "runs" / "x")


def test_unknown_keys_and_bad_values(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown key"):
        TrainConfig.from_dict(_base(tmp_path, optimiser={}))
    with pytest.raises(ConfigError, match=r"stages\[0\]\.lr must be a number"):
        TrainConfig.from_dict(_base(tmp_path, stages=[{"name": "a", "lr": "fast"}]))
    assert TrainConfig.from_dict(_base(tmp_path, stages=[{"name": "a", "lr": "1e-3"}])).stages[0].lr == 1e-3  # YAML 1.1 string
    with pytest.raises(ConfigError, match="trainable"):
        TrainConfig.from_dict(_base(tmp_path, stages=[{"name": "a", "trainable": ["encoders"]}]))
    with pytest.raises(ConfigError, match="exactly one of tiny"):
        TrainConfig.from_dict(_base(tmp_path, model={"tiny": "v1", "weights": "x"}))
    with pytest.raises(ConfigError, match="names must be unique"):
        TrainConfig.from_dict(_base(tmp_path, stages=[{"name": "a"}, {"name": "a"}]))
    with pytest.raises(ConfigError, match="data section"):
        TrainConfig.from_dict({"stages": [{"name": "a"}]})
    with pytest.raises(ConfigError, match="llm_init_std applies to tiny"):
        TrainConfig.from_dict(_base(tmp_path, model={"weights": "x", "llm_init_std": 0.2}))


def test_accumulation_keeps_the_global_batch() -> None:
    b = BatchSection(global_batch_size=8, micro_batch_size=2)
    assert b.accumulation(1) == 4 and b.accumulation(2) == 2 and b.accumulation(4) == 1
    with pytest.raises(ConfigError, match="not a multiple"):
        b.accumulation(3)


def test_curriculum_and_stage_lookup(tmp_path: Path) -> None:
    st = StageSection(name="c", steps=10, tasks={"emotion": 0.5, "reason": 0.5}, curriculum="linear")
    assert st.task_weights(0.0) == {"emotion": 0.5, "reason": 0.0}
    assert st.task_weights(1.0) == {"emotion": 0.5, "reason": 0.5}
    assert StageSection(name="r", tasks={"reason": 1.0}, curriculum="linear").task_weights(0.0) == {"emotion": 1.0}
    cfg = TrainConfig.from_dict(_base(tmp_path, stages=[{"name": "a", "steps": 3}, {"name": "b", "steps": 2}]))
    assert [(i, s.name, k) for i, s, k in map(cfg.stage_at, range(5))] == [(0, "a", 0), (0, "a", 1), (0, "a", 2), (1, "b", 0), (1, "b", 1)]
    assert cfg.stage_start(1) == 3 and cfg.total_steps == 5
    with pytest.raises(IndexError):
        cfg.stage_at(5)


def test_small_models_choose_their_view_layout_and_nothing_else_does() -> None:
    from emo_stream.train.config import ModelSection

    assert ModelSection(small="v2").view_layout == "sliding"  # EmotionLlamaConfig.small's own default
    assert ModelSection(small="v2", view_layout="clip").view_layout == "clip"
    with pytest.raises(ConfigError, match="view_layout"):
        ModelSection(small="v2", view_layout="diagonal")
    with pytest.raises(ConfigError, match="small models only"):
        ModelSection(tiny="v1", view_layout="clip")


@pytest.mark.parametrize("name", ["emotion_llama_small.yaml", "emotion_llama_small_int8.yaml"])
def test_shipped_small_configs_use_the_clip_layout(name: str) -> None:
    """The layout with the better held-out accuracy (see ModelSection.view_layout)."""
    cfg = yaml.safe_load((Path(__file__).resolve().parents[2] / "configs" / "train" / name).read_text())
    assert cfg["model"]["view_layout"] == "clip"
