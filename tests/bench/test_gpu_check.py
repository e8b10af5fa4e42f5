"""The GPU check's dry run (what CI can run of it) and its report when a GPU is missing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from emo_stream.bench.gpu_check import GpuCheckConfig, percentiles
from emo_stream.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(ROOT / "scripts" / "gpu_check.sh"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "HOME": str(Path.home())},
    )


@pytest.mark.slow
def test_dry_run_exercises_every_path_and_writes_the_report(tmp_path, media):
    r = _run("--dry-run", "--out", str(tmp_path), "--clip", str(media / "megamind.avi"), "--repeats", "2", "--max-windows", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_report.json").read_text())
    sec = report["sections"]
    assert report["dry_run"] is True and report["ok"] is True
    assert [sec[k]["status"] for k in ("environment", "onnx_cuda", "torch_bf16_llm", "stream_clip")] == ["ok"] * 4
    assert sec["onnx_tensorrt"]["status"] == "skipped" and "GPU" in sec["onnx_tensorrt"]["reason"]
    stages = sec["onnx_cuda"]["stages"]
    assert {"global", "face", "temporal", "audio", "projector"} <= set(stages)
    for s in stages.values():  # the no-fallback check passed and the provider really ran the graph
        assert s["providers_used"][0] == "CPUExecutionProvider" and s["max_abs_vs_cpu"] == 0.0
        assert s["p50_ms"] > 0
    llm = sec["torch_bf16_llm"]
    assert llm["multimodal_tokens"] > 0 and llm["prefix_tokens"] > llm["multimodal_tokens"]
    assert llm["label_scoring"]["p95_ms"] >= llm["label_scoring"]["p50_ms"] > 0
    clip = sec["stream_clip"]
    assert clip["states"] == 2 and "llm_score" in clip["latency_ms"]
    assert "gpu-check: stream_clip" in r.stderr  # progress per section


@pytest.mark.slow
def test_without_a_gpu_the_real_run_fails_per_section_and_still_reports(tmp_path):
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the real check would run")
    r = _run("--out", str(tmp_path), "--repeats", "2", "--clip", str(tmp_path / "none.mp4"))
    assert r.returncode == 2 and "gpu-check: error: --clip" in r.stderr  # bad argument: one line
    r = _run("--out", str(tmp_path), "--repeats", "2", "--max-windows", "1")
    assert r.returncode == 1, r.stderr[-2000:]
    report = json.loads((tmp_path / "gpu_report.json").read_text())
    sec = report["sections"]
    assert report["ok"] is False
    assert sec["environment"]["status"] == "failed" and "no CUDA device" in sec["environment"]["reason"]
    assert sec["onnx_cuda"]["status"] == "failed" and "CUDA" in sec["onnx_cuda"]["reason"]
    assert sec["torch_bf16_llm"]["status"] == "failed"
    assert "Traceback" not in r.stderr.split("gpu-check: gpu_memory")[-1]


def test_config_is_validated_and_percentiles_are_ordered(tmp_path):
    with pytest.raises(ConfigError, match="repeats"):
        GpuCheckConfig(out=tmp_path, repeats=1)
    with pytest.raises(ConfigError, match="budget"):
        GpuCheckConfig(out=tmp_path, budget_s=float("nan"))
    assert GpuCheckConfig(out=tmp_path, dry_run=True).device == "cpu"
    p = percentiles([1.0, 2.0, 3.0, 100.0])
    assert p["p50_ms"] == 2.5 and p["p95_ms"] > 50
    assert percentiles([]) == {"p50_ms": None, "p95_ms": None}
