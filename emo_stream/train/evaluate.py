"""``emo-stream eval``: predictions and metrics of a model on a split.

Predictions come from the model the streaming engine runs, fed the cached
window features (:mod:`.features`):

* ``mode="score"`` (default, what the engine does): label probabilities by
  scoring every label's answer after the ``[emotion]`` prompt; a sample with
  several windows (``windows: stream`` caches) gets the mean of its windows'
  probabilities; the prediction is the most probable label.
* ``mode="generate"`` (Emotion-LLaMA's ``eval_emotion.py``): greedy answer to
  the ``[emotion]`` prompt, read as its last word, anything that is not a label
  counting as ``neutral``; several windows vote.

With ``rationale=True`` a ``[reason]`` answer is generated per sample (first
window), the emotions it names are its open labels (MER-UniBench-style hit
rate, :func:`~emo_stream.train.metrics.hit_rate`), and, when the sample has a
reference explanation and a judge is given, EMER-style clue/label overlap
(:mod:`.judge`).

Outputs (``out_dir``): ``predictions.jsonl`` (one line per sample: id, target,
prediction, probabilities, windows, answer/rationale/open labels when made),
``metrics.json`` (:func:`~emo_stream.train.metrics.classification_report` plus
hit rate / overlap) and ``confusion.png``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emo_stream.errors import ConfigError
from emo_stream.labels import LabelSet, canonical
from emo_stream.outputs import make_dir, write_text
from emo_stream.train.dataset import DatasetError, Manifest, Sample
from emo_stream.train.features import FeatureCache, WindowRef, collate
from emo_stream.train.metrics import (
    answer_to_label,
    classification_report,
    hit_rate,
    open_labels,
    plot_confusion,
)


@dataclass
class Prediction:
    id: str
    target: str | None
    pred: str
    probs: dict[str, float]
    windows: int
    valid: bool = True
    answer: str = ""
    rationale: str = ""
    open_labels: list[str] = field(default_factory=list)
    clue_overlap: float | None = None
    label_overlap: float | None = None

    @property
    def correct(self) -> bool | None:
        return None if self.target is None else canonical(self.target) == canonical(self.pred)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["correct"] = self.correct
        return {k: v for k, v in d.items() if v not in ("", None, []) or k in ("pred", "correct")}


def split_items(manifest: Manifest, cache: FeatureCache) -> list[tuple[Sample, list[WindowRef]]]:
    """Each sample with its cached windows; raises when samples were never encoded."""
    missing = [s for s in manifest if s.id not in cache]
    if missing:
        first = ", ".join(repr(s.id) for s in missing[:3])
        raise DatasetError(
            f"{len(missing)} of {len(manifest)} samples of {manifest.path} have no features in {cache.root} "
            f"(e.g. {first}); run `emo-stream features --manifest {manifest.path} --out {cache.root}` first"
        )
    out = []
    for s in manifest:
        refs = cache.windows(s.id)
        if not refs:
            raise DatasetError(f"sample {s.id!r} has no windows in {cache.root}")
        out.append((s, refs))
    return out


@torch.no_grad()
def predict(
    model: Any,
    manifest: Manifest,
    cache: FeatureCache,
    *,
    use_subtitles: bool = True,
    batch_size: int = 16,
    mode: str = "score",
    rationale: bool = False,
    max_new_tokens: int | None = None,
    progress: bool = False,
) -> list[Prediction]:
    """Predictions for every sample of ``manifest`` (see module docstring)."""
    if mode not in ("score", "generate"):
        raise ConfigError(f"eval mode must be 'score' or 'generate', got {mode!r}")
    ls: LabelSet = model.label_set
    if manifest.label_set.id != ls.id:
        for s in manifest:
            if s.label is not None:
                try:
                    ls.index(s.label)
                except ConfigError:
                    raise DatasetError(f"{manifest.path} line {s.line}: label {s.label!r} is not in the model's label set {ls.id} {list(ls.labels)}") from None
    was_training = model.training
    model.eval()
    device = model.device
    items = split_items(manifest, cache)
    # windows grouped by prompt text so one batch shares one prompt
    groups: dict[str, list[tuple[int, WindowRef]]] = {}
    for k, (s, refs) in enumerate(items):
        sub = s.subtitle if use_subtitles else ""
        for r in refs:
            groups.setdefault(sub, []).append((k, r))
    probs_sum = [np.zeros(len(ls)) for _ in items]
    votes: list[Counter] = [Counter() for _ in items]
    answers: list[str] = ["" for _ in items]
    valid = [True for _ in items]
    from emo_stream.progress import progress_bar

    bar = progress_bar(sum(len(v) for v in groups.values()), 0, "eval", progress, unit="window")
    try:
        for sub, entries in groups.items():
            for lo in range(0, len(entries), batch_size):
                chunk = entries[lo : lo + batch_size]
                proj = model.project(collate([cache.load(r) for _, r in chunk], device))
                if mode == "score":
                    p = model.label_probabilities(proj, sub, ls).double().cpu().numpy()
                    for (k, _), row in zip(chunk, p):
                        probs_sum[k] += row
                else:
                    prefix = model.llm.build_prefix(model.prompt("emotion", sub, ls), proj.slots)
                    ids = model.llm.generate(prefix, max_new_tokens or model.config.max_new_tokens)
                    for (k, _), x in zip(chunk, ids):
                        text = model.llm.decode(x)
                        idx, ok = answer_to_label(text, ls)
                        votes[k][idx] += 1
                        if not answers[k]:
                            answers[k], valid[k] = text, ok
                bar.update(len(chunk))
    finally:
        bar.close()
    preds: list[Prediction] = []
    for k, (s, refs) in enumerate(items):
        if mode == "score":
            p = probs_sum[k] / len(refs)
            idx = int(np.argmax(p))
        else:
            p = np.zeros(len(ls))
            for i, n in votes[k].items():
                p[i] = n / len(refs)
            idx = max(votes[k].items(), key=lambda kv: (kv[1], -kv[0]))[0]
        target = None if s.label is None else ls.labels[ls.index(s.label)]
        preds.append(
            Prediction(
                id=s.id,
                target=target,
                pred=ls.labels[idx],
                probs={lab: float(v) for lab, v in zip(ls.labels, p)},
                windows=len(refs),
                valid=valid[k],
                answer=answers[k],
            )
        )
    if rationale:
        for k, (s, refs) in enumerate(items):
            proj = model.project(collate([cache.load(refs[0])], device))
            text = model.rationale(proj, s.subtitle if use_subtitles else "", max_new_tokens)[0]
            preds[k].rationale = text
            preds[k].open_labels = open_labels(text)
    if was_training:
        model.train()
    return preds


def summarize(predictions: Sequence[Prediction], label_set: LabelSet, judge: Any = None, references: dict[str, Sample] | None = None) -> dict[str, Any]:
    """Metrics over the labelled predictions (+ hit rate and EMER overlap when rationales exist)."""
    lab = [p for p in predictions if p.target is not None]
    report = classification_report([label_set.index(p.target) for p in lab], [label_set.index(p.pred) for p in lab], label_set)  # type: ignore[arg-type]
    report["label_set"] = label_set.id
    report["invalid_answers"] = sum(not p.valid for p in predictions)
    with_r = [p for p in lab if p.rationale]
    if with_r:
        report["open_label_hit_rate"] = hit_rate([p.target for p in with_r], [p.open_labels for p in with_r])  # type: ignore[misc]
        report["open_label_hit_rate_note"] = "MER-UniBench-style HIT: target emotion among the emotions the rationale names (lexicon match, an approximation)"
    if judge is not None and with_r and references:
        scored = []
        for p in with_r:
            ref = references.get(p.id)
            if ref is None or not ref.explanation:
                continue
            sc = judge.score(ref.explanation, p.rationale, [p.target] if p.target else [], p.open_labels)
            p.clue_overlap, p.label_overlap = sc.clue_overlap, sc.label_overlap
            scored.append(sc)
        if scored:
            report["emer"] = {
                "judge": judge.name,
                "n": len(scored),
                "clue_overlap": float(np.mean([s.clue_overlap for s in scored])),
                "label_overlap": float(np.mean([s.label_overlap for s in scored])),
                "note": "EMER-style overlap (0-10) by a local judge; an approximation, not comparable to EMER's ChatGPT scores",
            }
    return report


def write_outputs(out_dir: str | Path, predictions: Sequence[Prediction], metrics: dict[str, Any], label_set: LabelSet, title: str = "") -> dict[str, Path]:
    """Write predictions.jsonl, metrics.json and confusion.png into ``out_dir``, each atomically
    (a full disk is one ``cannot write X`` error and leaves earlier files whole)."""
    d = make_dir(out_dir)
    pred_path = write_text(d / "predictions.jsonl", "".join(json.dumps(p.to_json(), ensure_ascii=False) + "\n" for p in predictions))
    met_path = write_text(d / "metrics.json", json.dumps(metrics, indent=2))
    png = plot_confusion(
        np.asarray(metrics["confusion"]),
        label_set.labels,
        d / "confusion.png",
        title=title or f"accuracy {metrics['accuracy']:.3f}, weighted F1 {metrics['weighted_f1']:.3f}",
    )
    return {"predictions": pred_path, "metrics": met_path, "confusion": png}


def evaluate(
    model: Any,
    manifest: Manifest,
    cache: FeatureCache,
    out_dir: str | Path | None = None,
    *,
    use_subtitles: bool = True,
    batch_size: int = 16,
    mode: str = "score",
    rationale: bool = False,
    max_new_tokens: int | None = None,
    judge: Any = None,
    progress: bool = False,
) -> tuple[dict[str, Any], list[Prediction]]:
    """Predict, summarize and (with ``out_dir``) write predictions, metrics and the confusion PNG."""
    preds = predict(
        model,
        manifest,
        cache,
        use_subtitles=use_subtitles,
        batch_size=batch_size,
        mode=mode,
        rationale=rationale,
        max_new_tokens=max_new_tokens,
        progress=progress,
    )
    metrics = summarize(preds, model.label_set, judge=judge, references=manifest.by_id())
    metrics["mode"] = mode
    metrics["use_subtitles"] = use_subtitles
    metrics["manifest"] = str(manifest.path)
    if out_dir is not None:
        write_outputs(out_dir, preds, metrics, model.label_set)
    return metrics, preds
