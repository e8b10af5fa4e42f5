"""A robot install (`pip install -e ".[robot]"`, no torch): the default engine and `run --export` (issue 15).

Each command runs in a fresh interpreter on a clean model cache, streams a real
clip and reports the modules it loaded: torch, transformers and peft must not
be among them (nor installed at all in this venv).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from tests.robot.robot_helpers import TRAINING_STACK, run_cli


def _states(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_the_training_stack_is_not_installed() -> None:
    assert [m for m in TRAINING_STACK if importlib.util.find_spec(m) is not None] == []
    assert importlib.util.find_spec("onnx") is not None and importlib.util.find_spec("llama_cpp") is not None


def test_default_engine_streams_a_clip_from_a_clean_model_cache(media: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    jsonl = tmp_path / "states.jsonl"
    out, loaded = run_cli(["run", "--input", str(media / "astronaut_speech.mp4"), "--jsonl", str(jsonl), "--quiet"], tmp_path, cache)
    assert out.returncode == 0, out.stderr
    assert [m for m in TRAINING_STACK if m in loaded] == [], "the default engine imported the training stack"
    assert "onnxruntime" in loaded and "llama_cpp" in loaded  # it really ran the experts and the LLM
    states = _states(jsonl)
    assert len(states) >= 4
    assert any("face" in s["modalities"] for s in states) and any("voice" in s["modalities"] for s in states)
    # the expression network was built into the clean cache, without torch, and nothing half-written is left
    built = sorted(p.name for p in (cache / "models").iterdir())
    assert any(n.startswith("fer_mini_xception-") and n.endswith(".onnx") for n in built)
    assert not any(".partial-" in n for n in built)


def test_run_export_streams_the_exported_model(media: Path, tmp_path: Path, export_dir: Path) -> None:
    jsonl = tmp_path / "states.jsonl"
    out, loaded = run_cli(
        [
            "run",
            "--input",
            str(media / "astronaut_speech.mp4"),
            "--export",
            str(export_dir),
            "-o",
            "llm_threads=1",
            "-o",
            "ort_threads=1",
            "--jsonl",
            str(jsonl),
            "--quiet",
        ],
        tmp_path,
        tmp_path / "cache",
    )
    assert out.returncode == 0, out.stderr
    assert [m for m in TRAINING_STACK if m in loaded] == [], "run --export imported the training stack"
    assert "onnxruntime" in loaded and "llama_cpp" in loaded
    states = _states(jsonl)
    assert len(states) >= 4 and all(s["model_id"].startswith("emotion-llama/") for s in states)
    assert all(abs(sum(s["probabilities"]) - 1) < 1e-6 for s in states)
    assert any({"video", "audio"} <= set(s["modalities"]) for s in states)  # pixels and log-mel/waves in numpy


def test_a_torch_engine_is_one_clear_error_line(media: Path, tmp_path: Path) -> None:
    out, _ = run_cli(
        ["run", "--input", str(media / "astronaut_3s_noaudio.mp4"), "--engine", "emotion-llama", "-o", "tiny=true", "--quiet"], tmp_path, tmp_path / "cache"
    )
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "emo-stream: error: this needs the Python package 'torch', which is not installed; run: pip install 'emo-stream[torch]'"
    ]
