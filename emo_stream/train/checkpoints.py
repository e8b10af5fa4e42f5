"""Training checkpoints: their format, integrity checks, which one to resume from, RNG state.

A checkpoint directory is trusted only when its ``state.json`` (written last)
records matching sha256s of the other files, so a torn or bit-flipped one is
skipped for an older one instead of reaching the optimizer. Writing is the
trainer's (it owns the optimizer and scheduler); split from it (issue 15).
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from emo_stream.durable import sha256_file
from emo_stream.errors import EmoStreamError
from emo_stream.train.config import TrainConfig

CKPT_FORMAT = "emo_stream.train_checkpoint"
CKPT_VERSION = 1


def config_fingerprint(cfg: TrainConfig) -> str:
    """Hash of everything that changes the optimisation (not logging, eval, outputs, or how it is distributed:
    a checkpoint resumes on any number of processes and under DDP or FSDP)."""
    d = cfg.to_dict()
    for k in ("log", "eval", "run_dir", "threads", "checkpoint", "features", "distributed"):
        d.pop(k, None)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _rng_state() -> tuple[dict[str, Tensor], dict[str, Any]]:
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = s
    np_state: Any = np.random.get_state()  # the legacy tuple (numpy's stubs also allow its dict form)
    py = random.getstate()
    meta = {
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [py[0], list(py[1]), py[2]],
    }
    return tensors, meta


def _set_rng_state(tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    if torch.cuda.is_available():
        states = [tensors[k] for k in sorted(tensors) if k.startswith("torch_cuda_")]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)
    n = meta["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    p = meta["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))


class TrainingDiverged(EmoStreamError):
    """A loss, gradient or weight became NaN/Inf: training stops before anything non-finite is saved."""


#: Checkpoint files whose sha256 ``state.json`` records (and :func:`checkpoint_problem` verifies).
CKPT_FILES = ("trainable.safetensors", "optim.pt", "rng.safetensors")


def checkpoint_candidates(run_dir: Path) -> list[Path]:
    """Checkpoint directories of a run, newest first: the ``latest`` pointer's
    target, then every other ``step-*`` directory by step (the fallbacks)."""
    ck = run_dir / "checkpoints"
    if not ck.is_dir():
        return []
    dirs = sorted((d for d in ck.iterdir() if d.is_dir() and d.name.startswith("step-")), key=lambda d: d.name, reverse=True)
    ptr = ck / "latest"
    try:
        named = ck / ptr.read_text(encoding="utf-8").strip() if ptr.is_file() else None
    except (OSError, UnicodeDecodeError):
        named = None
    if named is not None and named in dirs:
        dirs.remove(named)
        dirs.insert(0, named)
    return dirs


def checkpoint_problem(d: Path) -> str | None:
    """Why checkpoint ``d`` cannot be resumed from (torn, truncated, bit-flipped), or None.

    ``state.json`` is written last and records the sha256 of every other file,
    so any damage after the write shows as a mismatch here, before a corrupt
    tensor can reach the optimizer.
    """
    try:
        state = json.loads((d / "state.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "no state.json"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return f"state.json unreadable ({exc})"
    if not isinstance(state, dict) or state.get("format") != CKPT_FORMAT:
        return "state.json is not a training checkpoint's"
    recorded = state.get("files")
    for name in CKPT_FILES:
        f = d / name
        if not f.is_file():
            return f"{name} missing"
        if isinstance(recorded, dict) and name in recorded:
            try:
                if sha256_file(f) != recorded[name]:
                    return f"{name} does not match its recorded sha256"
            except OSError as exc:
                return f"{name} unreadable ({exc.strerror or exc})"
    return None


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint that passes :func:`checkpoint_problem`, or None."""
    return next((d for d in checkpoint_candidates(run_dir) if checkpoint_problem(d) is None), None)


def _assert_finite(tensors: dict[str, Tensor], where: str) -> None:
    """Raise :class:`TrainingDiverged` naming the first non-finite tensor (never saved)."""
    for n, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise TrainingDiverged(f"{where}: weight {n} holds NaN/Inf; nothing was saved from it")
