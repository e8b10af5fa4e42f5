"""``scripts/gpu_check.sh``: every GPU path of the project in one run and one JSON report.

Why a script and not unit tests: CI never has a GPU, and a lent GPU machine is
held for minutes, so the GPU paths must be exercised by one prepared command
that finishes inside a budget (8 minutes on one H100/H200) and writes what it
saw, section by section, even when a section fails. ``--dry-run`` runs the very
same code on the CPU with tiny shapes; CI runs it, so the script cannot rot
between the rare sessions that have a GPU.

Sections (each records ``status`` ok / failed / skipped, its reason and seconds):

``environment``
    torch/CUDA, the GPU's name and memory, ONNX Runtime's version and providers,
    TensorRT's version when importable, ``nvidia-smi``.
``onnx_cuda``
    every stage of an ONNX export (the tiny model: the provider check does not
    depend on the width) opened with the CUDA execution provider through
    :class:`~emo_stream.runtime.onnxruntime.OrtStageRuntime`, which refuses a
    silent CPU fallback; per stage the providers actually used, p50 run time and
    the max abs difference against the CPU provider. Dry run: the CPU provider.
``onnx_tensorrt``
    the same ONNX files through the TensorRT execution provider where it loads
    (skipped with the reason where this onnxruntime build has none).
``torch_bf16_llm``
    an Emotion-LLaMA with the LLaMA-2-7B shape (random weights, bf16) fed the
    multimodal tokens of a real forward pass plus the prompt: label-scoring
    p50/p95 and the token counts. Dry run: the tiny model, fp32, CPU.
``stream_clip``
    the ``emotion-llama`` engine with the full-size encoder shapes (EVA ViT-g,
    MAE ViT-L, VideoMAE ViT-L, HuBERT-large; random weights) on a real clip,
    lossless: states/s and per-stage p50. Dry run: tiny model on the clip.
``gpu_memory``
    torch's peak allocated/reserved memory and what ``nvidia-smi`` reports in use.

Random weights: the numbers are speed and plumbing, never accuracy; the
report says so.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emo_stream import stats
from emo_stream.errors import ConfigError

#: What the report calls a section that could not run here.
OK, FAILED, SKIPPED = "ok", "failed", "skipped"


@dataclass(frozen=True)
class GpuCheckConfig:
    """What one GPU check run does.

    Attributes:
        out: directory for ``gpu_report.json`` and the scratch export.
        dry_run: CPU and tiny shapes (CI); otherwise CUDA is required.
        clip: a real clip for ``stream_clip`` (None: that section is skipped).
        budget_s: sections not started by then are skipped (the lease is short).
        repeats: timed runs per measurement (p50/p95 over them).
        max_windows: windows of the clip to stream (bounds the section's time).
    """

    out: Path
    dry_run: bool = False
    clip: Path | None = None
    budget_s: float = 480.0
    repeats: int = 20
    max_windows: int = 16

    def __post_init__(self) -> None:
        if not self.budget_s > 0:
            raise ConfigError(f"--budget-s must be > 0, got {self.budget_s}")
        if self.repeats < 2:
            raise ConfigError(f"--repeats must be >= 2 (p95 needs several runs), got {self.repeats}")
        if self.max_windows < 1:
            raise ConfigError(f"--max-windows must be >= 1, got {self.max_windows}")
        if self.clip is not None and not Path(self.clip).is_file():
            raise ConfigError(f"--clip {self.clip} is not a file")

    @property
    def device(self) -> str:
        return "cpu" if self.dry_run else "cuda"


def percentiles(samples_ms: list[float]) -> dict[str, float | None]:
    """p50/p95 of a list of milliseconds (None when empty), rounded for the report."""
    return stats.percentiles(samples_ms, (50, 95), suffix="_ms", ndigits=3)


def _timed(fn: Callable[[], Any], repeats: int, sync: Callable[[], None] = lambda: None) -> tuple[Any, list[float]]:
    """Run ``fn`` once to warm up, then ``repeats`` times; return the last result and the times in ms."""
    out = fn()
    sync()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        sync()
        times.append((time.perf_counter() - t) * 1e3)
    return out, times


class _Report:
    """Sections in order, each timed and caught, written atomically after every section.

    Writing after each section means a check killed at the lease's end still
    leaves everything it measured so far.
    """

    def __init__(self, cfg: GpuCheckConfig) -> None:
        self.cfg = cfg
        self.t0 = time.monotonic()
        self.path = Path(cfg.out) / "gpu_report.json"
        self.data: dict[str, Any] = {
            "format": "emo_stream.gpu_check",
            "dry_run": cfg.dry_run,
            "device": cfg.device,
            "weights": "random (speed and plumbing only, not accuracy)",
            "started_unix": round(time.time(), 3),
            "sections": {},
        }

    @contextlib.contextmanager
    def section(self, name: str) -> Iterator[dict[str, Any]]:
        rec: dict[str, Any] = {"status": OK}
        self.data["sections"][name] = rec
        elapsed = time.monotonic() - self.t0
        if elapsed > self.cfg.budget_s:
            rec.update(status=SKIPPED, reason=f"budget of {self.cfg.budget_s:.0f} s spent ({elapsed:.0f} s)")
            self._progress(name, rec)
            self.write()
            yield {"_skip": True}
            return
        t = time.monotonic()
        try:
            yield rec
        except _Skip as exc:
            rec.update(status=SKIPPED, reason=str(exc))
        except Exception as exc:
            rec.update(status=FAILED, reason=f"{type(exc).__name__}: {exc}".splitlines()[0][:500], traceback=traceback.format_exc(limit=8)[-4000:])
        rec["seconds"] = round(time.monotonic() - t, 3)
        self._progress(name, rec)
        self.write()

    def _progress(self, name: str, rec: dict[str, Any]) -> None:
        why = f": {rec['reason']}" if rec.get("reason") else ""
        print(f"gpu-check: {name:<15} {rec['status']}{why} ({rec.get('seconds', 0):.1f} s)", file=sys.stderr, flush=True)

    def write(self) -> None:
        from emo_stream.export.artifacts import write_json_atomic

        self.data["elapsed_s"] = round(time.monotonic() - self.t0, 3)
        statuses = [s["status"] for s in self.data["sections"].values()]
        self.data["ok"] = FAILED not in statuses
        write_json_atomic(self.path, self.data)


class _Skip(Exception):
    """A section that cannot run on this machine (the reason is the message)."""


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        raise _Skip("torch is not installed") from None
    return torch


def _cuda_sync() -> Callable[[], None]:
    torch = _torch()
    return torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)


def _environment(cfg: GpuCheckConfig, rec: dict[str, Any]) -> None:
    rec["python"] = sys.version.split()[0]
    rec["platform"] = platform.platform()
    with contextlib.suppress(ImportError):
        import torch

        rec["torch"] = torch.__version__
        rec["cuda_available"] = bool(torch.cuda.is_available())
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            rec["gpu"] = {
                "name": props.name,
                "memory_gib": round(props.total_memory / 2**30, 2),
                "multiprocessors": props.multi_processor_count,
                "capability": f"{props.major}.{props.minor}",
            }
    with contextlib.suppress(ImportError):
        import onnxruntime as ort

        rec["onnxruntime"] = {"version": ort.__version__, "providers": list(ort.get_available_providers())}
    try:
        import tensorrt as trt

        rec["tensorrt"] = trt.__version__
    except ImportError:
        rec["tensorrt"] = None
    rec["nvidia_smi"] = _nvidia_smi("name,memory.total,memory.used,driver_version")
    if not cfg.dry_run and not rec.get("cuda_available"):
        raise RuntimeError("no CUDA device visible to torch (this is not a dry run)")


def _nvidia_smi(fields: str) -> list[str] | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        r = subprocess.run([exe, f"--query-gpu={fields}", "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return [line.strip() for line in r.stdout.splitlines() if line.strip()] or None


def _export_tiny(cfg: GpuCheckConfig) -> Path:
    """The tiny model's ONNX export in ``out/export`` (reused when already complete)."""
    from emo_stream.export.onnx_export import export_onnx

    root = Path(cfg.out) / "export"
    if not (root / "manifest.json").is_file():
        export_onnx("tiny", root, threads=1)
    return root


def _stage_feeds(stage: dict[str, Any], seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs at each dynamic axis's typical size, regenerated from the manifest alone."""
    from emo_stream.export.stages import sample_tensors, tensor_specs

    dims = {k: int(v["opt"]) for k, v in stage.get("dynamic_axes", {}).items()}
    return sample_tensors(tensor_specs(stage["inputs"]), dims, seed)


def _onnx_providers(cfg: GpuCheckConfig, rec: dict[str, Any], providers: list[str], label: str) -> None:
    """Each exported stage on ``providers`` (no CPU fallback allowed) vs the CPU provider."""
    from emo_stream.export.artifacts import load_manifest
    from emo_stream.runtime.onnxruntime import OrtStageRuntime
    from emo_stream.runtime.stage import ProviderFallbackError

    manifest = load_manifest(_export_tiny(cfg))
    stages: dict[str, Any] = {}
    rec["providers_requested"] = providers
    for name, stage in manifest["onnx"]["stages"].items():
        path = manifest.path(stage["variants"]["fp32"]["file"])
        feeds = _stage_feeds(stage)
        ref = OrtStageRuntime(path, stage=name, providers=["cpu"]).run(feeds)
        try:
            rt = OrtStageRuntime(path, stage=name, providers=providers, allow_cpu_fallback=False)
        except ProviderFallbackError as exc:
            stages[name] = {"status": FAILED, "reason": str(exc)}
            continue
        got, times = _timed(functools.partial(rt.run, feeds), cfg.repeats)
        diff = max(
            float(np.max(np.abs(np.asarray(got[k], dtype=np.float64) - np.asarray(ref[k], dtype=np.float64)))) if np.asarray(ref[k]).size else 0.0 for k in ref
        )
        stages[name] = {"status": OK, "providers_used": rt.info.providers_used, "device": rt.info.device, "max_abs_vs_cpu": diff, **percentiles(times)}
        rt.close()
    rec["stages"] = stages
    bad = [n for n, s in stages.items() if s["status"] != OK]
    if bad:
        raise RuntimeError(f"{label} did not run stage(s) {bad}: {stages[bad[0]]['reason']}")


def _onnx_cuda(cfg: GpuCheckConfig, rec: dict[str, Any]) -> None:
    if cfg.dry_run:
        rec["note"] = "dry run: the CPU provider through the same no-fallback check"
        _onnx_providers(cfg, rec, ["cpu"], "ONNX Runtime CPU")
        return
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise RuntimeError(
            f"this onnxruntime build has no CUDA provider ({ort.get_available_providers()}); install onnxruntime-gpu (carry its wheel to the device machine)"
        )
    _onnx_providers(cfg, rec, ["cuda"], "ONNX Runtime CUDA")


def _onnx_tensorrt(cfg: GpuCheckConfig, rec: dict[str, Any]) -> None:
    if cfg.dry_run:
        raise _Skip("dry run: TensorRT needs a GPU")
    import onnxruntime as ort

    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        raise _Skip(f"this onnxruntime build has no TensorRT provider ({ort.get_available_providers()})")
    _onnx_providers(cfg, rec, ["tensorrt", "cuda"], "ONNX Runtime TensorRT")


def _model_config(cfg: GpuCheckConfig) -> Any:
    """The full-size Emotion-LLaMA (full encoders, LLaMA-2-7B shape, bf16 LLM) on a GPU; the tiny one in a dry run."""
    from emo_stream.model.emotion_llama import EmotionLlamaConfig

    if cfg.dry_run:
        return EmotionLlamaConfig.tiny()
    full = EmotionLlamaConfig.emotion_llama_7b()
    return dataclasses.replace(full, llm=dataclasses.replace(full.llm, dtype="bfloat16"))


def _build_model(cfg: GpuCheckConfig) -> Any:
    """Random weights built directly on the device (initialising 8 B parameters on the CPU takes minutes)."""
    torch = _torch()
    from emo_stream.model.emotion_llama import build_emotion_llama
    from emo_stream.model.llm import build_word_tokenizer

    with torch.device(cfg.device):
        torch.manual_seed(0)
        model = build_emotion_llama(_model_config(cfg), tokenizer=build_word_tokenizer())
    if not cfg.dry_run:
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 encoders as a deployment would run them
        torch.backends.cudnn.allow_tf32 = True
    return model.to(cfg.device).eval()


def _random_inputs(model: Any, rng: np.random.Generator) -> Any:
    """One window's worth of frames and audio, through the model's own preprocessing."""
    frames = [rng.integers(0, 255, (480, 640, 3), dtype=np.uint8) for _ in range(8)]
    audio = (0.1 * rng.standard_normal(32000)).astype(np.float32)
    return model.preprocess(frames, audio, 16000)


def _torch_bf16_llm(cfg: GpuCheckConfig, rec: dict[str, Any], state: dict[str, Any]) -> None:
    torch = _torch()
    if not cfg.dry_run and not torch.cuda.is_available():
        raise RuntimeError("no CUDA device")
    t = time.monotonic()
    model = _build_model(cfg)
    state["model"] = model
    rec["build_s"] = round(time.monotonic() - t, 2)
    rec["llm"] = {k: model.config.llm.llama[k] for k in ("hidden_size", "num_hidden_layers", "vocab_size")}
    rec["llm_dtype"] = model.config.llm.dtype
    rec["parameters_b"] = round(sum(p.numel() for p in model.parameters()) / 1e9, 3)
    with torch.inference_mode():
        projection = model.project(model.encode(_random_inputs(model, np.random.default_rng(0))))
        rec["multimodal_tokens"] = int(projection.mask.sum())
        prompt = model.prompt("emotion", "")
        prefix = model.llm.build_prefix(prompt, projection.slots)
        rec["prefix_tokens"] = int(prefix.embeds.shape[1])
        labels = model.label_set.labels
        probs, times = _timed(lambda: model.llm.label_log_probs(prefix, labels).exp(), cfg.repeats, _cuda_sync())
    p = probs[0].float().cpu().numpy()
    if not (np.all(np.isfinite(p)) and abs(float(p.sum()) - 1.0) < 1e-3):
        raise RuntimeError(f"label probabilities are not a distribution: {p}")
    rec["labels"] = len(labels)
    rec["label_scoring"] = percentiles(times)


def _stream_clip(cfg: GpuCheckConfig, rec: dict[str, Any], state: dict[str, Any]) -> None:
    if cfg.clip is None:
        raise _Skip("no --clip given")
    from emo_stream.config import EngineConfig, StreamConfig
    from emo_stream.engines.emotion_llama import EmotionLlamaEngine
    from emo_stream.pipeline import Pipeline
    from emo_stream.stream.sinks import CallbackSink
    from emo_stream.stream.sources.factory import open_sources

    model = state.get("model") or _build_model(cfg)
    config = StreamConfig(engine=EngineConfig(name="emotion-llama", options={"device": cfg.device}))
    engine = EmotionLlamaEngine(config, model=model)
    states: list[Any] = []
    pipeline = Pipeline(open_sources(str(cfg.clip), config), engine, [CallbackSink(states.append)], config)
    stats = pipeline.run(max_states=cfg.max_windows)
    if not states:
        raise RuntimeError(f"no states from {cfg.clip}")
    stages: dict[str, list[float]] = {}
    for s in states:
        for k, v in s.latency_ms.items():
            stages.setdefault(k, []).append(float(v))
    rec["clip"] = str(cfg.clip)
    rec["states"] = len(states)
    rec["states_per_s"] = round(len(states) / stats.wall_s, 3) if stats.wall_s > 0 else None
    rec["latency_ms"] = {k: percentiles(v) for k, v in sorted(stages.items())}
    rec["modalities_seen"] = sorted({m for s in states for m in s.modalities})
    rec["multimodal_tokens"] = sorted({int(s.signals.get("multimodal_tokens", -1)) for s in states})


def _gpu_memory(cfg: GpuCheckConfig, rec: dict[str, Any]) -> None:
    torch = _torch()
    if not torch.cuda.is_available():
        raise _Skip("dry run: no CUDA memory to report" if cfg.dry_run else "no CUDA device")
    rec["torch_peak_allocated_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    rec["torch_peak_reserved_gib"] = round(torch.cuda.max_memory_reserved() / 2**30, 3)
    rec["nvidia_smi_used"] = _nvidia_smi("memory.used,memory.total")


def run_gpu_check(cfg: GpuCheckConfig) -> dict[str, Any]:
    """Run every section in order and return the report (also written to ``out/gpu_report.json``)."""
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    report = _Report(cfg)
    state: dict[str, Any] = {}
    steps: list[tuple[str, Callable[[dict[str, Any]], None]]] = [
        ("environment", lambda r: _environment(cfg, r)),
        ("onnx_cuda", lambda r: _onnx_cuda(cfg, r)),
        ("onnx_tensorrt", lambda r: _onnx_tensorrt(cfg, r)),
        ("torch_bf16_llm", lambda r: _torch_bf16_llm(cfg, r, state)),
        ("stream_clip", lambda r: _stream_clip(cfg, r, state)),
        ("gpu_memory", lambda r: _gpu_memory(cfg, r)),
    ]
    for name, step in steps:
        with report.section(name) as rec:
            if not rec.get("_skip"):
                step(rec)
    state.clear()
    report.write()
    return report.data


def main(argv: list[str] | None = None) -> int:
    """``python -m emo_stream.bench.gpu_check``: exit 0 when no section failed, 1 otherwise, 2 on bad arguments."""
    import argparse

    p = argparse.ArgumentParser(prog="gpu_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="directory for gpu_report.json")
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes (what CI runs)")
    p.add_argument("--clip", type=Path, default=None, help="real clip for the streaming section")
    p.add_argument("--budget-s", type=float, default=480.0, help="skip sections that would start after this")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--max-windows", type=int, default=16)
    args = p.parse_args(argv)
    try:
        cfg = GpuCheckConfig(out=args.out, dry_run=args.dry_run, clip=args.clip, budget_s=args.budget_s, repeats=args.repeats, max_windows=args.max_windows)
    except ConfigError as exc:
        print(f"gpu-check: error: {exc}", file=sys.stderr)
        return 2
    report = run_gpu_check(cfg)
    print(json.dumps({k: v["status"] for k, v in report["sections"].items()}))
    print(f"gpu-check: report in {Path(cfg.out) / 'gpu_report.json'}", file=sys.stderr)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
