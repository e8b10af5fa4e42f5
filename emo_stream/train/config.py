"""Training configuration (YAML), validated at load time like the stream config.

See ``configs/train/*.yaml`` for annotated examples. Unknown keys are errors.

Top-level sections: ``model`` (what to train), ``data`` (manifests + feature
caches), ``features`` (how ``emo-stream features --config`` builds those
caches), ``batch``, ``optim``, ``stages`` (the curriculum), ``checkpoint``,
``eval``, ``log``, ``distributed``, plus ``seed``, ``precision``, ``device``
and ``run_dir``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emo_stream.config import build_dataclass
from emo_stream.errors import ConfigError

TRAINABLE = ("projector", "lora")
TASKS = ("emotion", "reason")


def _req(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


@dataclass(frozen=True)
class ModelSection:
    """What is trained: exactly one of ``tiny`` / ``small`` / ``weights`` / ``llama_dir``.

    Attributes:
        tiny: "v1" or "v2": the tiny test-size Emotion-LLaMA, random encoders and
            LLM from ``seed`` (frozen; only the projector and LoRA learn).
        seed: seed of the tiny model (and of the small model's fresh projector/LoRA).
        small: "v1" or "v2": :meth:`EmotionLlamaConfig.small`, the small real
            model from shipped weights (ViT-S/14, Whisper tiny.en, SmolLM2-135M).
        weights: a model directory (``EmotionLlama.save_pretrained`` or
            ``emo-stream import emotion-llama``) to fine-tune.
        llama_dir: a local LLaMA-2 directory to start from with a fresh
            projector (with ``version`` and ``encoders``).
        version: "v1" or "v2" (``llama_dir`` only).
        encoders: ``{view: local transformers dir}`` (``llama_dir`` only);
            views without a dir must come as precomputed features.
        label_set: the labels the model scores (tiny / llama_dir).
        vit_precision: small only: the ViT-S/14 views in "fp32" or "int8"
            (dynamically quantized MatMuls; ~2x faster per image on a CPU).
        view_layout: small only: "sliding" (newest frame, its crop, newest + 6
            frames earlier: :meth:`EmotionLlamaConfig.small`'s default) or "clip"
            (first frame, middle crop, first + last frames). Measured held-out on
            the synthetic set: clip 0.67 (fp32) / 0.72 (int8), sliding 0.39 / 0.56;
            served, both encode 2 new images per window (the engine prefetches the
            settled older frame), so the shipped configs use "clip".
        llm_init_std: tiny only: re-initialise the (random, frozen) LLM's
            weights with this standard deviation instead of LLaMA's 0.02. A
            LLaMA at 0.02 is nearly blind to its inputs (its output is uniform
            over the vocabulary, loss ~ ln V, whatever the projector feeds it),
            unlike a pretrained one; a larger std gives a random LLM whose
            output depends on its inputs, so the projector and LoRA have
            something to steer. None keeps the model's own init.
    """

    tiny: str | None = None
    small: str | None = None
    seed: int = 0
    weights: str | None = None
    llama_dir: str | None = None
    version: str = "v1"
    encoders: Mapping[str, str] = field(default_factory=dict)
    label_set: str = "mer2023"
    llm_init_std: float | None = None
    vit_precision: str = "fp32"
    view_layout: str = "sliding"

    def __post_init__(self) -> None:
        from emo_stream.labels import get_label_set

        _req(self.llm_init_std is None or (self.tiny is not None and self.llm_init_std > 0), "model.llm_init_std applies to tiny models only and must be > 0")
        n = sum(x is not None for x in (self.tiny, self.small, self.weights, self.llama_dir))
        _req(n == 1, "model: give exactly one of tiny (v1/v2), small (v1/v2), weights (a model dir) or llama_dir")
        _req(self.tiny in (None, "v1", "v2"), f"model.tiny must be 'v1' or 'v2', got {self.tiny!r}")
        _req(self.small in (None, "v1", "v2"), f"model.small must be 'v1' or 'v2', got {self.small!r}")
        _req(
            self.vit_precision in ("fp32", "int8") and (self.vit_precision == "fp32" or self.small is not None),
            "model.vit_precision must be fp32 or int8, and applies to small models only",
        )
        _req(self.view_layout in ("sliding", "clip"), f"model.view_layout must be 'sliding' or 'clip', got {self.view_layout!r}")
        _req(self.view_layout == "sliding" or self.small is not None, "model.view_layout applies to small models only")
        _req(self.version in ("v1", "v2"), f"model.version must be 'v1' or 'v2', got {self.version!r}")
        get_label_set(self.label_set)


@dataclass(frozen=True)
class SplitSection:
    """A split: its manifest and the feature cache built from it."""

    manifest: str = ""
    cache: str = ""

    def __post_init__(self) -> None:
        _req(bool(self.manifest), "data split needs a manifest path")
        _req(bool(self.cache), "data split needs a cache path (where `emo-stream features` writes)")


@dataclass(frozen=True)
class DataSection:
    """``train`` (required), ``eval`` (optional, held out) and the prompt options.

    Attributes:
        use_subtitles: put each sample's transcript in the prompt (as
            Emotion-LLaMA). False trains/evaluates on audio-visual tokens only.
    """

    train: SplitSection | None = None
    eval: SplitSection | None = None
    use_subtitles: bool = True

    def __post_init__(self) -> None:
        _req(self.train is not None, "data.train is required (manifest + cache)")


@dataclass(frozen=True)
class FeaturesSection:
    """How ``emo-stream features --config`` extracts (see :class:`~emo_stream.train.features.FeatureSettings`)."""

    windows: str = "clip"
    frames_per_window: int = 8
    window_s: float = 2.0
    hop_s: float = 0.5
    face_detector: str = "none"
    face_crop_fraction: float = 0.6
    dtype: str = "float32"
    shard_size: int = 256

    def settings(self) -> Any:
        from emo_stream.config import StreamConfig
        from emo_stream.train.features import FeatureSettings

        stream = StreamConfig().replace(
            window={"frames_per_window": self.frames_per_window, "length_s": self.window_s, "hop_s": self.hop_s},
            buffers={"history_s": max(6.0, self.window_s + self.hop_s)},
        )
        return FeatureSettings(
            windows=self.windows,
            stream=stream,
            face_detector=self.face_detector,
            face_crop_fraction=self.face_crop_fraction,
            dtype=self.dtype,
            shard_size=self.shard_size,
        )


@dataclass(frozen=True)
class BatchSection:
    """``global_batch_size`` samples per optimizer step, split over processes and
    ``micro_batch_size`` chunks: accumulation = global / (micro x world size), which
    must be a whole number, so the same config gives the same optimisation on any
    number of processes."""

    global_batch_size: int = 8
    micro_batch_size: int = 8

    def __post_init__(self) -> None:
        _req(self.global_batch_size >= 1 and self.micro_batch_size >= 1, "batch sizes must be >= 1")

    def accumulation(self, world_size: int) -> int:
        per = self.micro_batch_size * world_size
        if self.global_batch_size % per:
            raise ConfigError(
                f"batch.global_batch_size {self.global_batch_size} is not a multiple of micro_batch_size {self.micro_batch_size} x {world_size} process(es)"
            )
        return self.global_batch_size // per


@dataclass(frozen=True)
class OptimSection:
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    max_grad_norm: float = 1.0

    def __post_init__(self) -> None:
        _req(self.weight_decay >= 0 and 0 <= self.beta1 < 1 and 0 <= self.beta2 < 1 and self.eps > 0, "optim: bad AdamW settings")
        _req(self.max_grad_norm >= 0, "optim.max_grad_norm must be >= 0 (0 = no clipping)")


@dataclass(frozen=True)
class StageSection:
    """One curriculum stage.

    Attributes:
        name: for logs and checkpoints.
        steps: optimizer steps.
        trainable: ``projector`` (the v1 projector or v2 fusion) and/or ``lora``.
        tasks: task -> weight (``emotion``: answer the label; ``reason``: answer
            the explanation, then Emotion-LLaMA's "Therefore, it is inferred
            that his emotional state is: <label>").
        curriculum: ``none`` (fixed task mix) or ``linear`` (perception to
            cognition: the ``reason`` share ramps from 0 to its configured
            weight over the stage, Emotion-LLaMAv2-style).
        grain: which samples: ``any``, ``coarse`` or ``fine`` (manifest ``grain``).
        lr: peak learning rate; ``warmup_steps`` linear warmup, then cosine to
            ``lr * min_lr_ratio``.
        manifest/cache: override ``data.train`` for this stage.
    """

    name: str = "stage"
    steps: int = 100
    trainable: tuple[str, ...] = ("projector",)
    tasks: Mapping[str, float] = field(default_factory=lambda: {"emotion": 1.0})
    curriculum: str = "none"
    grain: str = "any"
    lr: float = 1e-4
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    manifest: str | None = None
    cache: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "trainable", tuple(self.trainable))
        _req(self.steps >= 1, f"stage {self.name}: steps must be >= 1")
        _req(bool(self.trainable) and set(self.trainable) <= set(TRAINABLE), f"stage {self.name}: trainable must be a non-empty subset of {TRAINABLE}")
        _req(bool(self.tasks) and set(self.tasks) <= set(TASKS), f"stage {self.name}: tasks must be a non-empty mapping over {TASKS}")
        _req(
            all(float(v) >= 0 for v in self.tasks.values()) and sum(float(v) for v in self.tasks.values()) > 0,
            f"stage {self.name}: task weights must be >= 0 with a positive sum",
        )
        _req(self.curriculum in ("none", "linear"), f"stage {self.name}: curriculum must be 'none' or 'linear'")
        _req(self.grain in ("any", "coarse", "fine"), f"stage {self.name}: grain must be any, coarse or fine")
        _req(self.lr > 0, f"stage {self.name}: lr must be > 0")
        _req(0 <= self.warmup_steps <= self.steps, f"stage {self.name}: warmup_steps must be in [0, steps]")
        _req(0 <= self.min_lr_ratio <= 1, f"stage {self.name}: min_lr_ratio must be in [0, 1]")
        _req((self.manifest is None) == (self.cache is None), f"stage {self.name}: give both manifest and cache, or neither")

    def task_weights(self, progress: float) -> dict[str, float]:
        """Task mix at ``progress`` in [0, 1] through the stage."""
        w = {k: float(v) for k, v in self.tasks.items()}
        if self.curriculum == "linear" and "reason" in w:
            w["reason"] *= min(1.0, max(0.0, progress))
        if sum(w.values()) <= 0:
            w = {"emotion": 1.0}
        return w


@dataclass(frozen=True)
class CheckpointSection:
    every: int = 50
    keep_last: int = 2

    def __post_init__(self) -> None:
        _req(self.every >= 1 and self.keep_last >= 1, "checkpoint.every and keep_last must be >= 1")


@dataclass(frozen=True)
class EvalSection:
    every: int = 0
    batch_size: int = 16
    at_end: bool = True

    def __post_init__(self) -> None:
        _req(self.every >= 0 and self.batch_size >= 1, "eval.every must be >= 0 and batch_size >= 1")


@dataclass(frozen=True)
class LogSection:
    progress: bool = True
    tensorboard: bool = False
    every: int = 1

    def __post_init__(self) -> None:
        _req(self.every >= 1, "log.every must be >= 1")


@dataclass(frozen=True)
class DistributedSection:
    """``strategy``: ``ddp`` (default) or ``fsdp`` (the LLM's decoder layers and the
    whole model sharded with ``torch.distributed.fsdp.fully_shard``); only used
    under ``torchrun``. ``backend``: ``auto`` (nccl on CUDA, else gloo)."""

    strategy: str = "ddp"
    backend: str = "auto"
    find_unused_parameters: bool = True

    def __post_init__(self) -> None:
        _req(self.strategy in ("ddp", "fsdp"), f"distributed.strategy must be ddp or fsdp, got {self.strategy!r}")
        _req(self.backend in ("auto", "gloo", "nccl"), f"distributed.backend must be auto, gloo or nccl, got {self.backend!r}")


@dataclass(frozen=True)
class TrainConfig:
    model: ModelSection = field(default_factory=lambda: ModelSection(tiny="v1"))
    data: DataSection | None = None
    features: FeaturesSection = field(default_factory=FeaturesSection)
    batch: BatchSection = field(default_factory=BatchSection)
    optim: OptimSection = field(default_factory=OptimSection)
    stages: tuple[StageSection, ...] = ()
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    eval: EvalSection = field(default_factory=EvalSection)
    log: LogSection = field(default_factory=LogSection)
    distributed: DistributedSection = field(default_factory=DistributedSection)
    seed: int = 0
    precision: str = "auto"
    device: str = "auto"
    run_dir: str = "runs/train"
    threads: int = 0

    def __post_init__(self) -> None:
        _req(self.data is not None, "data section is required")
        _req(len(self.stages) >= 1, "stages: at least one stage is required")
        names = [s.name for s in self.stages]
        _req(len(set(names)) == len(names), f"stage names must be unique, got {names}")
        _req(self.precision in ("auto", "fp32", "bf16", "fp16"), f"precision must be auto, fp32, bf16 or fp16, got {self.precision!r}")
        _req(self.threads >= 0, "threads must be >= 0 (0 = torch's default)")

    @property
    def total_steps(self) -> int:
        return sum(s.steps for s in self.stages)

    def stage_at(self, step: int) -> tuple[int, StageSection, int]:
        """(stage index, stage, step within the stage) for global step ``step`` (0-based)."""
        start = 0
        for i, s in enumerate(self.stages):
            if step < start + s.steps:
                return i, s, step - start
            start += s.steps
        raise IndexError(step)

    def stage_start(self, index: int) -> int:
        return sum(s.steps for s in self.stages[:index])

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], base: Path | None = None) -> TrainConfig:
        cfg = build_dataclass(cls, data, "")
        return cfg if base is None else cfg.resolve_paths(base)

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        from emo_stream.structured_files import read_yaml

        p = Path(path).expanduser()
        # The project's one safe reader: alias bombs, deep nesting, FIFOs, huge or non-UTF-8 files are one line.
        data = read_yaml(p, what="training config")
        if not isinstance(data, Mapping):
            raise ConfigError(f"training config {p} must hold a mapping")
        return cls.from_dict(data, base=p.parent)

    def resolve_paths(self, base: Path) -> TrainConfig:
        """Relative paths in the file are relative to the config file's folder."""

        def rs(x: str) -> str:
            q = Path(x).expanduser()
            return str(q if q.is_absolute() else (base / q))

        def r(x: str | None) -> str | None:
            return None if x is None else rs(x)

        d = self.data
        assert d is not None
        data = dataclasses.replace(
            d,
            train=SplitSection(rs(d.train.manifest), rs(d.train.cache)) if d.train else None,
            eval=SplitSection(rs(d.eval.manifest), rs(d.eval.cache)) if d.eval else None,
        )
        m = self.model
        model = dataclasses.replace(m, weights=r(m.weights), llama_dir=r(m.llama_dir), encoders={k: rs(v) for k, v in m.encoders.items()})
        stages = tuple(dataclasses.replace(s, manifest=r(s.manifest), cache=r(s.cache)) for s in self.stages)
        return dataclasses.replace(self, data=data, model=model, stages=stages, run_dir=r(self.run_dir) or self.run_dir)


def _plain(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x
