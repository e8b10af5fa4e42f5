"""``emo-stream train``: Emotion-LLaMA instruction tuning on cached features.

What is optimised
-----------------
Emotion-LLaMA's objective: the LLM's next-token loss on the *answer* of an
instruction, the prompt being Emotion-LLaMA's template with the projected
multimodal tokens in its slots (:mod:`emo_stream.model.prompts`); every answer
ends with ``</s>``. Tasks:

* ``emotion``: instruction from the task's pool, answer = the label word;
* ``reason``: instruction from the reason pool, answer = the sample's
  explanation (fine ``reason``, else coarse ``caption``) + " Therefore, it is
  inferred that his emotional state is: <label>" (Emotion-LLaMA's wording).

Stages (``TrainConfig.stages``) follow Emotion-LLaMA's two stages and
Emotion-LLaMAv2's perception-to-cognition curriculum: typically stage 1 trains
the projector/fusion only on recognition with coarse labels; stage 2 trains
LoRA + projector on fine labels with the ``reason`` share ramping up
(``curriculum: linear``), so recognition is learned first and reasoning after.
Encoders and the LLM's own weights are always frozen.

Determinism and exact resume
----------------------------
Everything random is a pure function of (seed, stage, step, position in the
global batch): the epoch permutations of each stage's items, each sample's task
and instruction, and the torch RNG (dropout), which is re-seeded from (seed, step, micro-batch
index) before every micro-batch. A checkpoint therefore only needs the step, the
trainable tensors, the optimizer and scheduler state; it also stores the torch,
numpy and Python RNG states and the sampler position (restored on resume),
so a run killed at any point and resumed with ``--resume`` recomputes exactly
the same steps: on CPU the final weights and metrics are bitwise identical
(tested). The loss of a global batch is the sum of its answer-token losses
divided by its number of answer tokens, however the batch is split into
micro-batches and processes. Each process takes a contiguous share of the
global batch, so with the same ``global_batch_size`` and ``micro_batch_size``,
1 process (accumulating) and N processes (all-reducing) compute the same
micro-batches with the same dropout masks and the same gradients (a rank's
loss is scaled by N, DDP divides by N: both exact in floating point); measured
on CPU with gloo: identical loss curves (see ``configs/train/README.md``).

Checkpoints (``run_dir/checkpoints/step-NNNNNN/``): ``trainable.safetensors``
(projector + LoRA tensors), ``optim.pt`` (optimizer + scheduler, read back with
``weights_only=True``), ``rng.safetensors`` and ``state.json``; written into a
``.partial`` directory and renamed, then ``checkpoints/latest`` is replaced
atomically, so a kill at any moment leaves the previous checkpoint usable.
Tensors and optimizer state are stored unsharded and keyed by parameter name,
so a run resumes on any number of processes and under DDP or FSDP.

Precision: ``precision: auto`` is bf16 autocast on a CUDA device that supports
it, else fp32; ``bf16`` also works on CPU; ``fp16`` (CUDA only) adds a GradScaler.
The encoders stay on the CPU during training (only cached features are read).

Outputs: ``run_dir/metrics.jsonl`` (one line per step: loss, per-task loss,
lr, grad norm, tokens; eval lines), optional TensorBoard events, the final
model ``run_dir/model/`` (``EmotionLlama.save_pretrained``: what
``emo-stream run --engine emotion-llama --weights run_dir/model`` streams and
``emo-stream export`` exports) and ``run_dir/eval/`` + ``run_dir/final_metrics.json``.

Distributed: under ``torchrun`` (``RANK``/``WORLD_SIZE`` set) the process group
is initialised (gloo on CPU, nccl on CUDA), every rank takes its share of each
global batch, and the trainable modules are wrapped in DDP (or, with
``distributed.strategy: fsdp``, the LLM's decoder layers, embeddings, head and
the projector are sharded with ``fully_shard``).

Where the parts live (one job each; every name stays importable from here):
the training loop, checkpoint writing and outputs in this module;
:mod:`.model_setup` (the model and its trainable groups), :mod:`.batches`
(items, global batches, examples), :mod:`.loss` (the answer-token loss),
:mod:`.checkpoints` (format, integrity, RNG state), :mod:`.distributed`
(process layout, collectives).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from emo_stream.durable import fsync_path, sha256_file
from emo_stream.errors import ConfigError
from emo_stream.outputs import make_dir, write_text, writing
from emo_stream.train.batches import (
    REASON_SUFFIX,
    Example,
    Item,
    SplitData,
    epoch_permutation,
    global_batch_indices,
    make_example,
)
from emo_stream.train.checkpoints import (
    CKPT_FILES,
    CKPT_FORMAT,
    CKPT_VERSION,
    TrainingDiverged,
    _assert_finite,
    _rng_state,
    _set_rng_state,
    checkpoint_candidates,
    checkpoint_problem,
    config_fingerprint,
    latest_checkpoint,
)
from emo_stream.train.config import StageSection, TrainConfig
from emo_stream.train.dataset import Manifest, read_manifest
from emo_stream.train.distributed import DistInfo, _all_reduce_sum, _barrier, _dist, dist_info
from emo_stream.train.features import FeatureCache, collate
from emo_stream.train.loss import AnswerLoss
from emo_stream.train.model_setup import _to_device, build_model, reinit_llm, set_trainable, trainable_names

#: The names this module had before it was split (issue 15): they stay importable from here.
__all__ = [
    "CKPT_FILES",
    "CKPT_FORMAT",
    "CKPT_VERSION",
    "REASON_SUFFIX",
    "AnswerLoss",
    "DistInfo",
    "Example",
    "Item",
    "SplitData",
    "TrainResult",
    "Trainer",
    "TrainingDiverged",
    "add_provenance",
    "build_model",
    "checkpoint_candidates",
    "checkpoint_problem",
    "config_fingerprint",
    "dist_info",
    "epoch_permutation",
    "global_batch_indices",
    "latest_checkpoint",
    "make_example",
    "reinit_llm",
    "set_trainable",
    "train",
    "trainable_names",
]

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------
# the trainer
# ---------------------------------------------------------------------------


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    final_loss: float | None
    model_dir: Path | None
    metrics: dict[str, Any] | None
    resumed_from: int = 0
    stopped_early: bool = False


class Trainer:
    """Runs a :class:`TrainConfig` (see module docstring).

    Args:
        config: the training config.
        run_dir: output folder (default: ``config.run_dir``).
        resume: continue from ``run_dir/checkpoints/latest``; without it an
            existing run dir with checkpoints is an error.
        progress: tqdm bar (rank 0), overriding ``log.progress`` when given.
        stop_after: stop after this many global steps without a final
            checkpoint or save (simulates a killed run; for tests).
    """

    def __init__(
        self,
        config: TrainConfig,
        run_dir: str | Path | None = None,
        *,
        resume: bool = False,
        progress: bool | None = None,
        stop_after: int | None = None,
        max_answer_tokens: int = 160,
    ) -> None:
        self.cfg = config
        self.run_dir = Path(run_dir or config.run_dir).expanduser()
        self.resume = resume
        self.progress = config.log.progress if progress is None else progress
        self.stop_after = stop_after
        self.max_answer_tokens = max_answer_tokens
        self.info = dist_info()
        self._tb: Any = None
        self._owns_group = False

    # -- setup ----------------------------------------------------------------------
    def _device(self) -> torch.device:
        want = self.cfg.device
        if want == "auto":
            return torch.device(f"cuda:{self.info.local_rank}") if torch.cuda.is_available() else torch.device("cpu")
        dev = torch.device(want)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError("device: cuda requested but no CUDA device is available")
        return dev

    def _autocast(self) -> tuple[Any, Any]:
        """(autocast context factory, GradScaler or None) for the configured precision."""
        dev = self.device
        prec = self.cfg.precision
        if prec == "auto":
            prec = "bf16" if dev.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
        self.precision = prec
        if prec == "fp32":
            return contextlib.nullcontext, None
        if prec == "fp16" and dev.type != "cuda":
            raise ConfigError("precision fp16 needs a CUDA device (use bf16 or fp32 on CPU)")
        dtype = torch.bfloat16 if prec == "bf16" else torch.float16
        scaler = torch.amp.GradScaler("cuda") if prec == "fp16" else None
        return (lambda: torch.autocast(device_type=dev.type, dtype=dtype)), scaler

    def _init_dist(self) -> None:
        if self.info.world <= 1:
            return
        dist = _dist()
        if not dist.is_initialized():
            backend = self.cfg.distributed.backend
            if backend == "auto":
                backend = "nccl" if self.device.type == "cuda" else "gloo"
            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
            dist.init_process_group(backend=backend)
            self._owns_group = True

    def _log_jsonl(self, entry: dict[str, Any]) -> None:
        if not self.info.main:
            return
        with writing(self.run_dir / "metrics.jsonl"), open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\n")
        if self._tb is not None:
            step = entry.get("step", 0)
            for k, v in entry.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step":
                    self._tb.add_scalar(f"{entry.get('kind', 'train')}/{k}", v, step)

    def _truncate_log(self, step: int) -> None:
        p = self.run_dir / "metrics.jsonl"
        if not self.info.main or not p.is_file():
            return
        keep = []
        for raw in p.read_text(encoding="utf-8").splitlines():
            try:
                e = json.loads(raw)
            except json.JSONDecodeError:
                continue
            if int(e.get("step", 0)) <= step:
                keep.append(raw)
        write_text(p, "".join(k + "\n" for k in keep))

    # -- checkpoint I/O -----------------------------------------------------------------
    def _full_tensors(self, names: Sequence[str]) -> dict[str, Tensor]:
        """Full (unsharded) copies of the named parameters (collective under FSDP: every rank calls)."""
        params = dict(self.model.named_parameters())
        out = {}
        for n in names:
            p = params[n].detach()
            if hasattr(p, "full_tensor"):
                p = p.full_tensor()
            out[n] = p.to("cpu", copy=True).contiguous()
        return out

    def _fsdp(self) -> bool:
        return self.info.world > 1 and self.cfg.distributed.strategy == "fsdp"

    def _optim_names(self) -> list[str]:
        """Parameter names in the optimizer's order (the ids of ``optimizer.state_dict()``)."""
        name_of = {id(p): n for n, p in self.model.named_parameters()}
        return [name_of[id(p)] for g in self.optimizer.param_groups for p in g["params"]]

    def _optim_state(self) -> dict[str, Any]:
        """The optimizer state, unsharded, keyed like ``optimizer.state_dict()`` (collective under FSDP).

        Stored with the parameter names, so a checkpoint resumes under any
        strategy and number of processes (1 process, DDP, FSDP).
        """
        names = self._optim_names()
        if self._fsdp():
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                get_optimizer_state_dict,
            )

            # Any: torch types every entry as state-or-param_groups; "state" is the dict, "param_groups" the list
            full: dict[str, Any] = get_optimizer_state_dict(self.model, self.optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
            if not self.info.main:  # with cpu_offload the full state lands on rank 0 only
                return {}
            idx = {n: i for i, n in enumerate(names)}
            sd = {
                "state": {idx[k]: v for k, v in full["state"].items()},
                "param_groups": [{**g, "params": [idx[n] for n in g["params"]]} for g in full["param_groups"]],
            }
        else:
            sd = self.optimizer.state_dict()
        return {"names": names, "state_dict": sd}

    def save_checkpoint(self, step: int) -> Path | None:
        """Atomically write the state after ``step`` completed steps (rank 0 writes).

        Non-finite weights are refused before anything is written; a failed
        write (full disk) is one ``cannot write checkpoint ...`` error and leaves
        the previous checkpoints and the ``latest`` pointer as they were.
        """
        tensors = self._full_tensors(self.ever_trainable)
        _assert_finite(tensors, f"step {step}")  # every rank sees the same full tensors: all stop together
        optim = self._optim_state()
        if not self.info.main:
            _barrier(self.info)
            return None
        ck = self.run_dir / "checkpoints"
        name = f"step-{step:06d}"
        tmp = ck / f".{name}.partial"
        try:
            with writing(f"checkpoint {ck / name}"):
                return self._write_checkpoint(step, ck, name, tmp, tensors, optim)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # a failed write leaves no partial directory behind

    def _write_checkpoint(self, step: int, ck: Path, name: str, tmp: Path, tensors: dict[str, Tensor], optim: dict[str, Any]) -> Path:
        # Serialised in memory, written with plain file I/O: a full disk is then an OSError with
        # its real reason (torch.save / safetensors.save_file report it as opaque errors).
        from safetensors.torch import save as safetensors_bytes

        ck.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        (tmp / "trainable.safetensors").write_bytes(safetensors_bytes(tensors, metadata={"format": CKPT_FORMAT}))
        buf = io.BytesIO()
        torch.save({"optimizer": optim, "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict() if self.scaler is not None else None}, buf)
        (tmp / "optim.pt").write_bytes(buf.getbuffer())
        rng_t, rng_meta = _rng_state()
        (tmp / "rng.safetensors").write_bytes(safetensors_bytes(rng_t))
        state = {
            "format": CKPT_FORMAT,
            "version": CKPT_VERSION,
            "step": step,
            "stage": self.stage_idx,
            "stage_name": self.cfg.stages[self.stage_idx].name,
            "config_fingerprint": config_fingerprint(self.cfg),
            "sampler": {
                "stage": self.stage_idx,
                "step_in_stage": step - self.cfg.stage_start(self.stage_idx),
                "global_batch_size": self.cfg.batch.global_batch_size,
            },
            "world_size": self.info.world,
            "rng": rng_meta,
            "time": time.time(),
            "files": {f: sha256_file(tmp / f) for f in CKPT_FILES},
        }
        (tmp / "state.json").write_text(json.dumps(state), encoding="utf-8")
        for f in tmp.iterdir():
            fsync_path(f)
        final = ck / name
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        fsync_path(ck)
        ptr_tmp = ck / "latest.partial"
        ptr_tmp.write_text(name, encoding="utf-8")
        fsync_path(ptr_tmp)
        os.replace(ptr_tmp, ck / "latest")
        fsync_path(ck)
        olds = sorted(d for d in ck.iterdir() if d.is_dir() and d.name.startswith("step-") and d.name != name)
        for d in olds[: max(0, len(olds) - (self.cfg.checkpoint.keep_last - 1))]:
            shutil.rmtree(d, ignore_errors=True)
        _barrier(self.info)
        return final

    def _load_checkpoint(self, d: Path) -> dict[str, Any]:
        from safetensors.torch import load_file

        state = json.loads((d / "state.json").read_text(encoding="utf-8"))
        if state.get("format") != CKPT_FORMAT:
            raise ConfigError(f"{d} is not a training checkpoint")
        if state.get("config_fingerprint") != config_fingerprint(self.cfg):
            raise ConfigError(
                f"checkpoint {d} was written with a different training config (model, data, batch, stages, seed or "
                "precision changed); resume with the same config, or start a new run dir"
            )
        tensors = load_file(str(d / "trainable.safetensors"))
        params = dict(self.model.named_parameters())
        missing = sorted(set(self.ever_trainable) - set(tensors))
        if missing:
            raise ConfigError(f"checkpoint {d} lacks {len(missing)} trainable tensors (e.g. {missing[:3]})")
        with torch.no_grad():
            for n, t in tensors.items():
                p = params[n]
                if hasattr(p, "device_mesh"):  # an FSDP-sharded DTensor: take this rank's shard of the full tensor
                    from torch.distributed.tensor import distribute_tensor

                    p.copy_(distribute_tensor(t.to(p.dtype), p.device_mesh, p.placements))
                else:
                    p.copy_(t.to(p.device, p.dtype))
        state["_rng_tensors"] = load_file(str(d / "rng.safetensors"))
        return state

    # -- stages ---------------------------------------------------------------------
    def _stage_data(self, idx: int) -> SplitData:
        st = self.cfg.stages[idx]
        key = (st.manifest or self.cfg.data.train.manifest, st.cache or self.cfg.data.train.cache, st.grain)  # type: ignore[union-attr]
        if key not in self._data_cache:
            self._data_cache[key] = SplitData(key[0], key[1], self.model, st.grain, self.fingerprints)
        return self._data_cache[key]

    def _begin_stage(self, idx: int) -> None:
        st = self.cfg.stages[idx]
        self.stage_idx = idx
        names = set_trainable(self.model, st.trainable)
        self.data = self._stage_data(idx)
        self.step_module = self._wrap(AnswerLoss(self.model))
        params = [p for n, p in self.model.named_parameters() if n in names]
        o = self.cfg.optim
        self.optimizer = torch.optim.AdamW(params, lr=st.lr, betas=(o.beta1, o.beta2), eps=o.eps, weight_decay=o.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _lr_lambda(st))
        self.trainable_now = sorted(names)

    def _wrap(self, module: nn.Module) -> nn.Module:
        if self.info.world <= 1:
            return module
        if self._fsdp():
            return module  # parameters were sharded in place by _shard_fsdp
        from torch.nn.parallel import DistributedDataParallel as DDP

        dev = [self.device.index] if self.device.type == "cuda" else None
        return DDP(module, device_ids=dev, find_unused_parameters=self.cfg.distributed.find_unused_parameters)

    def _shard_fsdp(self) -> None:
        from torch.distributed.fsdp import fully_shard

        llama = self.model.llm.base_llama()
        for layer in llama.model.layers:
            fully_shard(layer)
        for mod in (llama.model.embed_tokens, llama.model.norm, llama.lm_head, self.model.projector):
            fully_shard(mod)

    # -- run ------------------------------------------------------------------------
    def run(self) -> TrainResult:
        cfg = self.cfg
        info = self.info
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.device = self._device()
        self._init_dist()
        autocast, self.scaler = self._autocast()
        make_dir(self.run_dir, f"run directory {self.run_dir}")
        ckpt = self._resume_point()
        if info.main:
            write_text(self.run_dir / "config.yaml", _yaml(cfg.to_dict()))
            if ckpt is None and (self.run_dir / "metrics.jsonl").exists():
                (self.run_dir / "metrics.jsonl").unlink()
        self.model = _to_device(build_model(cfg.model), self.device)
        self.model.encoders.eval()
        from emo_stream.train.features import encoder_fingerprints

        self.fingerprints = encoder_fingerprints(self.model)
        self.ever_trainable = sorted({n for st in cfg.stages for n in trainable_names(self.model, st.trainable)})
        if info.world > 1 and cfg.distributed.strategy == "fsdp":
            self._shard_fsdp()
        self._data_cache: dict[tuple, SplitData] = {}
        eval_data = None
        data = cfg.data
        assert data is not None  # TrainConfig requires the data section
        if data.eval is not None:  # (checked on every rank: a bad split fails everywhere)
            eval_manifest = read_manifest(data.eval.manifest, self.model.label_set)
            eval_cache = FeatureCache(data.eval.cache)
            eval_cache.check_model(self.model, self.fingerprints)
            eval_data = (eval_manifest, eval_cache)

        start = 0
        state = None
        if ckpt is not None:
            state = self._load_checkpoint(ckpt)
            start = int(state["step"])
            self._truncate_log(start)
        total = cfg.total_steps
        if start >= total:
            log.info("run already complete at step %d", start)
        stage_idx = cfg.stage_at(min(start, total - 1))[0]
        self._begin_stage(stage_idx)
        if state is not None and int(state["stage"]) == stage_idx and start < total:
            opt = torch.load(ckpt / "optim.pt", weights_only=True)  # type: ignore[operator]
            self._load_optim(opt["optimizer"])
            self.scheduler.load_state_dict(opt["scheduler"])
            if self.scaler is not None and opt.get("scaler"):
                self.scaler.load_state_dict(opt["scaler"])
        if state is not None:
            _set_rng_state(state["_rng_tensors"], state["rng"])
        if cfg.log.tensorboard and info.main:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.run_dir / "tensorboard"))
            except ImportError:
                log.warning("log.tensorboard: the tensorboard package is not installed; logging to metrics.jsonl only")
        accum = cfg.batch.accumulation(info.world)
        bar = None
        if self.progress and info.main:
            from emo_stream.progress import progress_bar

            bar = progress_bar(total, start, "train", True, unit="step")
        last_loss = None
        stopped = False
        self.model.train()
        self.model.encoders.eval()
        step = start
        try:
            while step < total:
                if self.stop_after is not None and step >= self.stop_after:
                    stopped = True
                    break
                idx, st, k = cfg.stage_at(step)
                if idx != self.stage_idx:
                    self._begin_stage(idx)
                t0 = time.perf_counter()
                stats = self._train_step(step, idx, st, k, accum, autocast)
                last_loss = stats["loss"]
                step += 1
                if info.main and (step % cfg.log.every == 0 or step == total):
                    self._log_jsonl(
                        {"kind": "train", "step": step, "stage": st.name, **stats, "lr": self.scheduler.get_last_lr()[0], "seconds": time.perf_counter() - t0}
                    )
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{last_loss:.4f}", stage=st.name)
                if step % cfg.checkpoint.every == 0 or step == total:
                    self.save_checkpoint(step)
                if cfg.eval.every and step % cfg.eval.every == 0 and step < total and cfg.data.eval is not None:  # type: ignore[union-attr]
                    plain = self._plain_model()
                    if eval_data is not None and info.main:
                        self._run_eval(eval_data, step, None, plain)
                    _barrier(info)
                    self.model.train()
                    self.model.encoders.eval()
        finally:
            if bar is not None:
                bar.close()
        metrics = None
        model_dir = None
        if not stopped:
            _barrier(info)
            plain = self._plain_model()
            if info.main:
                model_dir = self._save_model(plain)
                if eval_data is not None and cfg.eval.at_end:
                    metrics = self._run_eval(eval_data, step, self.run_dir / "eval", plain)
                final = {
                    "steps": step,
                    "final_train_loss": last_loss,
                    "eval": metrics,
                    "model_dir": str(model_dir),
                    "precision": self.precision,
                    "world_size": info.world,
                }
                write_text(self.run_dir / "final_metrics.json", json.dumps(final, indent=2))
            _barrier(info)
        if self._tb is not None:
            self._tb.close()
        if self._owns_group:
            # every rank leaves together: a rank exiting while another still talks to it aborts the job
            _barrier(info)
            _dist().destroy_process_group()
            self._owns_group = False
        return TrainResult(self.run_dir, step, last_loss, model_dir, metrics, resumed_from=start if ckpt else 0, stopped_early=stopped)

    def _resume_point(self) -> Path | None:
        """The checkpoint to continue from: the newest valid one under ``--resume``.

        A damaged latest checkpoint (torn by a crash, truncated, bit-flipped)
        is skipped for the newest valid older one (``keep_last`` keeps them),
        said in one line; a config change is not damage and stays an error.
        """
        candidates = checkpoint_candidates(self.run_dir)
        if candidates and not self.resume:
            raise ConfigError(
                f"{self.run_dir} already holds a training run (checkpoint {candidates[0].name}); pass --resume to continue it or use another --out"
            )
        if not self.resume:
            return None
        if not candidates:
            raise ConfigError(f"--resume: no checkpoint in {self.run_dir / 'checkpoints'}")
        problems: list[tuple[str, str]] = []
        for d in candidates:
            why = checkpoint_problem(d)
            if why is None:
                if problems and self.info.main:
                    skipped = "; ".join(f"{n} ({w})" for n, w in problems)
                    msg = f"emo-stream: train: skipping unusable checkpoint {skipped}; resuming from {d.name}"
                    print(msg, file=sys.stderr, flush=True)
                    log.warning(msg)
                return d
            problems.append((d.name, why))
        raise ConfigError(
            f"--resume: no usable checkpoint in {self.run_dir / 'checkpoints'}: " + "; ".join(f"{n} ({w})" for n, w in problems) + "; start a new run dir"
        )

    def _load_optim(self, saved: dict[str, Any]) -> None:
        names = self._optim_names()
        if list(saved["names"]) != names:
            raise ConfigError("the checkpoint's optimizer holds other parameters than this stage trains; resume with the same config")
        sd = saved["state_dict"]
        if self._fsdp():
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                set_optimizer_state_dict,
            )

            full: dict[str, Any] = {
                "state": {names[int(i)]: v for i, v in sd["state"].items()},
                "param_groups": [{**g, "params": [names[int(i)] for i in g["params"]]} for g in sd["param_groups"]],
            }
            set_optimizer_state_dict(self.model, self.optimizer, full, options=StateDictOptions(full_state_dict=True))
        else:
            self.optimizer.load_state_dict(sd)

    def _train_step(self, step: int, stage_idx: int, st: StageSection, k: int, accum: int, autocast: Any) -> dict[str, float]:
        cfg, info = self.cfg, self.info
        g = cfg.batch.global_batch_size
        idx = global_batch_indices(cfg.seed, stage_idx, k, g, len(self.data))
        examples = [
            make_example(
                self.model,
                self.data.items[i],
                stage_idx,
                st,
                k,
                j,
                cfg.seed,
                cfg.data.use_subtitles,  # type: ignore[union-attr]
                self.max_answer_tokens,
            )
            for j, i in enumerate(idx)
        ]
        total_tokens = sum(len(e.answer_ids) for e in examples)
        # Contiguous shares: micro-batch m of the global batch is examples[m*mb:(m+1)*mb] on whichever rank
        # runs it, and its dropout masks come from a seed of (seed, step, m); so 1 or N processes compute
        # the same micro-batches with the same masks.
        per = g // info.world
        mine = examples[info.rank * per : (info.rank + 1) * per]
        mb = cfg.batch.micro_batch_size
        sums = torch.zeros(4, dtype=torch.float64)  # loss sum, emotion loss sum, emotion tokens, reason loss sum
        for a in range(accum):
            torch.manual_seed(int(np.random.SeedSequence([cfg.seed, step, info.rank * accum + a, 31]).generate_state(1)[0]))
            chunk = mine[a * mb : (a + 1) * mb]
            sync = a == accum - 1
            no_sync = getattr(self.step_module, "no_sync", None)  # DDP's; nn.Module's __getattr__ would type it a Tensor
            ctx = no_sync() if (not sync and no_sync is not None) else contextlib.nullcontext()
            with ctx:
                encoded = collate([self.data.cache.load(e.item.window) for e in chunk], self.device)
                with autocast():
                    losses, _ = self.step_module(encoded, [e.prompt for e in chunk], [e.answer_ids for e in chunk])
                loss = losses.sum() * (info.world / total_tokens)
                if self.scaler is not None:
                    self.scaler.scale(loss).backward()
                else:
                    loss.backward()
            with torch.no_grad():
                off = 0
                for e in chunk:
                    n = len(e.answer_ids)
                    s = float(losses[off : off + n].double().sum())
                    sums[0] += s
                    if e.task == "emotion":
                        sums[1] += s
                        sums[2] += n
                    else:
                        sums[3] += s
                    off += n
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        params = [p for p in self.model.parameters() if p.requires_grad]
        if cfg.optim.max_grad_norm > 0:
            gn = torch.nn.utils.clip_grad_norm_(params, cfg.optim.max_grad_norm)
        else:
            gn = torch.linalg.vector_norm(torch.stack([p.grad.detach().norm() for p in params if p.grad is not None]))
        if hasattr(gn, "full_tensor"):
            gn = gn.full_tensor()
        sums = _all_reduce_sum(sums, info)
        # The gradients are synchronised and the sums all-reduced, so every rank decides alike.
        # (With a GradScaler an inf gradient is its normal overflow signal: it skips the step itself.)
        bad = "loss" if not bool(torch.isfinite(sums).all()) else ("gradient norm" if self.scaler is None and not math.isfinite(float(gn)) else None)
        if bad:
            raise TrainingDiverged(
                f"training diverged at step {step + 1} (stage {st.name}): the {bad} is NaN/Inf; stopped before the update, "
                f"nothing non-finite was saved (last checkpoint: {getattr(latest_checkpoint(self.run_dir), 'name', 'none')}). "
                "Check the features (`emo-stream features` verifies every shard) or lower the stage's lr"
            )
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        emo_tokens = sum(len(e.answer_ids) for e in examples if e.task == "emotion")
        out = {
            "loss": float(sums[0]) / total_tokens,
            "tokens": total_tokens,
            "grad_norm": float(gn),
            "reason_share": sum(e.task == "reason" for e in examples) / len(examples),
        }
        if emo_tokens:
            out["loss_emotion"] = float(sums[1]) / emo_tokens
        if total_tokens - emo_tokens:
            out["loss_reason"] = float(sums[3]) / (total_tokens - emo_tokens)
        return out

    # -- outputs -----------------------------------------------------------------------
    def _plain_model(self) -> Any:
        """The trained model as a plain module on every rank that needs one.

        DDP / one process: the model itself. FSDP: the trainable tensors are
        gathered (a collective: every rank calls this) into a fresh unsharded
        copy built from the config on rank 0 (frozen weights equal the init).
        """
        if not self._fsdp():
            return self.model
        tensors = self._full_tensors(self.ever_trainable)
        if not self.info.main:
            return None
        plain = build_model(self.cfg.model)
        params = dict(plain.named_parameters())
        with torch.no_grad():
            for n, t in tensors.items():
                params[n].copy_(t)
        return _to_device(plain, self.device)

    def _save_model(self, model: Any) -> Path:
        d = self.run_dir / "model"
        tmp = self.run_dir / ".model.partial"
        try:
            from safetensors import SafetensorError

            with writing(f"model {d}", also=(SafetensorError,)):
                if tmp.exists():
                    shutil.rmtree(tmp)
                model.save_pretrained(tmp)
                add_provenance(tmp / "config.json", self._provenance())
                if d.exists():
                    shutil.rmtree(d)
                os.replace(tmp, d)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return d

    def _provenance(self) -> dict[str, Any]:
        """What the weights were trained on: manifest names and paths; ``synthetic`` when every training
        manifest is a ``make-synthetic-set`` one (its states must say so: no real-world accuracy)."""
        ls = self.model.label_set if hasattr(self.model, "label_set") else None
        paths = dict.fromkeys(str(st.manifest or self.cfg.data.train.manifest) for st in self.cfg.stages)  # type: ignore[union-attr]
        names = []
        for p in paths:
            try:
                names.append(read_manifest(p, ls).name)
            except Exception:
                names.append("")
        return {
            "train_manifests": list(paths),
            "manifest_names": names,
            "synthetic": bool(names) and all(n.startswith("synthetic") for n in names),
            "steps": sum(st.steps for st in self.cfg.stages),
        }

    def _run_eval(self, eval_data: tuple[Manifest, FeatureCache], step: int, out_dir: Path | None, model: Any) -> dict[str, Any]:
        from emo_stream.train.evaluate import evaluate

        manifest, cache = eval_data
        metrics, _ = evaluate(
            model,
            manifest,
            cache,
            out_dir,
            use_subtitles=self.cfg.data.use_subtitles,  # type: ignore[union-attr]
            batch_size=self.cfg.eval.batch_size,
        )
        self._log_jsonl(
            {"kind": "eval", "step": step, "accuracy": metrics["accuracy"], "weighted_f1": metrics["weighted_f1"], "uar": metrics["uar"], "n": metrics["n"]}
        )
        return metrics


def add_provenance(config_json: Path, provenance: dict[str, Any]) -> None:
    """Add the ``provenance`` block to a saved model's ``config.json`` (read by the exporters)."""
    meta = json.loads(config_json.read_text(encoding="utf-8"))
    meta["provenance"] = provenance
    config_json.write_text(json.dumps(meta, indent=2), encoding="utf-8")


def _lr_lambda(st: StageSection) -> Any:
    warm, n, floor = st.warmup_steps, st.steps, st.min_lr_ratio

    def f(k: int) -> float:
        if warm and k < warm:
            return (k + 1) / warm
        span = max(1, n - warm)
        prog = min(1.0, (k - warm) / span)
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * prog))

    return f


def _yaml(d: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(d, sort_keys=False)


def train(config: TrainConfig | str | Path, run_dir: str | Path | None = None, **kwargs: Any) -> TrainResult:
    """Run a training config (a :class:`TrainConfig` or a YAML path); see :class:`Trainer`."""
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_yaml(config)
    return Trainer(cfg, run_dir, **kwargs).run()
