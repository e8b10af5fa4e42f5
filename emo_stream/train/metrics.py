"""Evaluation metrics, in numpy, following the protocols the Emotion-LLaMA papers report.

* **Weighted F1** (MER2023 protocol, as Emotion-LLaMA's ``eval_emotion.py``
  computes it with ``sklearn.metrics.f1_score(average="weighted")``): per-class
  F1 over the classes that occur in the targets or predictions, averaged with
  weights = the class's number of targets. A class never predicted has
  precision 0/0, taken as 0 (scikit-learn's ``zero_division`` default).
  Emotion-LLaMA maps a generated answer that is not a label to ``neutral``
  before scoring; :func:`answer_to_label` does the same for generated answers.
* **Accuracy** / **WAR** (weighted average recall, DFEW protocol): correct / all.
* **UAR** (unweighted average recall, DFEW protocol): the mean per-class recall
  over the classes that occur in the targets (= ``balanced_accuracy_score``).
* **Confusion matrix**: rows = targets, columns = predictions, in label-set
  order; :func:`plot_confusion` draws it (matplotlib, Agg backend).
* **Hit rate for open labels** (MER-UniBench style): a sample is a hit when its
  target emotion is among the emotions named in the free-form output.
  MER-UniBench extracts the open-vocabulary labels with an LLM and groups
  synonyms with an emotion wheel; here :func:`open_labels` looks words up in
  :data:`EMOTION_LEXICON` (synonym -> canonical emotion). An approximation,
  documented as such in reports.

scikit-learn is not a dependency: the tests check these functions against it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from emo_stream.labels import ALIASES, CIRCUMPLEX, LabelSet, canonical


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> np.ndarray:
    """(C, C) int counts: row = target class, column = predicted class."""
    t = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(y_pred, dtype=np.int64)
    if t.shape != p.shape:
        raise ValueError(f"{t.size} targets but {p.size} predictions")
    if t.size and (t.min() < 0 or p.min() < 0 or t.max() >= n_classes or p.max() >= n_classes):
        raise ValueError(f"class indices must be in [0, {n_classes})")
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (t, p), 1)
    return cm


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.zeros_like(a, dtype=np.float64)
    np.divide(a, b, out=out, where=b > 0)
    return out


def per_class(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support per class (0 where undefined)."""
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    precision = _div(tp, predicted)
    recall = _div(tp, support)
    f1 = _div(2 * precision * recall, precision + recall)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support, "predicted": predicted}


def accuracy(cm: np.ndarray) -> float:
    n = cm.sum()
    return float(np.trace(cm) / n) if n else 0.0


def weighted_f1(cm: np.ndarray) -> float:
    """Support-weighted mean of per-class F1 (sklearn ``f1_score(average="weighted")``)."""
    pc = per_class(cm)
    n = pc["support"].sum()
    return float((pc["f1"] * pc["support"]).sum() / n) if n else 0.0


def macro_f1(cm: np.ndarray) -> float:
    """Mean F1 over classes that occur in targets or predictions (sklearn ``average="macro"``)."""
    pc = per_class(cm)
    used = (pc["support"] + pc["predicted"]) > 0
    return float(pc["f1"][used].mean()) if used.any() else 0.0


def uar(cm: np.ndarray) -> float:
    """Unweighted average recall over classes with targets (sklearn ``balanced_accuracy_score``)."""
    pc = per_class(cm)
    present = pc["support"] > 0
    return float(pc["recall"][present].mean()) if present.any() else 0.0


def classification_report(y_true: Sequence[int], y_pred: Sequence[int], label_set: LabelSet) -> dict:
    """Every metric above in one JSON-ready dict (WAR == accuracy)."""
    cm = confusion_matrix(y_true, y_pred, len(label_set))
    pc = per_class(cm)
    acc = accuracy(cm)
    return {
        "n": int(cm.sum()),
        "accuracy": acc,
        "war": acc,
        "uar": uar(cm),
        "weighted_f1": weighted_f1(cm),
        "macro_f1": macro_f1(cm),
        "chance_accuracy": chance_accuracy(y_true, len(label_set)),
        "labels": list(label_set.labels),
        "per_class": {lab: {k: float(pc[k][i]) for k in ("precision", "recall", "f1", "support")} for i, lab in enumerate(label_set.labels)},
        "confusion": cm.tolist(),
    }


def chance_accuracy(y_true: Sequence[int], n_classes: int) -> float:
    """Accuracy of always answering the most frequent target class (>= 1/C on a balanced set)."""
    t = np.asarray(y_true, dtype=np.int64)
    if not t.size:
        return 0.0
    return float(np.bincount(t, minlength=n_classes).max() / t.size)


def answer_to_label(answer: str, label_set: LabelSet, fallback: str = "neutral") -> tuple[int, bool]:
    """Emotion-LLaMA's reading of a generated answer: its last word, else ``fallback``.

    Returns (label index, whether the answer was a valid label). The last word
    is lower-cased and stripped of punctuation; aliases (``joy``) count.
    """
    words = re.findall(r"[a-zA-Z]+", answer.lower())
    if words:
        try:
            return label_set.index(words[-1]), True
        except ValueError:  # the last word is not a label: try the other rules below
            pass
    try:
        return label_set.index(fallback), False
    except Exception:
        return 0, False


# ---------------------------------------------------------------------------
# open-vocabulary hit rate
# ---------------------------------------------------------------------------

#: Emotion words (adjectives, nouns, verbs) -> canonical emotion. Coarse, in the
#: spirit of an emotion wheel's inner ring; used to read open labels out of text.
EMOTION_LEXICON: dict[str, str] = {
    **dict.fromkeys(
        (
            "happy",
            "happiness",
            "joy",
            "joyful",
            "glad",
            "cheerful",
            "delighted",
            "pleased",
            "excited",
            "excitement",
            "elated",
            "content",
            "contented",
            "satisfied",
            "amused",
            "grateful",
            "thrilled",
        ),
        "happy",
    ),
    **dict.fromkeys(
        (
            "sad",
            "sadness",
            "unhappy",
            "sorrow",
            "sorrowful",
            "depressed",
            "down",
            "gloomy",
            "upset",
            "disappointed",
            "disappointment",
            "grief",
            "grieving",
            "miserable",
            "melancholy",
            "lonely",
            "hurt",
        ),
        "sad",
    ),
    **dict.fromkeys(
        ("angry", "anger", "mad", "furious", "annoyed", "irritated", "irritation", "rage", "outraged", "frustrated", "frustration", "hostile", "resentful"),
        "angry",
    ),
    **dict.fromkeys(("neutral", "calm", "indifferent", "flat", "composed", "unemotional"), "neutral"),
    **dict.fromkeys(("worried", "worry", "anxious", "anxiety", "nervous", "concerned", "uneasy", "tense", "stressed", "apprehensive"), "worried"),
    **dict.fromkeys(("surprise", "surprised", "astonished", "amazed", "shocked", "startled", "stunned"), "surprise"),
    **dict.fromkeys(("fear", "afraid", "scared", "frightened", "terrified", "fearful", "panic", "panicked"), "fear"),
    **dict.fromkeys(("disgust", "disgusted", "repulsed", "revolted"), "disgust"),
    **dict.fromkeys(("contempt", "contemptuous", "scornful", "disdain", "disdainful"), "contempt"),
    **dict.fromkeys(("doubt", "doubtful", "skeptical", "sceptical", "uncertain", "confused", "puzzled", "suspicious"), "doubt"),
}
for _alias, _canon in ALIASES.items():
    EMOTION_LEXICON.setdefault(_alias, _canon)
for _canon in CIRCUMPLEX:
    EMOTION_LEXICON.setdefault(_canon, _canon)

_NEGATORS = {"not", "no", "never", "without", "nor"}


def open_labels(text: str) -> list[str]:
    """Canonical emotions named in ``text`` (first mention order, negated mentions skipped)."""
    words = re.findall(r"[a-zA-Z]+", text.lower())
    out: list[str] = []
    for i, w in enumerate(words):
        c = EMOTION_LEXICON.get(w)
        if c is None or any(x in _NEGATORS for x in words[max(0, i - 2) : i]):
            continue
        if c not in out:
            out.append(c)
    return out


def hit_rate(targets: Sequence[str], predicted: Sequence[Iterable[str]]) -> float:
    """Share of samples whose target emotion (any alias) is among their predicted open labels."""
    if len(targets) != len(predicted):
        raise ValueError(f"{len(targets)} targets but {len(predicted)} predictions")
    if not targets:
        return 0.0
    hits = 0
    for t, pred in zip(targets, predicted):
        canon_pred = set()
        for p in pred:
            try:
                canon_pred.add(canonical(p))
            except Exception:
                c = EMOTION_LEXICON.get(p.strip().lower())
                if c:
                    canon_pred.add(c)
        hits += canonical(t) in canon_pred
    return hits / len(targets)


# ---------------------------------------------------------------------------
# plot
# ---------------------------------------------------------------------------


def plot_confusion(cm: np.ndarray, labels: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Confusion matrix as a PNG: colour = row-normalised share, text = counts (matplotlib Agg)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    cm = np.asarray(cm)
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=np.float64), where=rows > 0)
    n = len(labels)
    fig = Figure(figsize=(1.0 + 0.75 * n, 0.8 + 0.7 * n), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(n), labels=list(labels), rotation=45, ha="right")
    ax.set_yticks(range(n), labels=list(labels))
    ax.set_xlabel("predicted")
    ax.set_ylabel("target")
    if title:
        ax.set_title(title)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", color="white" if share[i, j] > 0.5 else "black", fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of target row")
    fig.tight_layout()
    p = Path(path)
    from emo_stream.outputs import atomic_output

    with atomic_output(p) as tmp:
        fig.savefig(str(tmp), format=p.suffix.lstrip(".").lower() or "png")
    return p
