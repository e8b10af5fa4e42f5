"""``emo-stream export onnx``: every encoder and the projector/fusion as ONNX, with measured errors.

For each stage of :mod:`emo_stream.export.stages`:

1. ``torch.export.export(strict=False)`` with ``torch.export.Dim`` dynamic axes
   (batch, face crops, audio samples, fusion token counts), then the dynamo
   ONNX exporter (``torch.onnx.export`` on the ``ExportedProgram``; opset 18 by
   default, which TensorRT 8.6+ and every current ONNX Runtime read). Handing
   the exporter an ``ExportedProgram`` matters: given a module, it silently
   falls back to ``draft_export`` when tracing fails and can return a graph
   with *fixed* shapes. After export every declared dynamic axis is checked to
   be symbolic in the ONNX graph.
2. Single file, or ``<stage>.<precision>.onnx`` + ``.onnx.data`` (external data)
   when the weights approach protobuf's 2 GiB limit (``external_data="auto"``).
3. Parity: torch and ONNX Runtime (CPU provider) run the same seeded inputs at
   >= 3 shapes (different batch sizes and lengths, absent modalities included);
   the max abs error and the relative error (max abs error / max |torch output|)
   per shape and overall go into the manifest with a tolerance (twice the
   measured error, floored at a precision-dependent fraction of the output
   scale). An fp32 export whose relative error exceeds ``max_fp32_rel_error``
   (1e-3) is refused: that means a broken graph, not rounding.
4. Optional variants from the fp32 graph: ``fp16`` (onnxruntime's float16
   converter, float32 inputs/outputs kept) and ``int8`` (ONNX Runtime dynamic
   quantization: int8 weights, activations quantized per call), each with its
   own measured errors.

Files are written atomically and ``manifest.json`` last (see
:mod:`emo_stream.export.artifacts`).
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emo_stream.errors import ConfigError
from emo_stream.export.artifacts import ExportWriter
from emo_stream.export.common import (
    ExportError,
    MissingDependencyError,
    Progress,
    SourceModel,
    check_same_model,
    load_source_model,
    model_fingerprint,
    model_section,
    write_common_files,
)
from emo_stream.export.stages import (
    ExportLimits,
    StageSpec,
    check_stage_subset,
    stage_specs,
)

PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_OPSET = 18
#: Weights above this go to external data (protobuf's hard limit is 2 GiB).
EXTERNAL_DATA_BYTES = 1_500_000_000
#: An fp32 graph must match torch this closely (relative to the output scale) or the export is refused.
MAX_FP32_REL_ERROR = 1e-3
#: Tolerance floor per precision, as a fraction of the output scale (max |torch output|).
TOLERANCE_FLOOR = {"fp32": 1e-5, "fp16": 2e-3, "int8": 2e-2}
ERROR_DEFINITION = "max_abs = max |onnxruntime - torch| over all outputs' elements; max_rel = max_abs / max |torch output| (per output, then max)"


def onnx_rel(stage: str, precision: str) -> str:
    return f"onnx/{stage}.{precision}.onnx"


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporter's and quantizer's chatter (warnings, root-logger notes) for one step."""
    logger = logging.getLogger()
    torch_logs = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._export", "torch.fx.experimental.symbolic_shapes", "onnxscript")]
    levels = [lg.level for lg in torch_logs]
    old = logger.level
    logger.setLevel(logging.ERROR)
    for lg in torch_logs:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(old)
        for lg, lv in zip(torch_logs, levels):
            lg.setLevel(lv)


@contextlib.contextmanager
def _export_friendly_model() -> Iterator[None]:
    """Make the model code traceable with symbolic batch sizes, for the duration of an export.

    ``emo_stream.model.projectors._batch_size`` collects batch sizes in a Python
    ``set``; hashing a symbolic size makes ``torch.export`` specialise the batch
    axis to the traced value. During export it is replaced by a version that
    returns the first tensor's (symbolic) batch size -- identical for consistent
    inputs, which the stage wrappers guarantee.
    """
    from emo_stream.model import projectors

    original = projectors._batch_size

    def first_batch_size(*tensors: Any) -> Any:
        given = [t for t in tensors if t is not None]
        if not given:
            return original(*tensors)
        return given[0].shape[0]

    projectors._batch_size = first_batch_size
    try:
        yield
    finally:
        projectors._batch_size = original


@contextlib.contextmanager
def _cached_torchlib_registry() -> Iterator[None]:
    """Build the exporter's torchlib operator registry once per export run, not once per stage (~1.5 s each).

    Private API of ``torch.onnx``; when it is not there the exporter runs unchanged.
    """
    try:
        from torch.onnx._internal.exporter import _registration as reg

        original = reg.ONNXRegistry.__dict__["from_torchlib"]
        func = original.__func__
    except (ImportError, KeyError, AttributeError):
        yield
        return
    cache: dict[Any, Any] = {}

    def cached(cls: Any, *args: Any, **kwargs: Any) -> Any:
        key = (cls, args, tuple(sorted(kwargs.items())))
        if key not in cache:
            cache[key] = func(cls, *args, **kwargs)
        return cache[key]

    # a monkeypatch of torch's classmethod (undone below), which mypy refuses as a method assignment
    reg.ONNXRegistry.from_torchlib = classmethod(cached)  # type: ignore[method-assign, assignment]
    try:
        yield
    finally:
        reg.ONNXRegistry.from_torchlib = original  # type: ignore[method-assign]


def _param_bytes(module: Any) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters()) + sum(b.numel() * b.element_size() for b in module.buffers())


def export_stage_graph(spec: StageSpec, path: Path, opset: int = DEFAULT_OPSET, external_data: bool = False) -> list[Path]:
    """Export one stage's fp32 graph to ``path`` (+ ``path.data``); return the files written."""
    import torch

    feeds = spec.sample(spec.trace_dims())
    args = tuple(torch.from_numpy(feeds[n]) for n in spec.input_names)
    module = spec.module.float().eval()
    with _quiet(), _export_friendly_model(), torch.no_grad():
        try:
            ep = torch.export.export(module, args, dynamic_shapes=spec.torch_dynamic_shapes(), strict=False)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ExportError(f"torch.export failed for stage {spec.name!r}: {type(exc).__name__}: {first}") from exc
        program = torch.onnx.export(
            ep,
            args,
            dynamo=True,
            input_names=spec.input_names,
            output_names=spec.output_names,
            opset_version=opset,
            external_data=external_data,
            optimize=True,
            verbose=False,
        )
        assert program is not None  # dynamo=True always returns an ONNXProgram
        program.save(str(path), external_data=external_data)
    check_dynamic_axes(spec, path)
    files = [path]
    data = path.with_name(path.name + ".data")
    if data.is_file():
        files.append(data)
    return files


def check_dynamic_axes(spec: StageSpec, path: Path) -> None:
    """Every declared dynamic axis must be symbolic in the graph, every fixed one equal to the spec."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    graph_inputs = {i.name: i for i in model.graph.input}
    problems = []
    for t in spec.inputs:
        gi = graph_inputs.get(t.name)
        if gi is None:
            problems.append(f"input {t.name} missing")
            continue
        dims = gi.type.tensor_type.shape.dim
        if len(dims) != len(t.shape):
            problems.append(f"{t.name} has rank {len(dims)}, expected {len(t.shape)}")
            continue
        for axis, (d, want) in enumerate(zip(dims, t.shape)):
            if isinstance(want, str) and not d.dim_param:
                problems.append(f"{t.name} axis {axis} ({want}) was fixed to {d.dim_value}")
            if isinstance(want, int) and d.dim_value != want:
                problems.append(f"{t.name} axis {axis} is {d.dim_param or d.dim_value}, expected {want}")
    if problems:
        raise ExportError(f"ONNX graph of stage {spec.name!r} does not have the declared shapes: {'; '.join(problems)}")


def ort_session(path: str | Path, providers: Sequence[str] = ("CPUExecutionProvider",), threads: int | None = None) -> Any:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise MissingDependencyError(f"measuring ONNX parity needs onnxruntime: pip install onnxruntime ({exc})") from None
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    from emo_stream.runtime.onnxruntime import open_session

    return open_session(path, what="exported ONNX", sess_options=opts, providers=providers, fix="export it again")


def compare_outputs(ref: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Errors of ``got`` against ``ref`` (see :data:`ERROR_DEFINITION`); bool outputs count mismatches."""
    max_abs = max_rel = ref_max = 0.0
    mismatches = 0
    per_output: dict[str, dict[str, float]] = {}
    for name, r in ref.items():
        g = got[name]
        if g.shape != r.shape:
            raise ExportError(f"output {name}: shape {g.shape} vs torch {r.shape}")
        if r.dtype == np.bool_:
            mm = int(np.count_nonzero(g.astype(bool) != r))
            mismatches += mm
            per_output[name] = {"mismatches": mm}
            continue
        err = float(np.abs(g.astype(np.float64) - r.astype(np.float64)).max()) if r.size else 0.0
        scale = float(np.abs(r).max()) if r.size else 0.0
        rel = err / scale if scale > 0 else err
        if not np.isfinite(g).all():
            err = rel = float("inf")
        per_output[name] = {"max_abs": err, "max_rel": rel}
        max_abs, max_rel, ref_max = max(max_abs, err), max(max_rel, rel), max(ref_max, scale)
    return {"max_abs": max_abs, "max_rel": max_rel, "ref_max": ref_max, "bool_mismatches": mismatches, "outputs": per_output}


def measure_parity(spec: StageSpec, session: Any, shapes: Sequence[Mapping[str, int]] | None = None, seed: int = 1) -> dict[str, Any]:
    """Run torch and an ONNX Runtime session on the same seeded inputs at each shape."""
    per_shape = []
    for i, dims in enumerate(shapes or spec.parity_shapes):
        feeds = spec.sample(dims, seed=seed + i)
        ref = spec.run_torch(feeds)
        outs = session.run(spec.output_names, {k: feeds[k] for k in spec.input_names})
        cmp = compare_outputs(ref, dict(zip(spec.output_names, outs)))
        per_shape.append({"dims": dict(dims), **{k: cmp[k] for k in ("max_abs", "max_rel", "ref_max", "bool_mismatches")}})
    return {
        "shapes": len(per_shape),
        "max_abs": max(s["max_abs"] for s in per_shape),
        "max_rel": max(s["max_rel"] for s in per_shape),
        "ref_max": max(s["ref_max"] for s in per_shape),
        "bool_mismatches": sum(s["bool_mismatches"] for s in per_shape),
        "per_shape": per_shape,
        "definition": ERROR_DEFINITION,
    }


def tolerance_for(parity: Mapping[str, Any], precision: str) -> dict[str, float]:
    """The tolerance a runtime check may hold this file to: 2x measured, floored by precision."""
    scale = max(float(parity["ref_max"]), 1e-12)
    abs_tol = max(2.0 * float(parity["max_abs"]), TOLERANCE_FLOOR[precision] * scale)
    return {"abs": abs_tol, "rel": abs_tol / scale}


FP16_KEEP_FLOAT32 = ("IsInf", "IsNaN")


def convert_fp16(src: Path, dst: Path, external_data: bool) -> None:
    import onnx
    from onnxruntime.transformers.float16 import (
        DEFAULT_OP_BLOCK_LIST,
        convert_float_to_float16,
    )

    model = onnx.load(str(src))  # external data is loaded from beside src
    # IsInf/IsNaN take float16 only from opset 20; keep them (and their inputs) in float32.
    m16 = convert_float_to_float16(model, keep_io_types=True, op_block_list=[*DEFAULT_OP_BLOCK_LIST, *FP16_KEEP_FLOAT32])
    if external_data:
        onnx.save(m16, str(dst), save_as_external_data=True, all_tensors_to_one_file=True, location=dst.name + ".data", size_threshold=1024)
    else:
        onnx.save(m16, str(dst))


#: ONNX Runtime dynamic quantization settings. ``reduce_range`` (7-bit weights) is not optional on x86
#: without VNNI: u8 x s8 products saturate the 16-bit intermediate of AVX2 kernels (measured on
#: the tiny projector: 36% relative error with it off, 1% with it on). Convolutions stay float32:
#: dynamically quantized HuBERT feature convs gave 21% relative error, MatMul/Gemm only 1.7%.
INT8_OPS = ("MatMul", "Gemm", "Attention")
INT8_SETTINGS = {
    "method": "onnxruntime.quantization.quantize_dynamic",
    "weight_type": "QInt8",
    "per_channel": True,
    "reduce_range": True,
    "op_types": list(INT8_OPS),
}


def quantize_int8(src: Path, dst: Path, external_data: bool) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet():
        quantize_dynamic(
            str(src),
            str(dst),
            weight_type=QuantType.QInt8,
            per_channel=True,
            reduce_range=True,
            op_types_to_quantize=list(INT8_OPS),
            use_external_data_format=external_data,
        )


def _variant_files(path: Path) -> list[Path]:
    data = path.with_name(path.name + ".data")
    return [path] + ([data] if data.is_file() else [])


def export_onnx(
    model: str | Path | SourceModel,
    out: str | Path,
    *,
    precisions: Sequence[str] = ("fp32",),
    stages: Sequence[str] | None = None,
    opset: int = DEFAULT_OPSET,
    external_data: str = "auto",
    limits: ExportLimits | None = None,
    seed: int = 0,
    threads: int | None = 1,
    max_fp32_rel_error: float = MAX_FP32_REL_ERROR,
    force: bool = False,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Export ``model`` (a model dir, ``tiny``/``tiny-v2`` or a :class:`SourceModel`) to ``out``; return the manifest.

    ``precisions``: fp32 is always produced (the others are made from it).
    ``external_data``: "auto" (by size), "yes" or "no". ``threads``: ONNX Runtime
    threads for the parity runs.
    """
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(f"ONNX export needs onnx and onnxscript: pip install onnx onnxscript ({exc})") from None
    import torch

    precisions = tuple(dict.fromkeys(("fp32", *precisions)))
    bad = [p for p in precisions if p not in PRECISIONS]
    if bad:
        raise ConfigError(f"ONNX precision must be one of {PRECISIONS}, got {bad}")
    if external_data not in ("auto", "yes", "no"):
        raise ConfigError(f"external_data must be auto, yes or no, got {external_data!r}")
    if opset < 17:
        raise ConfigError(f"opset {opset} is too old for LayerNormalization; use 17 or newer")
    progress = progress or Progress(enabled=False)
    if not isinstance(model, SourceModel):
        progress.note(f"loading model {model}")
    src = model if isinstance(model, SourceModel) else load_source_model(model, seed=seed)
    src.model.eval()
    specs = stage_specs(src.model, limits)
    names = check_stage_subset(stages, specs)
    progress.total = 1 + len(names) * (1 + len(precisions))
    writer = ExportWriter(out)
    fingerprint = model_fingerprint(src.model)
    check_same_model(writer, fingerprint, force)
    prev_stages = dict((writer.previous or {}).get("onnx", {}).get("stages", {}))

    with progress.step("model config and tokenizer"):
        write_common_files(writer, src.model)
    stage_entries: dict[str, Any] = {}
    torch_threads = torch.get_num_threads()
    with _cached_torchlib_registry(), tempfile.TemporaryDirectory(dir=writer.root, prefix=".onnx.partial-") as tmp_root:
        tmp = Path(tmp_root)
        for name in names:
            spec = specs[name]
            ext = external_data == "yes" or (external_data == "auto" and _param_bytes(spec.module) > EXTERNAL_DATA_BYTES)
            variants: dict[str, Any] = {}
            fp32_path = tmp / Path(onnx_rel(name, "fp32")).name
            with progress.step(f"{name}: export fp32 graph"):
                export_stage_graph(spec, fp32_path, opset, ext)
            for precision in precisions:
                path = tmp / Path(onnx_rel(name, precision)).name
                with progress.step(f"{name}: {precision} parity at {len(spec.parity_shapes)} shapes"):
                    if precision == "fp16":
                        convert_fp16(fp32_path, path, ext)
                    elif precision == "int8":
                        quantize_int8(fp32_path, path, ext)
                    t0 = time.perf_counter()
                    session = ort_session(path, threads=threads)
                    try:
                        torch.set_num_threads(threads or torch_threads)
                        parity = measure_parity(spec, session)
                    finally:
                        torch.set_num_threads(torch_threads)
                    del session
                    if precision == "fp32" and not parity["max_rel"] <= max_fp32_rel_error:
                        raise ExportError(
                            f"stage {name}: ONNX Runtime differs from torch by {parity['max_rel']:.3g} of the output scale "
                            f"(> {max_fp32_rel_error:g}); not writing a broken graph"
                        )
                    if precision == "fp32" and parity["bool_mismatches"]:
                        raise ExportError(f"stage {name}: {parity['bool_mismatches']} mask values differ between ONNX Runtime and torch")
                    variants[precision] = {
                        "file": onnx_rel(name, precision),
                        "data_file": onnx_rel(name, precision) + ".data" if ext else None,
                        "precision": precision,
                        "io_dtype": "float32",
                        **({"quantization": INT8_SETTINGS} if precision == "int8" else {}),
                        **({"conversion": "onnxruntime.transformers.float16 (keep_io_types)"} if precision == "fp16" else {}),
                        "parity": parity,
                        "tolerance": tolerance_for(parity, precision),
                        "parity_seconds": round(time.perf_counter() - t0, 3),
                    }
            for precision in precisions:
                for f in reversed(_variant_files(tmp / Path(onnx_rel(name, precision)).name)):  # data first, graph last
                    writer.commit(f, f"onnx/{f.name}")
            stage_entries[name] = {**spec.describe(), "external_data": ext, "variants": variants}

    same_model = (writer.previous or {}).get("model", {}).get("fingerprint") == fingerprint
    merged = {k: v for k, v in prev_stages.items() if same_model and k not in stage_entries}
    merged.update(stage_entries)
    onnx_section = {
        "opset": opset,
        "exporter": f"torch.export (strict=False) + torch.onnx dynamo exporter, torch {torch.__version__}",
        "stage_order": [n for n in ("global", "face", "temporal", "audio", "projector", "fusion") if n in merged],
        "stages": merged,
        "parity_provider": "CPUExecutionProvider",
    }
    keep = {f"onnx/{Path(v['file']).name}" for s in merged.values() for v in s["variants"].values()}
    keep |= {v["data_file"] for s in merged.values() for v in s["variants"].values() if v.get("data_file")}
    stale = [r for r in (writer.previous or {}).get("files", {}) if r.startswith("onnx/") and r not in keep]
    manifest = writer.finish({"model": model_section(src, fingerprint), "onnx": onnx_section}, drop_files_of=stale)
    progress.note(f"ONNX export of {len(names)} stage(s) x {len(precisions)} precision(s) written to {writer.root} in {progress.elapsed():.1f} s")
    return manifest
