"""Shared fixtures of the trainer tests: one synthetic set, its feature caches and one trained run per session.

Everything here is CPU-only and small: 6 labels x 10 clips of ~1.5 s (espeak-ng +
real face photos), the tiny Emotion-LLaMA (v1, seed 0), one thread (the tiny
ops are microseconds; a contended two-thread pool is many times slower).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "train" / "synthetic_tiny.yaml"


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def synthetic_set(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from emo_stream.train.synthetic import make_synthetic_set

    return make_synthetic_set(tmp_path_factory.mktemp("synthetic"), per_label=10, seed=0, progress=False)


def config_dict(data_dir: Path, run_dir: Path, **overrides: Any) -> dict[str, Any]:
    """The shipped example config with its data/run paths pointed at ``data_dir`` / ``run_dir``."""
    d = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    d["data"]["train"] = {"manifest": str(data_dir / "train.jsonl"), "cache": str(data_dir / "cache-train")}
    d["data"]["eval"] = {"manifest": str(data_dir / "test.jsonl"), "cache": str(data_dir / "cache-test")}
    d["run_dir"] = str(run_dir)
    d["log"]["progress"] = False
    for k, v in overrides.items():
        d[k] = v
    return d


@pytest.fixture(scope="session")
def synthetic_caches(synthetic_set: Any) -> Path:
    """Feature caches of train/test for the tiny v1 model of the example config."""
    from emo_stream.train.config import TrainConfig
    from emo_stream.train.dataset import read_manifest
    from emo_stream.train.features import extract_features
    from emo_stream.train.trainer import build_model

    root = synthetic_set.root
    cfg = TrainConfig.from_dict(config_dict(root, root / "unused"))
    model = build_model(cfg.model)
    for split in ("train", "test"):
        extract_features(read_manifest(root / f"{split}.jsonl", model.label_set), model, root / f"cache-{split}", cfg.features.settings(), progress=False)
    return root


@pytest.fixture(scope="session")
def trained_run(synthetic_caches: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The example config trained to the end (200 steps); returns the TrainResult."""
    from emo_stream.train.config import TrainConfig
    from emo_stream.train.trainer import Trainer

    run = tmp_path_factory.mktemp("runs") / "full"
    cfg = TrainConfig.from_dict(config_dict(synthetic_caches, run))
    return Trainer(cfg, progress=False).run()
