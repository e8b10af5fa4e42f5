"""What one training step reads: items (sample x cached window), global batches and examples.

Every choice here is a pure function of (seed, stage, step, position): that is
what makes ``--resume`` and 1-vs-N-process runs compute the same batches (see
:mod:`emo_stream.train.trainer`). Split from the trainer (issue 15).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import numpy as np

from emo_stream.train.config import StageSection
from emo_stream.train.dataset import DatasetError, Manifest, Sample, read_manifest
from emo_stream.train.features import FeatureCache, WindowRef

REASON_SUFFIX = " Therefore, it is inferred that his emotional state is: "


@dataclass(frozen=True)
class Item:
    sample: Sample
    window: WindowRef
    label_index: int


class SplitData:
    """A manifest joined with its feature cache: one item per (sample, window)."""

    def __init__(self, manifest_path: str, cache_path: str, model: Any, grain: str = "any", fingerprints: dict[str, str] | None = None) -> None:
        ls = model.label_set
        self.manifest: Manifest = read_manifest(manifest_path, ls)
        self.cache = FeatureCache(cache_path)
        self.cache.check_model(model, fingerprints)
        from emo_stream.train.evaluate import split_items

        self.items: list[Item] = []
        for s, refs in split_items(self.manifest, self.cache):
            if grain != "any" and s.grain != grain:
                continue
            for r in refs:
                self.items.append(Item(s, r, s.label_index(ls)))
        if not self.items:
            raise DatasetError(f"{manifest_path}: no {grain + ' ' if grain != 'any' else ''}samples to train on")

    def __len__(self) -> int:
        return len(self.items)


def epoch_permutation(seed: int, stage: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, stage, epoch, 7919]).permutation(n)


def global_batch_indices(seed: int, stage: int, step_in_stage: int, batch: int, n: int) -> list[int]:
    """Item indices of one global batch: epoch-wise permutations, continued across epochs."""
    out = []
    perm_epoch, perm = -1, None
    for j in range(batch):
        pos = step_in_stage * batch + j
        epoch, k = divmod(pos, n)
        if epoch != perm_epoch:
            perm, perm_epoch = epoch_permutation(seed, stage, epoch, n), epoch
        out.append(int(perm[k]))  # type: ignore[index]
    return out


@dataclass(frozen=True)
class Example:
    item: Item
    task: str
    prompt: str
    answer_ids: tuple[int, ...]


def make_example(
    model: Any, item: Item, stage_idx: int, stage: StageSection, step_in_stage: int, position: int, seed: int, use_subtitles: bool, max_answer_tokens: int
) -> Example:
    """Task, instruction, prompt and answer of one sample: a pure function of its arguments."""
    from emo_stream.model.prompts import random_instruction

    rng = random.Random(int(np.random.SeedSequence([seed, stage_idx, step_in_stage, position, 104729]).generate_state(1)[0]))
    weights = stage.task_weights(step_in_stage / max(1, stage.steps - 1))
    s = item.sample
    if not s.explanation:
        weights = {k: v for k, v in weights.items() if k != "reason"} or {"emotion": 1.0}
    tasks = sorted(weights)
    task = rng.choices(tasks, weights=[weights[t] for t in tasks], k=1)[0]
    ls = model.label_set
    label = ls.labels[item.label_index]
    instruction = random_instruction(task, ls, rng, wording=model.config.instruction_wording)
    prompt = model.prompt(task, s.subtitle if use_subtitles else "", ls, instruction=instruction)
    answer = label if task == "emotion" else s.explanation.rstrip() + REASON_SUFFIX + label
    ids = model.llm.encode(answer)
    if len(ids) >= max_answer_tokens:  # keep the end (the label) of long explanations
        ids = ids[len(ids) - max_answer_tokens + 1 :]
    return Example(item, task, prompt, tuple(ids) + (model.llm.eos_id,))
