"""The command-line front ends, through their own argparse harness (emo_stream.train.cli.main / add_parsers)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from emo_stream.train import cli

from .conftest import config_dict


def test_add_parsers_registers_the_commands() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="command")
    cli.add_parsers(sub)
    assert {"features", "train", "eval", "make-synthetic-set", "dataset"} <= set(sub.choices)
    a = p.parse_args(["train", "--config", "c.yaml", "--resume"])
    assert a.func is cli.cmd_train and a.resume and a.config == Path("c.yaml")
    a = p.parse_args(["features", "--manifest", "m.jsonl", "--out", "c", "--tiny", "v2", "--windows", "stream"])
    assert a.func is cli.cmd_features and a.tiny == "v2"


def test_user_errors_are_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "m.jsonl").write_text('{"id": "a", "media": "nope.mp4", "label": "happy"}\n{"id": "b", "media": "x.mp4", "label": "meh"}\n')
    rc = cli.main(["features", "--manifest", str(tmp_path / "m.jsonl"), "--out", str(tmp_path / "c"), "--tiny", "v1", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and err.startswith("emo-stream: error: ")
    assert "line 1: media file not found" in err and "line 2: label 'meh' is not in label set mer2023" in err
    assert cli.main(["train", "--config", str(tmp_path / "none.yaml")]) == 2
    assert "training config not found" in capsys.readouterr().err
    assert cli.main(["features", "--manifest", str(tmp_path / "m.jsonl"), "--out", str(tmp_path / "c")]) == 2
    assert "exactly one of --weights DIR or --tiny" in capsys.readouterr().err


def test_synthetic_features_and_check_from_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "set"
    assert cli.main(["make-synthetic-set", "--out", str(d), "--labels", "happy,sad", "--per-label", "2", "--no-progress"]) == 0
    assert cli.main(["make-synthetic-set", "--out", str(d), "--labels", "happy", "--per-label", "2", "--no-progress"]) == 2  # exists
    capsys.readouterr()
    assert cli.main(["dataset", "check", "--manifest", str(d / "train.jsonl")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["samples"] == 2 and info["labels"]["happy"] == 1 and info["labels"]["sad"] == 1
    cfg = config_dict(d, tmp_path / "run")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert cli.main(["features", "--config", str(tmp_path / "c.yaml"), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "2 samples in" in err and "cache-train" in err and "cache-test" in err
    assert (d / "cache-test" / "index.jsonl").read_text().count("\n") == 2


@pytest.mark.slow
def test_eval_command_reproduces_the_training_eval(trained_run: Any, synthetic_caches: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "eval"
    rc = cli.main(
        [
            "eval",
            "--model",
            str(trained_run.model_dir),
            "--manifest",
            str(synthetic_caches / "test.jsonl"),
            "--cache",
            str(synthetic_caches / "cache-test"),
            "--out",
            str(out),
            "--no-subtitles",
            "--rationale",
            "--judge",
            "lexical",
            "--no-progress",
            "--max-new-tokens",
            "6",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    m = json.loads((out / "metrics.json").read_text())
    assert m["accuracy"] == trained_run.metrics["accuracy"] and m["weighted_f1"] == trained_run.metrics["weighted_f1"]
    assert 0 <= m["open_label_hit_rate"] <= 1 and m["emer"]["judge"] == "lexical" and m["emer"]["n"] == 18
    preds = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert all("rationale" in p or p.get("open_labels") is None for p in preds)
    assert (out / "confusion.png").is_file()
    assert "accuracy/WAR" in capsys.readouterr().err
    # Emotion-LLaMA's protocol: generated answers, invalid ones counted as neutral
    rc = cli.main(
        [
            "eval",
            "--model",
            str(trained_run.model_dir),
            "--manifest",
            str(synthetic_caches / "test.jsonl"),
            "--cache",
            str(synthetic_caches / "cache-test"),
            "--out",
            str(tmp_path / "gen"),
            "--no-subtitles",
            "--mode",
            "generate",
            "--no-progress",
            "--max-new-tokens",
            "4",
        ]
    )
    assert rc == 0
    g = json.loads((tmp_path / "gen" / "metrics.json").read_text())
    assert g["mode"] == "generate" and g["accuracy"] >= 0.4
