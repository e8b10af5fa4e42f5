"""Long jobs against damaged inputs and full disks (issue 13): nothing silent, nothing NaN saved, nothing lost.

* a feature shard damaged on disk is an error naming it, and ``features`` re-encodes it;
* non-finite features train to a clear stop before any NaN weight is written;
* ``--resume`` skips a damaged latest checkpoint for the newest valid one, and resumes exactly;
* a disk that fills while checkpointing is one ``cannot write`` line, the earlier checkpoints intact;
* hostile manifests/configs and out-of-range synthetic-set options are one line.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from emo_stream.errors import ConfigError
from emo_stream.train import cli
from emo_stream.train.config import TrainConfig
from emo_stream.train.dataset import DatasetError, read_manifest
from emo_stream.train.features import FeatureCache, extract_features
from emo_stream.train.trainer import Trainer, TrainingDiverged, build_model, checkpoint_problem

from .conftest import config_dict

SHORT_STAGES = [
    {"name": "perception", "steps": 4, "trainable": ["projector"], "tasks": {"emotion": 1.0}, "lr": 1e-2, "warmup_steps": 1},
    {"name": "cognition", "steps": 4, "trainable": ["projector", "lora"], "tasks": {"emotion": 0.5, "reason": 0.5}, "lr": 5e-3, "warmup_steps": 1},
]


def _flip_middle_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))


def _copy_caches(root: Path, dst: Path) -> Path:
    """The session's synthetic set with private copies of its caches (clips and manifests shared read-only)."""
    dst.mkdir()
    for name in ("train.jsonl", "test.jsonl"):
        text = (root / name).read_text(encoding="utf-8")
        (dst / name).write_text(text.replace('"clips/', f'"{root / "clips"}/'), encoding="utf-8")
    for cache in ("cache-train", "cache-test"):
        shutil.copytree(root / cache, dst / cache)
    return dst


def _short_config(data: Path, run: Path, **over: Any) -> TrainConfig:
    d = config_dict(data, run, stages=SHORT_STAGES, checkpoint={"every": 2, "keep_last": 3}, **over)
    d["eval"] = {"every": 0, "batch_size": 16, "at_end": False}
    return TrainConfig.from_dict(d)


@pytest.fixture
def data(synthetic_caches: Path, tmp_path: Path) -> Path:
    return _copy_caches(synthetic_caches, tmp_path / "data")


@pytest.mark.slow
def test_a_damaged_shard_is_named_and_features_re_encodes_it(data: Path) -> None:
    shard = next((data / "cache-test" / "shards").glob("shard-*.safetensors"))
    _flip_middle_byte(shard)  # safetensors still parses it: only the checksum can tell
    cache = FeatureCache(data / "cache-test")
    ref = cache.windows(next(iter(cache.entries)))[0]
    with pytest.raises(DatasetError, match=rf"feature shard .*{shard.name} is corrupt .*sha256.*re-run `emo-stream features`"):
        cache.load(ref)
    cfg = _short_config(data, data / "unused")
    model = build_model(cfg.model)
    manifest = read_manifest(data / "test.jsonl", model.label_set)
    summary = extract_features(manifest, model, data / "cache-test", cfg.features.settings(), progress=False)
    assert summary.corrupt_shards == (shard.name,) and summary.encoded == len(manifest) and summary.reused == 0
    assert "damaged shard" in summary.line()
    fresh = FeatureCache(data / "cache-test")
    for sid in fresh.entries:
        for w in fresh.windows(sid):
            assert all(bool(torch.isfinite(t).all()) for d in fresh.load(w).values() for t in d.values() if t.is_floating_point())


def _poison_cache(cache: Path) -> None:
    """Make every stored feature NaN, with valid checksums: what a broken encoder would have written."""
    from safetensors.numpy import load_file, save_file

    digests = {}
    for shard in (cache / "shards").glob("shard-*.safetensors"):
        tensors = load_file(str(shard))
        save_file(
            {k: (v * float("nan") if v.dtype.kind == "f" else v) for k, v in tensors.items()}, str(shard), metadata={"format": "emo_stream.feature_cache"}
        )
        digests[shard.name] = hashlib.sha256(shard.read_bytes()).hexdigest()
    lines = [json.loads(x) for x in (cache / "index.jsonl").read_text().splitlines()]
    (cache / "index.jsonl").write_text("".join(json.dumps({**e, "shard_sha256": digests[e["shard"]]}) + "\n" for e in lines))


@pytest.mark.slow
def test_nan_features_stop_training_before_anything_is_saved(data: Path, tmp_path: Path) -> None:
    _poison_cache(data / "cache-train")
    run = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=r"training diverged at step 1 \(stage perception\): the loss is NaN/Inf"):
        Trainer(_short_config(data, run), progress=False).run()
    assert not (run / "model").exists()
    assert not list((run / "checkpoints").glob("step-*")) if (run / "checkpoints").exists() else True


@pytest.mark.slow
def test_resume_skips_a_damaged_latest_checkpoint_and_stays_exact(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from safetensors.torch import load_file

    cfg = _short_config(data, tmp_path / "unused")
    full = Trainer(cfg, tmp_path / "full", progress=False).run()
    part = Trainer(cfg, tmp_path / "killed", progress=False, stop_after=7).run()
    ck = tmp_path / "killed" / "checkpoints"
    assert part.stopped_early and (ck / "latest").read_text() == "step-000006"
    _flip_middle_byte(ck / "step-000006" / "trainable.safetensors")
    assert "does not match its recorded sha256" in str(checkpoint_problem(ck / "step-000006"))
    capsys.readouterr()
    res = Trainer(cfg, tmp_path / "killed", progress=False, resume=True).run()
    err = capsys.readouterr().err
    assert "skipping unusable checkpoint step-000006 (trainable.safetensors does not match its recorded sha256); resuming from step-000004" in err
    assert res.resumed_from == 4 and res.steps == 8
    a, b = load_file(str(full.model_dir / "model.safetensors")), load_file(str(res.model_dir / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # every checkpoint damaged: a clear refusal naming them, not a silent restart
    for d in ck.glob("step-*"):
        (d / "state.json").write_text("{torn")
    with pytest.raises(ConfigError, match=r"--resume: no usable checkpoint .*step-000008 \(state.json unreadable"):
        Trainer(cfg, tmp_path / "killed", progress=False, resume=True).run()


@pytest.mark.slow
def test_a_disk_filling_while_checkpointing_is_one_line(data: Path, tmp_path: Path) -> None:
    """RLIMIT_FSIZE refuses bytes past a size (EFBIG), as a full disk would, even for root."""
    import resource
    import signal

    d = config_dict(data, tmp_path / "run", stages=SHORT_STAGES, checkpoint={"every": 2, "keep_last": 3})
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(d))

    def small_disk() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))  # metrics/config fit, a checkpoint's tensors do not

    r = subprocess.run(
        [sys.executable, "-m", "emo_stream.cli", "train", "--config", str(tmp_path / "c.yaml"), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=small_disk,
    )
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert lines[0] == f"emo-stream: error: cannot write checkpoint {tmp_path / 'run' / 'checkpoints' / 'step-000002'}: File too large"
    ck = tmp_path / "run" / "checkpoints"
    assert not list(ck.glob("step-*")) and not list(ck.glob(".*partial*")) and not (ck / "latest").exists()


def test_hostile_manifests_configs_and_synthetic_options_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 50_000 + "]" * 50_000)
    deep_lines = tmp_path / "deep.jsonl"
    deep_lines.write_text('{"id": "a", "media": ' + "[" * 50_000 + "]" * 50_000 + "}\n")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefg", "bcdefgh")))
    cases = [
        (["dataset", "check", "--manifest", str(deep)], "nested more than 64 levels deep"),
        (["dataset", "check", "--manifest", str(deep_lines)], "line 1: nested more than 64 levels deep"),
        (["train", "--config", str(bomb)], "alias bomb"),
        (["make-synthetic-set", "--out", str(tmp_path / "s"), "--fps", "0"], "fps must be a number in [1, 120], got 0.0"),
        (["make-synthetic-set", "--out", str(tmp_path / "s"), "--max-seconds", "nan"], "max_seconds must be a number"),
        (["make-synthetic-set", "--out", str(tmp_path / "s"), "--size", "99998"], "size must be an even number in [16, 1024]"),
    ]
    for argv, expect in cases:
        rc = cli.main(argv)
        err = capsys.readouterr().err
        assert rc == 2 and err.count("\n") == 1 and err.startswith("emo-stream: error: ") and expect in err, (argv, err)
    assert not (tmp_path / "s").exists()  # validated before anything is written
