"""TensorRT export: what CI can test without TensorRT (profiles, overrides, calibration data, the clear error),
plus a GPU test that builds and checks real engines where TensorRT and CUDA exist."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from emo_stream.errors import ConfigError
from emo_stream.export.tensorrt_export import (
    calibration_batches,
    load_profile_file,
    merge_overrides,
    parse_dim_override,
    profile_shapes,
    stage_dims,
    stage_profile,
)

REPO = Path(__file__).resolve().parents[2]


def _has_tensorrt() -> bool:
    try:
        import tensorrt  # noqa: F401
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


@pytest.mark.slow
def test_profiles_come_from_the_manifest(manifest_v1):
    stages = manifest_v1["onnx"]["stages"]
    p = stage_profile("audio", stages["audio"])
    assert p == {"input_values": {"min": [1, 1600], "opt": [1, 32000], "max": [8, 480000]}}
    p = stage_profile("global", stages["global"])
    assert p["pixel_values"] == {"min": [1, 3, 32, 32], "opt": [1, 3, 32, 32], "max": [8, 3, 32, 32]}
    p = stage_profile("projector", stages["projector"])
    assert set(p) == {"vision_tokens", "face_feature", "video_feature", "audio_feature", "present"}
    assert p["present"] == {"min": [1, 4], "opt": [1, 4], "max": [8, 4]}
    assert stage_profile("face", stages["face"])["pixel_values"]["opt"] == [8, 3, 16, 16]


@pytest.mark.slow
def test_overrides_from_a_profile_file_and_dim_flags(manifest_v1, tmp_path):
    stages = manifest_v1["onnx"]["stages"]
    robot = load_profile_file(REPO / "export" / "profiles" / "robot.json")
    ov = merge_overrides(robot, ["audio.samples=1600:16000:96000", "faces=1:4:16"])
    assert stage_profile("audio", stages["audio"], ov)["input_values"] == {"min": [1, 1600], "opt": [1, 16000], "max": [2, 96000]}
    assert stage_profile("face", stages["face"], ov)["pixel_values"]["max"] == [16, 3, 16, 16]
    assert stage_dims("global", stages["global"], ov)["batch"] == {"min": 1, "opt": 1, "max": 2}
    clipped = profile_shapes([], stage_dims("audio", stages["audio"], ov), [{"batch": 3, "samples": 200000}, {"batch": 1, "samples": 900}])
    assert clipped == [{"batch": 2, "samples": 96000}, {"batch": 1, "samples": 1600}]
    for bad in ("batch=1:2", "batch=4:2:8", "=1:1:1", "batch=a:b:c"):
        with pytest.raises(ConfigError):
            parse_dim_override(bad)
    (tmp_path / "p.json").write_text(json.dumps({"dims": {"batch": {"min": 3, "opt": 2, "max": 4}}}))
    with pytest.raises(ConfigError, match="min <= opt <= max"):
        stage_dims("global", stages["global"], load_profile_file(tmp_path / "p.json"))
    (tmp_path / "q.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_profile_file(tmp_path / "q.json")


def test_calibration_batches_from_cached_features(tmp_path):
    d = tmp_path / "calib" / "projector"
    d.mkdir(parents=True)
    names = ["vision_tokens", "present"]
    for i in range(3):
        np.savez(d / f"{i:06d}.npz", vision_tokens=np.zeros((1, 17, 24), np.float32), present=np.ones((1, 4), bool))
    np.savez(d / "000009.npz", vision_tokens=np.zeros((2, 17, 24), np.float32), present=np.ones((2, 4), bool))
    batches, skipped = calibration_batches(tmp_path / "calib", "projector", names)
    assert len(batches) == 3 and skipped == 1 and batches[0]["vision_tokens"].shape == (1, 17, 24)
    with pytest.raises(ConfigError, match="no calibration data for stage audio"):
        calibration_batches(tmp_path / "calib", "audio", ["input_values"])


@pytest.mark.slow
def test_recorded_stage_inputs_are_calibration_data(export_v1, tmp_path):
    pytest.importorskip("llama_cpp")
    from emo_stream.runtime.exported import ExportedEmotionLlama, RuntimeConfig

    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (40, 40, 3), dtype=np.uint8) for _ in range(3)]
    ex = ExportedEmotionLlama(export_v1, RuntimeConfig(record_inputs=str(tmp_path / "cal"), threads=1, llm_threads=1))
    try:
        for _ in range(2):
            ex.project(ex.encode(ex.preprocess(frames, (rng.standard_normal(8000) * 0.1).astype(np.float32))))
    finally:
        ex.close()
    entry = json.loads((export_v1 / "manifest.json").read_text())["onnx"]["stages"]["projector"]
    batches, skipped = calibration_batches(tmp_path / "cal", "projector", [t["name"] for t in entry["inputs"]])
    assert len(batches) == 2 and skipped == 0
    assert sorted(p.name for p in (tmp_path / "cal").iterdir()) == ["audio", "face", "global", "projector", "temporal"]


@pytest.mark.slow
@pytest.mark.skipif(_has_tensorrt(), reason="TensorRT is installed here")
def test_without_tensorrt_the_command_fails_with_one_clear_line(export_v1):
    r = subprocess.run(
        [sys.executable, "-m", "emo_stream.export.cli", "export", "tensorrt", "--onnx", str(export_v1)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONWARNINGS": "ignore", "PATH": "/usr/bin:/bin"},
    )
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("emo-stream: error: TensorRT is not installed")


@pytest.mark.slow
def test_cli_parser_and_user_errors(export_v1, capsys):
    from emo_stream.export.cli import add_parser

    parser = argparse.ArgumentParser(prog="emo-stream")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["export", "tensorrt", "--onnx", str(export_v1), "--precision", "int8"])
    with pytest.raises(ConfigError, match="needs --calib"):
        args.func(args)
    args = parser.parse_args(["export", "tensorrt", "--onnx", str(export_v1), "--stages", "nose"])
    with pytest.raises(ConfigError, match="unknown stage"):
        args.func(args)
    args = parser.parse_args(["export", "onnx", "--model", "tiny", "--out", str(export_v1), "--precision", "bf16"])
    with pytest.raises(ConfigError, match="fp32, fp16, int8"):
        args.func(args)
    args = parser.parse_args(["export", "gguf", "--model", "tiny", "--out", str(export_v1), "-q"])
    from emo_stream.export.common import ExportError

    with pytest.raises(ExportError, match="different model"):
        args.func(args)


@pytest.mark.slow
@pytest.mark.gpu
@pytest.mark.skipif(not _has_tensorrt(), reason="needs TensorRT and a CUDA GPU")
def test_tensorrt_engines_build_and_match(export_v1, tmp_path):  # pragma: no cover - GPU machines only
    from emo_stream.export.tensorrt_export import export_tensorrt

    out = tmp_path / "trt"
    m = export_tensorrt(export_v1, out, precisions=("fp16",))
    for name, recs in m["tensorrt"]["stages"].items():
        par = recs["fp16"]["parity"]
        assert par["shapes"] >= 3 and par["max_abs"] <= par["tolerance"]["abs"] and par["bool_mismatches"] == 0, (name, par)
