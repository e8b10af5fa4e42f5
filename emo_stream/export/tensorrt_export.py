"""``emo-stream export tensorrt``: TensorRT engines from an ONNX export, written beside its manifest.

For each stage in ``manifest.json`` (``onnx.stages``):

* **optimisation profile** -- min / opt / max shape of every input, from the
  dynamic-axis ranges the ONNX export recorded (``dynamic_axes``), optionally
  overridden by a profile file (``export/profiles/*.json``: ``{"dims": {"batch":
  {"min": 1, "opt": 1, "max": 2}}, "stages": {"audio": {"dims": {...}}}}``) or
  ``--dim NAME=MIN:OPT:MAX``. :func:`stage_profile` is pure Python (tested in CI).
* **fp16** -- ``BuilderFlag.FP16`` on the fp32 ONNX graph (TensorRT chooses
  per layer; inputs/outputs stay float32, as in the manifest).
* **int8** -- ``BuilderFlag.INT8`` (+ FP16 fallback) with entropy calibration
  from *cached features*: ``.npz`` files whose arrays are named like the
  stage's inputs, read from ``<calib>/<stage>/*.npz`` (what the exported engine
  writes with ``record_inputs``, see :mod:`emo_stream.runtime.exported`) or
  ``<calib>/*.npz``. Calibration runs at one shape (TensorRT calibrates at the
  calibration profile), taken from the first file; files of other shapes are
  skipped and counted.
* the engine is written atomically as ``tensorrt/<stage>.<precision>.plan``
  with its build facts (TensorRT version, GPU, compute capability, profile,
  calibration) in ``manifest.json`` -- an engine only runs on the TensorRT
  version and GPU architecture that built it.
* parity: the engine and ONNX Runtime (fp32 file, CPU) run the same seeded
  inputs at the stage's parity shapes (clipped to the profile); errors go into
  the manifest like the ONNX ones.

TensorRT is imported lazily; without it the command fails with one clear line
(:class:`~emo_stream.runtime.stage.RuntimeUnavailableError`).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emo_stream.errors import ConfigError, ModelFileError
from emo_stream.export.artifacts import ExportWriter, load_manifest
from emo_stream.export.common import ExportError, Progress
from emo_stream.export.stages import TensorSpec, tensor_specs
from emo_stream.structured_files import read_json, read_yaml

TRT_PRECISIONS = ("fp16", "int8", "fp32")


def _partial_suffix() -> str:
    from emo_stream.export.artifacts import _PARTIAL

    return f"{_PARTIAL}{os.getpid()}-{time.monotonic_ns()}"


def trt_rel(stage: str, precision: str) -> str:
    return f"tensorrt/{stage}.{precision}.plan"


# --------------------------------------------------------------------------- profiles (pure Python)


def parse_dim_override(text: str) -> tuple[str, dict[str, int]]:
    """``batch=1:1:4`` (or ``audio.samples=1600:32000:160000`` for one stage) -> (name, {min, opt, max})."""
    name, sep, rng = text.partition("=")
    parts = rng.split(":")
    if not sep or not name or len(parts) != 3:
        raise ConfigError(f"--dim expects NAME=MIN:OPT:MAX, got {text!r}")
    try:
        lo, opt, hi = (int(p) for p in parts)
    except ValueError:
        raise ConfigError(f"--dim {text!r}: MIN, OPT and MAX must be integers") from None
    if not 1 <= lo <= opt <= hi:
        raise ConfigError(f"--dim {text!r}: need 1 <= MIN <= OPT <= MAX")
    return name.strip(), {"min": lo, "opt": opt, "max": hi}


def load_profile_file(path: str | Path) -> dict[str, Any]:
    """A profile file: ``{"dims": {...}, "stages": {stage: {"dims": {...}}}}`` (JSON or YAML)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"profile file {p} not found")
    # The one safe reader (size/depth limits, one-line errors) for either format.
    data = read_yaml(p, what="profile file") if p.suffix in (".yaml", ".yml") else read_json(p, what="profile file")
    if not isinstance(data, dict) or not set(data) <= {"dims", "stages", "description"}:
        raise ConfigError(f"profile file {p} must be a mapping with 'dims' and/or 'stages'")
    return data


def merge_overrides(profile_file: Mapping[str, Any] | None, dim_args: Iterable[str] = ()) -> dict[str, Any]:
    """One override mapping ``{"dims": {...}, "stages": {stage: {"dims": {...}}}}`` from a file and ``--dim`` args."""
    out: dict[str, Any] = {"dims": {}, "stages": {}}
    if profile_file:
        out["dims"].update(profile_file.get("dims") or {})
        for stage, entry in (profile_file.get("stages") or {}).items():
            out["stages"].setdefault(stage, {"dims": {}})["dims"].update((entry or {}).get("dims") or {})
    for arg in dim_args:
        name, rng = parse_dim_override(arg)
        if "." in name:
            stage, dim = name.split(".", 1)
            out["stages"].setdefault(stage, {"dims": {}})["dims"][dim] = rng
        else:
            out["dims"][name] = rng
    return out


def stage_dims(stage: str, entry: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> dict[str, dict[str, int]]:
    """Dynamic-axis ranges of a stage: the manifest's, then global overrides, then per-stage overrides."""
    dims = {k: {"min": int(v["min"]), "opt": int(v["opt"]), "max": int(v["max"])} for k, v in entry.get("dynamic_axes", {}).items()}
    ov = overrides or {}
    for source in (ov.get("dims") or {}, ((ov.get("stages") or {}).get(stage) or {}).get("dims") or {}):
        for name, rng in source.items():
            if name in dims:
                dims[name] = {k: int(rng.get(k, dims[name][k])) for k in ("min", "opt", "max")}
    for name, r in dims.items():
        if not 1 <= r["min"] <= r["opt"] <= r["max"]:
            raise ConfigError(f"stage {stage}: dynamic axis {name} needs 1 <= min <= opt <= max, got {r}")
    return dims


def stage_profile(stage: str, entry: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> dict[str, dict[str, list[int]]]:
    """TensorRT optimisation profile of one stage: ``{input: {"min": shape, "opt": shape, "max": shape}}``."""
    dims = stage_dims(stage, entry, overrides)
    prof: dict[str, dict[str, list[int]]] = {}
    for t in tensor_specs(entry["inputs"]):
        prof[t.name] = {k: [dims[d][k] if isinstance(d, str) else int(d) for d in t.shape] for k in ("min", "opt", "max")}
    return prof


def profile_shapes(inputs: Sequence[TensorSpec], dims: Mapping[str, Mapping[str, int]], parity_dims: Sequence[Mapping[str, int]]) -> list[dict[str, int]]:
    """The stage's parity shapes clipped into the profile (TensorRT cannot run outside it)."""
    out = []
    for d in parity_dims:
        clipped = {k: min(max(int(v), dims[k]["min"]), dims[k]["max"]) if k in dims else int(v) for k, v in d.items()}
        if clipped not in out:
            out.append(clipped)
    return out


# --------------------------------------------------------------------------- calibration data


def calibration_batches(calib_dir: str | Path, stage: str, input_names: Sequence[str], limit: int = 512) -> tuple[list[dict[str, np.ndarray]], int]:
    """Cached feature batches for a stage: (batches of one shape, number skipped for another shape)."""
    root = Path(calib_dir)
    if not root.is_dir():
        raise ConfigError(f"calibration directory {root} does not exist")
    files = sorted((root / stage).glob("*.npz")) if (root / stage).is_dir() else sorted(root.glob("*.npz"))
    batches: list[dict[str, np.ndarray]] = []
    skipped = 0
    shape0: dict[str, tuple[int, ...]] | None = None
    for f in files:
        with np.load(f) as z:
            if not set(input_names) <= set(z.files):
                continue
            batch = {n: np.asarray(z[n]) for n in input_names}
        shapes = {n: a.shape for n, a in batch.items()}
        if shape0 is None:
            shape0 = shapes
        if shapes != shape0:
            skipped += 1
            continue
        batches.append(batch)
        if len(batches) >= limit:
            break
    if not batches:
        raise ConfigError(f"no calibration data for stage {stage} in {root} (need .npz files with arrays {list(input_names)} in {root / stage}/ or {root}/)")
    return batches, skipped


def _make_calibrator(trt: Any, batches: list[dict[str, np.ndarray]], input_names: Sequence[str], cache: Path) -> Any:
    import torch

    base: Any = getattr(trt, "IInt8EntropyCalibrator2", None)  # Any: also inside the class below, where mypy forgets the None check
    if base is None:
        raise ExportError("this TensorRT has no IInt8EntropyCalibrator2 (implicit INT8 calibration was removed); use fp16, or Q/DQ ONNX")

    class NpzCalibrator(base):
        def __init__(self) -> None:
            base.__init__(self)
            self.index = 0
            self.buffers: dict[str, Any] = {}

        def get_batch_size(self) -> int:
            return 1  # explicit-batch networks ignore it

        def get_batch(self, names: Sequence[str]) -> list[int] | None:
            if self.index >= len(batches):
                return None
            batch = batches[self.index]
            self.index += 1
            ptrs = []
            for n in names:
                t = torch.from_numpy(np.ascontiguousarray(batch[n])).cuda()
                self.buffers[n] = t
                ptrs.append(int(t.data_ptr()))
            return ptrs

        def read_calibration_cache(self) -> bytes | None:
            return cache.read_bytes() if cache.is_file() else None

        def write_calibration_cache(self, data: Any) -> None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_bytes(bytes(data))

    return NpzCalibrator()


# --------------------------------------------------------------------------- building


def build_engine(
    onnx_path: Path,
    plan_path: Path,
    profile: Mapping[str, Mapping[str, Sequence[int]]],
    precision: str,
    *,
    workspace_gb: float = 4.0,
    calibration: list[dict[str, np.ndarray]] | None = None,
    calibration_cache: Path | None = None,
    version_compatible: bool = False,
) -> None:
    """Parse ``onnx_path``, build a serialized engine with ``profile`` at ``precision``, write ``plan_path``."""
    from emo_stream.runtime.tensorrt import import_tensorrt

    trt = import_tensorrt(builder=True)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if (
        hasattr(trt, "NetworkDefinitionCreationFlag")
        and hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH")
        and int(trt.__version__.split(".")[0]) < 10
    ):
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT cannot parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if version_compatible and hasattr(trt.BuilderFlag, "VERSION_COMPATIBLE"):
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    opt = builder.create_optimization_profile()
    for name, shp in profile.items():
        opt.set_shape(name, tuple(shp["min"]), tuple(shp["opt"]), tuple(shp["max"]))
    config.add_optimization_profile(opt)
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        if not calibration:
            raise ConfigError("an int8 TensorRT engine needs calibration data (--calib DIR of cached features)")
        config.set_flag(trt.BuilderFlag.INT8)
        cal_profile = builder.create_optimization_profile()
        for name, arr in calibration[0].items():
            cal_profile.set_shape(name, arr.shape, arr.shape, arr.shape)
        config.set_calibration_profile(cal_profile)
        config.int8_calibrator = _make_calibrator(trt, calibration, list(profile), calibration_cache or plan_path.with_suffix(".calib"))
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"TensorRT failed to build an engine for {onnx_path.name} ({precision}); see the TensorRT log above")
    plan_path.write_bytes(bytes(serialized))


def export_tensorrt(
    onnx_dir: str | Path,
    out: str | Path | None = None,
    *,
    precisions: Sequence[str] = ("fp16",),
    stages: Sequence[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    calib_dir: str | Path | None = None,
    workspace_gb: float = 4.0,
    version_compatible: bool = False,
    parity: bool = True,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Build engines for the stages of the ONNX export in ``onnx_dir``; write them and the manifest into ``out``.

    ``out`` defaults to ``onnx_dir`` (engines beside the manifest). A different
    ``out`` first receives a copy (hard links where possible) of every file of
    the export, so it is a complete export directory of its own.
    """
    from emo_stream.runtime.tensorrt import import_tensorrt

    bad = [p for p in precisions if p not in TRT_PRECISIONS]
    if not precisions or bad:
        raise ConfigError(f"TensorRT precision must be one of {', '.join(TRT_PRECISIONS)}, got {list(precisions)}")
    manifest = load_manifest(onnx_dir)
    onnx_section = manifest.get("onnx")
    if not onnx_section or not onnx_section.get("stages"):
        raise ModelFileError(f"{manifest.root} has no ONNX stages; run `emo-stream export onnx --model ... --out {manifest.root}` first")
    names = [n for n in onnx_section.get("stage_order", list(onnx_section["stages"])) if n in onnx_section["stages"]]
    if stages:
        unknown = [s for s in stages if s not in onnx_section["stages"]]
        if unknown:
            raise ConfigError(f"unknown stage(s) {unknown}; the export has {names}")
        names = [n for n in names if n in stages]
    if "int8" in precisions and calib_dir is None:
        raise ConfigError("--precision int8 needs --calib DIR (cached stage inputs as .npz)")
    trt = import_tensorrt(builder=True)  # fail early, in one line, before any work
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "unknown"
    cc = ".".join(map(str, torch.cuda.get_device_capability(0))) if torch.cuda.is_available() else "unknown"
    out_root = Path(out) if out is not None else manifest.root
    writer = ExportWriter(out_root)
    same_dir = writer.root.resolve() == manifest.root.resolve()
    progress = progress or Progress(enabled=False)
    progress.total = len(names) * len(precisions) + (0 if same_dir else 1)
    if not same_dir:
        with progress.step(f"copy the export into {writer.root}"):
            manifest.verify()
            writer.invalidate()
            writer.previous = None  # the copy replaces whatever export was there
            for rel in manifest.files:
                staged = writer.root / f".copy{_partial_suffix()}"
                try:
                    os.link(manifest.root / rel, staged)
                except OSError:
                    shutil.copyfile(manifest.root / rel, staged)
                writer.commit(staged, rel)
    built: dict[str, dict[str, Any]] = {}
    for name in names:
        entry = onnx_section["stages"][name]
        fp32 = entry["variants"]["fp32"]
        onnx_path = manifest.path(fp32["file"])
        if fp32.get("data_file"):
            manifest.verify([fp32["data_file"]])
        profile = stage_profile(name, entry, overrides)
        dims = stage_dims(name, entry, overrides)
        for precision in precisions:
            rel = trt_rel(name, precision)
            with progress.step(f"{name}: TensorRT {precision} engine"):
                t0 = time.perf_counter()
                cal_info: dict[str, Any] | None = None
                calibration = None
                if precision == "int8":
                    calibration, skipped = calibration_batches(calib_dir, name, [t["name"] for t in entry["inputs"]])  # type: ignore[arg-type]
                    cal_info = {
                        "dir": str(calib_dir),
                        "batches": len(calibration),
                        "skipped_other_shapes": skipped,
                        "shape": {k: list(v.shape) for k, v in calibration[0].items()},
                        "method": "IInt8EntropyCalibrator2",
                    }
                with writer.write(rel) as tmp:
                    build_engine(
                        onnx_path,
                        tmp,
                        profile,
                        precision,
                        workspace_gb=workspace_gb,
                        calibration=calibration,
                        calibration_cache=writer.root / f"tensorrt/{name}.calib",
                        version_compatible=version_compatible,
                    )
                rec: dict[str, Any] = {
                    "file": rel,
                    "onnx": fp32["file"],
                    "precision": precision,
                    "profile": profile,
                    "build_seconds": round(time.perf_counter() - t0, 2),
                }
                if cal_info:
                    rec["calibration"] = cal_info
                if parity:
                    rec["parity"] = measure_trt_parity(writer.root / rel, onnx_path, entry, dims, precision)
                built.setdefault(name, {})[precision] = rec
    prev = (writer.previous or {}).get("tensorrt", {})
    merged = {k: dict(v) for k, v in prev.get("stages", {}).items()}
    for name, recs in built.items():
        merged.setdefault(name, {}).update(recs)
    section = {
        "tensorrt_version": trt.__version__,
        "gpu": gpu,
        "compute_capability": cc,
        "version_compatible": version_compatible,
        "stages": merged,
        "note": "an engine runs only with this TensorRT version on this GPU architecture",
    }
    sections: dict[str, Any] = {"tensorrt": section}
    if not same_dir:
        sections.update({k: manifest.data[k] for k in ("model", "onnx", "gguf") if k in manifest.data})
    result = writer.finish(sections)
    progress.note(f"{sum(len(v) for v in built.values())} TensorRT engine(s) written to {writer.root / 'tensorrt'}")
    return result


def measure_trt_parity(plan: Path, onnx_path: Path, entry: Mapping[str, Any], dims: Mapping[str, Mapping[str, int]], precision: str) -> dict[str, Any]:
    """Engine vs ONNX Runtime fp32 (CPU) at the stage's parity shapes clipped to the profile."""
    from emo_stream.export.onnx_export import (
        compare_outputs,
        ort_session,
        tolerance_for,
    )
    from emo_stream.export.stages import sample_tensors
    from emo_stream.runtime.tensorrt import TensorRTStageRuntime

    inputs = tensor_specs(entry["inputs"])
    shapes = profile_shapes(inputs, dims, [s["dims"] for s in entry["variants"]["fp32"]["parity"]["per_shape"]])
    ref_sess = ort_session(onnx_path)
    rt = TensorRTStageRuntime(plan, stage=entry.get("name", plan.stem), precision=precision)
    per_shape = []
    try:
        for i, d in enumerate(shapes):
            feeds = sample_tensors(inputs, d, seed=101 + i)
            names = [o.name for o in ref_sess.get_outputs()]
            ref = dict(zip(names, ref_sess.run(names, feeds)))
            cmp = compare_outputs(ref, rt.run(feeds))
            per_shape.append({"dims": d, **{k: cmp[k] for k in ("max_abs", "max_rel", "ref_max", "bool_mismatches")}})
    finally:
        rt.close()
    result = {
        "reference": "onnxruntime fp32 CPU",
        "shapes": len(per_shape),
        "per_shape": per_shape,
        "max_abs": max(s["max_abs"] for s in per_shape),
        "max_rel": max(s["max_rel"] for s in per_shape),
        "ref_max": max(s["ref_max"] for s in per_shape),
        "bool_mismatches": sum(s["bool_mismatches"] for s in per_shape),
    }
    result["tolerance"] = tolerance_for(result, "fp32" if precision == "fp32" else "fp16" if precision == "fp16" else "int8")
    return result
