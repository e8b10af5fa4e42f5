"""``emo-stream export onnx|tensorrt|gguf``: argparse wiring for the export commands.

``add_parser(subparsers)`` registers ``export``; each sub-command's ``func``
takes the parsed Namespace and returns an exit code. User errors raise
:class:`~emo_stream.errors.EmoStreamError` subclasses (the CLI prints one line).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from emo_stream.errors import ConfigError


def add_parser(subparsers: Any) -> None:
    """Register ``export`` and its sub-commands on the CLI's sub-parser action."""
    p = subparsers.add_parser(
        "export",
        help="export a model to deployment artifacts (ONNX, TensorRT, GGUF) with a manifest",
        description="Write deployment artifacts of an Emotion-LLaMA model into an export directory: ONNX encoders and "
        "projector (export onnx), TensorRT engines built from them (export tensorrt), and the LLaMA as GGUF for "
        "llama.cpp (export gguf). manifest.json (written last) lists every file with its sha256, shapes, precisions and "
        "measured errors; `emo-stream run --engine emotion-llama-export -o export=DIR` runs from it.",
    )
    kinds = p.add_subparsers(dest="export_kind", required=True, metavar="FORMAT")

    o = kinds.add_parser(
        "onnx",
        help="encoders and projector/fusion as ONNX (dynamo exporter) with parity vs torch",
        description="Export every encoder and the projector (v1) or conv-attention fusion (v2) as ONNX with "
        "dynamic batch/time/frame axes; measure ONNX Runtime vs torch at 3+ shapes per file.",
    )
    _model_args(o)
    o.add_argument("--precision", action="append", default=[], metavar="P", help="extra variants besides fp32: fp16, int8 (repeatable or comma-separated)")
    o.add_argument("--stages", default=None, help="comma-separated subset: global,face,temporal,audio,projector,fusion")
    o.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    o.add_argument("--external-data", default="auto", choices=["auto", "yes", "no"], help="weights in a .onnx.data file beside each graph (auto: above 1.5 GB)")
    o.add_argument("--max-batch", type=int, default=8, help="largest batch in the recorded dynamic ranges (TensorRT profiles)")
    o.add_argument("--max-audio-s", type=float, default=30.0, help="longest HuBERT input in the recorded ranges")
    o.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads for the parity runs")
    o.set_defaults(func=cmd_onnx)

    t = kinds.add_parser(
        "tensorrt",
        help="TensorRT engines from an ONNX export (needs TensorRT and a GPU)",
        description="Build TensorRT engines for each ONNX stage with optimisation profiles from the manifest; "
        "write them beside the manifest (or into --out, which receives a copy of the export).",
    )
    t.add_argument("--onnx", required=True, type=Path, help="export directory written by `export onnx`")
    t.add_argument("--out", type=Path, default=None, help="output export directory (default: the --onnx directory)")
    t.add_argument("--precision", action="append", default=[], metavar="P", help="fp16 (default), int8, fp32; repeatable")
    t.add_argument("--stages", default=None, help="comma-separated subset of the exported stages")
    t.add_argument("--profile", type=Path, default=None, help="profile file (JSON/YAML) overriding dynamic-axis ranges, e.g. export/profiles/robot.json")
    t.add_argument(
        "--dim",
        action="append",
        default=[],
        metavar="NAME=MIN:OPT:MAX",
        help="override one dynamic axis (batch=1:1:4, audio.samples=1600:32000:160000); repeatable",
    )
    t.add_argument("--calib", type=Path, default=None, help="INT8 calibration: directory of cached stage inputs (.npz)")
    t.add_argument("--workspace-gb", type=float, default=4.0, help="builder workspace limit")
    t.add_argument("--version-compatible", action="store_true", help="build version-compatible engines (runnable with tensorrt-lean)")
    t.add_argument("--no-parity", action="store_true", help="skip the engine vs ONNX Runtime check")
    t.add_argument("--quiet", "-q", action="store_true", help="no progress lines")
    t.set_defaults(func=cmd_tensorrt)

    g = kinds.add_parser(
        "gguf",
        help="the LLaMA with LoRA merged as GGUF for llama.cpp, quantized",
        description="Merge LoRA into the LLaMA, write GGUF (F16) and quantize with llama.cpp; record in the "
        "manifest the projector output width (n_embd) the GGUF expects.",
    )
    _model_args(g)
    g.add_argument("--quant", action="append", default=[], metavar="Q", help="Q4_K_M, Q8_0 or F16 (repeatable or comma-separated; default Q8_0)")
    g.add_argument("--threads", type=int, default=0, help="quantization threads (0: llama.cpp's default)")
    g.add_argument("--no-parity", action="store_true", help="skip the llama.cpp vs torch label-probability check")
    g.set_defaults(func=cmd_gguf)


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", required=True, help="model directory written by EmotionLlama.save_pretrained / `emo-stream import`, or tiny / tiny-v2 (random, fixed seed)"
    )
    p.add_argument("--out", required=True, type=Path, help="export directory, e.g. export/NAME/")
    p.add_argument("--seed", type=int, default=0, help="seed of the tiny models")
    p.add_argument("--force", action="store_true", help="replace an export of a different model in --out")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress lines")


def _csv(values: Any) -> list[str]:
    out: list[str] = []
    for v in values or ():
        if v is not None:
            out += [x.strip() for x in str(v).split(",") if x.strip()]
    return out


def _progress(args: argparse.Namespace) -> Any:
    from emo_stream.export.common import Progress

    return Progress(enabled=not getattr(args, "quiet", False))


def cmd_onnx(args: argparse.Namespace) -> int:
    from emo_stream.export.common import parse_precisions
    from emo_stream.export.onnx_export import PRECISIONS, export_onnx
    from emo_stream.export.stages import ExportLimits

    precisions = parse_precisions(args.precision, PRECISIONS, "--precision")
    if args.max_batch < 1 or args.max_audio_s <= 0:
        raise ConfigError("--max-batch must be >= 1 and --max-audio-s > 0")
    limits = ExportLimits(max_batch=args.max_batch, max_audio_s=args.max_audio_s, opt_audio_s=min(2.0, args.max_audio_s))
    _check_out(args.out, model=args.model)
    m = export_onnx(
        args.model,
        args.out,
        precisions=precisions or ("fp32",),
        stages=_csv([args.stages]) or None,
        opset=args.opset,
        external_data=args.external_data,
        limits=limits,
        seed=args.seed,
        threads=args.threads,
        force=args.force,
        progress=_progress(args),
    )
    rows = []
    for name, s in m["onnx"]["stages"].items():
        for prec, v in s["variants"].items():
            rows.append(
                f"  {name:<9} {prec:<5} max_abs {v['parity']['max_abs']:.2e}  max_rel {v['parity']['max_rel']:.2e}  "
                f"({v['parity']['shapes']} shapes)  {v['file']}"
            )
    print(f"emo-stream: ONNX export in {Path(args.out)}:\n" + "\n".join(rows))
    return 0


def cmd_tensorrt(args: argparse.Namespace) -> int:
    from emo_stream.export.common import parse_precisions
    from emo_stream.export.tensorrt_export import (
        TRT_PRECISIONS,
        export_tensorrt,
        load_profile_file,
        merge_overrides,
    )

    precisions = parse_precisions(args.precision, TRT_PRECISIONS, "--precision") or ("fp16",)
    overrides = merge_overrides(load_profile_file(args.profile) if args.profile else None, args.dim)
    if args.out is not None:  # default: beside the ONNX files, which is the point; elsewhere it must be writable
        from emo_stream.outputs import make_dir

        make_dir(args.out, f"export directory {args.out}")
    m = export_tensorrt(
        args.onnx,
        args.out,
        precisions=precisions,
        stages=_csv([args.stages]) or None,
        overrides=overrides,
        calib_dir=args.calib,
        workspace_gb=args.workspace_gb,
        version_compatible=args.version_compatible,
        parity=not args.no_parity,
        progress=_progress(args),
    )
    rows = []
    for name, recs in m["tensorrt"]["stages"].items():
        for prec, r in recs.items():
            par = r.get("parity")
            err = f"max_abs {par['max_abs']:.2e} vs ORT fp32" if par else "parity not measured"
            rows.append(f"  {name:<9} {prec:<5} {err}  {r['file']}")
    print(f"emo-stream: TensorRT {m['tensorrt']['tensorrt_version']} engines on {m['tensorrt']['gpu']}:\n" + "\n".join(rows))
    return 0


def cmd_gguf(args: argparse.Namespace) -> int:
    from emo_stream.export.common import parse_precisions
    from emo_stream.export.gguf_export import QUANTS, export_gguf

    quants = parse_precisions(args.quant, QUANTS, "--quant") or ("Q8_0",)
    _check_out(args.out, model=args.model)
    m = export_gguf(
        args.model, args.out, quants=quants, seed=args.seed, threads=args.threads, parity=not args.no_parity, force=args.force, progress=_progress(args)
    )
    g = m["gguf"]
    rows = []
    for q, v in g["variants"].items():
        par = v.get("parity") or {}
        diff = par.get("label_prob_max_abs_diff")
        rows.append(
            f"  {q:<7} {v['bytes'] / 1e6:8.2f} MB  "
            + (f"label prob diff vs torch {diff:.2e}" if diff is not None else "parity not measured")
            + f"  {v['file']}"
        )
    print(f"emo-stream: GGUF in {Path(args.out)} (projector output width {g['projector_output_width']}):\n" + "\n".join(rows))
    return 0


def _check_out(out: Path, **inputs: Any) -> None:
    """Before any model loads: --out must be creatable/writable and must not be an input directory."""
    from emo_stream.outputs import make_dir, refuse_alias

    refuse_alias({"--out": out}, {f"--{k}": v for k, v in inputs.items()})
    make_dir(out, f"export directory {out}")


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - convenience for `python -m emo_stream.export.cli`
    """``python -m emo_stream.export.cli ...``: the one ``emo-stream`` entry point (same errors, signals, exit codes)."""
    from emo_stream.cli import main as emo_stream_main

    return emo_stream_main(argv)  # argv as before: ["export", "onnx", ...]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


__all__ = ["add_parser", "cmd_gguf", "cmd_onnx", "cmd_tensorrt"]
