"""Command-line front ends of the offline trainer: ``features``, ``train``, ``eval``,
``make-synthetic-set`` and ``dataset`` (manifest converters).

``emo_stream/cli.py`` registers them with ``add_parsers(sub)``; this module also
runs on its own (``python -m emo_stream.train.cli COMMAND ...``, which is what
``torchrun -m emo_stream.train.cli train ...`` needs). Every command returns an
exit code; user errors raise :class:`~emo_stream.errors.EmoStreamError`
subclasses, printed as one line (exit 2).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from emo_stream.errors import ConfigError


def _threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


def _model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model (whose encoders run)")
    g.add_argument("--weights", default=None, help="model directory (EmotionLlama.save_pretrained / emo-stream import / a train run's model/)")
    g.add_argument("--tiny", default=None, choices=["v1", "v2"], help="the tiny random test model (fixed --seed) instead of --weights")
    g.add_argument("--seed", type=int, default=0, help="tiny model seed (default 0)")
    g.add_argument("--label-set", default="mer2023", help="label set of the tiny model (default mer2023)")


def _feature_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("windows and encoders (must match what the stream will use)")
    g.add_argument("--windows", default="clip", choices=["clip", "stream"], help="one window per sample (clip) or the stream's grid")
    g.add_argument("--frames", type=int, default=8, help="frames per window (the stream's window.frames_per_window)")
    g.add_argument("--window-s", type=float, default=2.0, help="window length for --windows stream")
    g.add_argument("--hop-s", type=float, default=0.5, help="hop for --windows stream")
    g.add_argument("--face-detector", default="none", choices=["none", "retinaface", "haar"], help="the engine's face_detector option")
    g.add_argument("--face-crop-fraction", type=float, default=0.6, help="the engine's centre-crop size")
    g.add_argument("--dtype", default="float32", choices=["float32", "float16"], help="stored feature precision")
    g.add_argument("--shard-size", type=int, default=256, help="samples per shard")


def _settings_from_args(a: argparse.Namespace) -> Any:
    from emo_stream.train.config import FeaturesSection

    return FeaturesSection(
        windows=a.windows,
        frames_per_window=a.frames,
        window_s=a.window_s,
        hop_s=a.hop_s,
        face_detector=a.face_detector,
        face_crop_fraction=a.face_crop_fraction,
        dtype=a.dtype,
        shard_size=a.shard_size,
    ).settings()


def _label_set_of(a: argparse.Namespace) -> str:
    """The label set of the model --tiny/--weights names, without building it."""
    if a.tiny:
        return a.label_set
    cfg = Path(a.weights) / "config.json"
    try:
        return str(json.loads(cfg.read_text(encoding="utf-8"))["config"]["label_set"])
    except (OSError, ValueError, KeyError, TypeError):
        from emo_stream.errors import ModelFileError

        raise ModelFileError(f"{cfg} is not the config.json of an emo_stream model directory") from None


def _load_model(a: argparse.Namespace) -> Any:
    from emo_stream.train.config import ModelSection
    from emo_stream.train.trainer import build_model

    if bool(a.weights) == bool(a.tiny):
        raise ConfigError("give exactly one of --weights DIR or --tiny v1|v2")
    return build_model(ModelSection(tiny=a.tiny, seed=a.seed, weights=a.weights, label_set=a.label_set) if a.tiny else ModelSection(weights=a.weights))


# -- features ------------------------------------------------------------------------


def _add_features(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "features",
        help="run the frozen encoders once over a dataset into a feature cache (resumable)",
        description="Read each clip through the stream's own sources, scheduler and emotion-llama engine, and store the "
        "encoder outputs in a sharded safetensors cache with an index. Either --config TRAIN.yaml (every split of a "
        "training config, with its model and features section) or --manifest + --out with --weights/--tiny.",
    )
    p.add_argument("--config", type=Path, default=None, help="training config: extract all of its splits")
    p.add_argument("--manifest", type=Path, default=None, help="dataset manifest (.jsonl/.json)")
    p.add_argument("--out", type=Path, default=None, help="cache directory (with --manifest)")
    _model_args(p)
    _feature_args(p)
    p.add_argument("--overwrite", action="store_true", help="replace a cache made with other encoders/settings")
    p.add_argument("--limit", type=int, default=None, help="encode at most N new samples, then stop (resume later)")
    p.add_argument("--device", default="cpu", help="torch device for the encoders (default cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_features)


def cmd_features(a: argparse.Namespace) -> int:
    from emo_stream.train.dataset import read_manifest
    from emo_stream.train.features import extract_features

    _threads(a.threads)
    jobs: list[tuple[Path, Path]] = []
    if a.config is not None:
        if a.manifest is not None or a.out is not None or a.weights or a.tiny:
            raise ConfigError("--config takes the splits, model and feature settings from the config; drop --manifest/--out/--weights/--tiny")
        from emo_stream.train.config import TrainConfig
        from emo_stream.train.trainer import build_model

        cfg = TrainConfig.from_yaml(a.config)
        model = build_model(cfg.model)
        settings = cfg.features.settings()
        d = cfg.data
        assert d is not None and d.train is not None
        for split in (d.train, d.eval):
            if split is not None:
                jobs.append((Path(split.manifest), Path(split.cache)))
        for st in cfg.stages:
            if st.manifest:
                jobs.append((Path(st.manifest), Path(st.cache)))  # type: ignore[arg-type]
        jobs = list(dict.fromkeys(jobs))
    else:
        if a.manifest is None or a.out is None:
            raise ConfigError("give --config TRAIN.yaml, or --manifest M --out CACHE (with --weights DIR or --tiny v1)")
        if bool(a.weights) == bool(a.tiny):
            raise ConfigError("give exactly one of --weights DIR or --tiny v1|v2")
        settings = _settings_from_args(a)
        from emo_stream.outputs import make_dir, refuse_alias

        refuse_alias({"--out": a.out}, {"--manifest": a.manifest, "--weights": a.weights})
        make_dir(a.out, f"feature cache {a.out}")
        read_manifest(a.manifest, _label_set_of(a))  # report manifest problems before loading a model
        model = _load_model(a)
        jobs = [(a.manifest, a.out)]
    for manifest_path, cache in jobs:
        manifest = read_manifest(manifest_path, model.label_set)
        summary = extract_features(manifest, model, cache, settings, device=a.device, overwrite=a.overwrite, progress=not a.no_progress, limit=a.limit)
        print(f"emo-stream: features: {summary.line()}", file=sys.stderr)
    return 0


# -- train -----------------------------------------------------------------------------


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train Emotion-LLaMA's projector/fusion and LoRA on cached features (stages, curriculum, checkpoints)",
        description="Instruction-tune on feature caches made by `emo-stream features`: stage-wise (projector only, then "
        "LoRA + projector), perception-to-cognition curriculum, cosine LR with warmup, gradient accumulation, atomic "
        "checkpoints; --resume continues exactly. Scales with torchrun (DDP/FSDP): "
        "`torchrun --nproc_per_node N -m emo_stream.train.cli train --config C.yaml`.",
    )
    p.add_argument("--config", type=Path, required=True, help="training config YAML (see configs/train/)")
    p.add_argument("--out", type=Path, default=None, help="run directory (default: the config's run_dir)")
    p.add_argument("--resume", action="store_true", help="continue from the run directory's latest checkpoint")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (overrides the config)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--stop-after-steps", type=int, default=None, help=argparse.SUPPRESS)  # simulate a killed run (tests)
    p.set_defaults(func=cmd_train)


def cmd_train(a: argparse.Namespace) -> int:
    import dataclasses

    from emo_stream.train.config import TrainConfig
    from emo_stream.train.trainer import Trainer

    cfg = TrainConfig.from_yaml(a.config)
    if a.out is not None:
        from emo_stream.outputs import refuse_alias

        refuse_alias({"--out": a.out}, {"--config": a.config})
    if a.threads:
        cfg = dataclasses.replace(cfg, threads=a.threads)
    res = Trainer(cfg, a.out, resume=a.resume, progress=False if a.no_progress else None, stop_after=a.stop_after_steps).run()
    from emo_stream.train.trainer import dist_info

    if dist_info().main:
        msg = f"emo-stream: train: {res.steps} steps in {res.run_dir}"
        if res.final_loss is not None:
            msg += f", final loss {res.final_loss:.4f}"
        if res.metrics:
            msg += (
                f"; held-out accuracy {res.metrics['accuracy']:.3f} (chance {res.metrics['chance_accuracy']:.3f}), "
                f"weighted F1 {res.metrics['weighted_f1']:.3f}, UAR {res.metrics['uar']:.3f}"
            )
        if res.model_dir:
            msg += f"; model: {res.model_dir}"
        if res.stopped_early:
            msg += " (stopped early; continue with --resume)"
        print(msg, file=sys.stderr)
    return 0


# -- eval ------------------------------------------------------------------------------


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate a model on a split: weighted F1, accuracy/WAR, UAR, confusion PNG, predictions",
        description="Predict every sample of a manifest with a model directory and write predictions.jsonl, metrics.json "
        "(weighted F1 as MER2023/Emotion-LLaMA, accuracy = WAR and UAR as DFEW) and confusion.png. With --rationale: "
        "open-label hit rate (MER-UniBench style) and EMER-style clue/label overlap by a local judge (an approximation).",
    )
    p.add_argument("--model", type=Path, required=True, help="model directory (e.g. RUN/model from `emo-stream train`)")
    p.add_argument("--manifest", type=Path, required=True, help="the split to evaluate")
    p.add_argument("--cache", type=Path, default=None, help="its feature cache (default: extracted into OUT/cache)")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument(
        "--mode", default="score", choices=["score", "generate"], help="label scoring (the engine's way) or generated answers (Emotion-LLaMA's eval)"
    )
    p.add_argument("--rationale", action="store_true", help="also generate [reason] answers (hit rate, EMER overlap)")
    p.add_argument("--judge", default="lexical", choices=["none", "lexical", "llm"], help="EMER overlap judge (llm: local GGUF via llama.cpp)")
    p.add_argument("--judge-model", default=None, help="GGUF for --judge llm (default: the packaged SmolLM2-135M)")
    p.add_argument("--no-subtitles", action="store_true", help="leave transcripts out of the prompt")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=None)
    _feature_args(p)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_eval)


def cmd_eval(a: argparse.Namespace) -> int:
    from emo_stream.model.emotion_llama import EmotionLlama
    from emo_stream.outputs import make_dir, refuse_alias
    from emo_stream.train.dataset import read_manifest
    from emo_stream.train.evaluate import evaluate
    from emo_stream.train.features import FeatureCache, extract_features

    refuse_alias({"--out": a.out}, {"--model": a.model, "--manifest": a.manifest, "--cache": a.cache})
    make_dir(a.out, f"eval output directory {a.out}")  # before the model loads, not after the predictions
    _threads(a.threads)
    model = EmotionLlama.from_pretrained(a.model, device=a.device)
    manifest = read_manifest(a.manifest, model.label_set)
    cache_dir = a.cache if a.cache is not None else a.out / "cache"
    if a.cache is None:
        extract_features(manifest, model, cache_dir, _settings_from_args(a), device=a.device, progress=not a.no_progress)
    cache = FeatureCache(cache_dir)
    cache.check_model(model)
    judge = None
    if a.rationale and a.judge != "none":
        from emo_stream.train.judge import make_judge

        judge = make_judge(a.judge, a.judge_model, a.threads)
    metrics, _ = evaluate(
        model,
        manifest,
        cache,
        a.out,
        use_subtitles=not a.no_subtitles,
        batch_size=a.batch_size,
        mode=a.mode,
        rationale=a.rationale,
        max_new_tokens=a.max_new_tokens,
        judge=judge,
        progress=not a.no_progress,
    )
    line = (
        f"emo-stream: eval: n={metrics['n']} accuracy/WAR {metrics['accuracy']:.4f} (chance {metrics['chance_accuracy']:.4f}), "
        f"UAR {metrics['uar']:.4f}, weighted F1 {metrics['weighted_f1']:.4f}"
    )
    if "open_label_hit_rate" in metrics:
        line += f", open-label hit rate {metrics['open_label_hit_rate']:.4f}"
    if "emer" in metrics:
        line += f", EMER overlap clue {metrics['emer']['clue_overlap']:.2f} label {metrics['emer']['label_overlap']:.2f} ({metrics['emer']['judge']})"
    print(line + f"; written to {a.out}", file=sys.stderr)
    return 0


# -- synthetic set --------------------------------------------------------------------------


def _add_synthetic(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "make-synthetic-set",
        help="generate a small labelled audio-visual set (espeak-ng speech + real faces with expression-like transforms)",
        description="A learnability set for any machine: espeak-ng sentences with emotional wording and prosody, real face "
        "photos (scikit-image) with expression-like warps, colour and motion, muxed with FFmpeg; writes clips and "
        "train/test manifests. It proves the trainer learns end to end; it says nothing about real-world accuracy.",
    )
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--label-set", default="mer2023")
    p.add_argument("--labels", default=None, help="comma-separated subset of the label set's labels")
    p.add_argument("--per-label", type=int, default=10)
    p.add_argument("--test-fraction", type=float, default=0.3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=64, help="video frame size (square, even)")
    p.add_argument("--fps", type=float, default=15.0)
    p.add_argument("--max-seconds", type=float, default=2.0)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_synthetic)


def cmd_synthetic(a: argparse.Namespace) -> int:
    from emo_stream.train.synthetic import make_synthetic_set

    s = make_synthetic_set(
        a.out,
        label_set=a.label_set,
        labels=a.labels.split(",") if a.labels else None,
        per_label=a.per_label,
        test_fraction=a.test_fraction,
        seed=a.seed,
        size=a.size,
        fps=a.fps,
        max_seconds=a.max_seconds,
        progress=not a.no_progress,
        overwrite=a.overwrite,
    )
    print(f"emo-stream: make-synthetic-set: {s.n_clips} clips ({', '.join(s.labels)}) in {s.root}; manifests {s.train.name}, {s.test.name}", file=sys.stderr)
    return 0


# -- dataset converters ---------------------------------------------------------------------


def _add_dataset(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dataset", help="check manifests and convert MERR / labelled folders into manifests")
    kinds = p.add_subparsers(dest="dataset_command", required=True, metavar="ACTION")
    c = kinds.add_parser("check", help="validate a manifest (every problem with its line number)")
    c.add_argument("--manifest", type=Path, required=True)
    c.add_argument("--label-set", default=None)
    c.set_defaults(func=cmd_dataset_check)
    m = kinds.add_parser("convert-merr", help="Emotion-LLaMA's MERR/MER2023 layout -> manifest")
    m.add_argument("--annotation", type=Path, required=True, help="'name [frames] label [valence]' text file")
    m.add_argument("--out", type=Path, required=True, help="manifest to write (.jsonl)")
    m.add_argument("--video-dir", type=Path, default=None, help="folder of name.mp4/name.avi clips")
    m.add_argument("--transcription", type=Path, default=None, help="CSV with name,sentence")
    m.add_argument("--coarse-json", type=Path, default=None, help="MERR_coarse_grained.json ({name: {caption}})")
    m.add_argument("--fine-json", type=Path, default=None, help="MERR_fine_grained.json ({name: {smp_reason_caption}})")
    m.add_argument(
        "--feature-dir",
        action="append",
        default=[],
        metavar="VIEW=DIR",
        help="precomputed features (name.npy) for a view (global/face/temporal/audio); default: mae_340_UTT, maeV_399_UTT, HL-UTT when present",
    )
    m.add_argument("--label-set", default="merr")
    m.set_defaults(func=cmd_convert_merr)
    f = kinds.add_parser("convert-folder", help="root/<label>/<clip> (+ clip.txt transcript, clip.reason.txt) -> manifest")
    f.add_argument("--root", type=Path, required=True)
    f.add_argument("--out", type=Path, required=True)
    f.add_argument("--label-set", default="mer2023")
    f.set_defaults(func=cmd_convert_folder)


def cmd_dataset_check(a: argparse.Namespace) -> int:
    from emo_stream.train.dataset import read_manifest

    m = read_manifest(a.manifest, a.label_set)
    print(json.dumps({"manifest": str(m.path), "label_set": m.label_set.id, "samples": len(m), "labels": m.label_counts()}))
    return 0


def cmd_convert_merr(a: argparse.Namespace) -> int:
    from emo_stream.cli_args import parse_assignments
    from emo_stream.outputs import refuse_alias
    from emo_stream.train.dataset import convert_merr

    dirs = parse_assignments(a.feature_dir, "--feature-dir", "VIEW")
    refuse_alias(
        {"--out": a.out}, {"--annotation": a.annotation, "--transcription": a.transcription, "--coarse-json": a.coarse_json, "--fine-json": a.fine_json}
    )
    m = convert_merr(
        a.annotation,
        a.out,
        video_dir=a.video_dir,
        transcription=a.transcription,
        coarse_json=a.coarse_json,
        fine_json=a.fine_json,
        feature_dirs=dirs or None,
        label_set=a.label_set,
    )
    print(f"emo-stream: dataset: {len(m)} samples -> {m.path}", file=sys.stderr)
    return 0


def cmd_convert_folder(a: argparse.Namespace) -> int:
    from emo_stream.train.dataset import convert_folder

    m = convert_folder(a.root, a.out, label_set=a.label_set)
    print(f"emo-stream: dataset: {len(m)} samples -> {m.path}", file=sys.stderr)
    return 0


# -- registration ------------------------------------------------------------------------------


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Register ``features``, ``train``, ``eval``, ``make-synthetic-set`` and ``dataset``."""
    _add_features(subparsers)
    _add_train(subparsers)
    _add_eval(subparsers)
    _add_synthetic(subparsers)
    _add_dataset(subparsers)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m emo_stream.train.cli ...`` (what torchrun launches): the one ``emo-stream`` entry point."""
    from emo_stream.cli import main as emo_stream_main

    return emo_stream_main(argv)


if __name__ == "__main__":
    sys.exit(main())
