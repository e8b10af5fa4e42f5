"""EMER-style clue / label overlap, judged locally (no cloud). An approximation.

EMER (Lian et al., 2023) scores an explanation against the reference with
ChatGPT on two 1-10 scales: **clue overlap** (how many of the reference's
emotional clues -- facial, vocal, lexical -- the prediction also gives) and
**label overlap** (how well the emotions the prediction names agree with the
reference's). Emotion-LLaMA reports 7.83 / 6.25 there. We cannot call a cloud
model, so two local judges stand in:

* :class:`LlamaCppJudge` -- a local GGUF LLM through llama.cpp (default: the
  packaged SmolLM2-135M-Instruct). It is asked for a 0-10 score and, instead of
  parsing free text, the *expected* score is read off its probabilities for the
  answers "0" .. "10" (:meth:`~emo_stream.runtime.llama_cpp.LlamaCppRuntime.score_labels`),
  which is deterministic. A 135M model is a weak judge: it tracks gross overlap
  at best. Point ``model_path`` at a bigger local GGUF for better judgements.
* :class:`LexicalJudge` -- deterministic: clue overlap = 10 x F1 of the content
  words of the two explanations; label overlap = 10 x Jaccard of the canonical
  emotions each names (:func:`~emo_stream.train.metrics.open_labels`).

Numbers from either judge are **not comparable** to EMER's published ChatGPT
scores; use them to compare runs of your own with the same judge.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from emo_stream.train.metrics import open_labels

#: Answers scored: "N/10" (a bare "1" would be a prefix of "10" and win by being short).
SCORE_CHOICES = tuple(f"{i}/10" for i in range(11))

_STOP = set(
    "a an the and or but of in on at to from by with without for is are was were be been being it its this that these those "
    "his her their he she they him them i you we my your our me us as so than then therefore which who whom whose what when "
    "where while because very really just also there here not no do does did has have had can could would should may might "
    "will shall into about over under up down out if person video".split()
)


def content_words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z]+", text.lower()) if w not in _STOP and len(w) > 2}


@dataclass(frozen=True)
class OverlapScore:
    clue_overlap: float
    label_overlap: float


class Judge(Protocol):
    name: str

    def score(self, reference: str, prediction: str, reference_labels: Sequence[str], predicted_labels: Sequence[str]) -> OverlapScore: ...


class LexicalJudge:
    """Deterministic word/label overlap on EMER's 0-10 scale (see module docstring)."""

    name = "lexical"

    def score(self, reference: str, prediction: str, reference_labels: Sequence[str], predicted_labels: Sequence[str]) -> OverlapScore:
        a, b = content_words(reference), content_words(prediction)
        if a and b:
            inter = len(a & b)
            p, r = inter / len(b), inter / len(a)
            clue = 10.0 * (2 * p * r / (p + r) if p + r else 0.0)
        else:
            clue = 0.0
        ra = set(reference_labels) | set(open_labels(reference))
        pb = set(predicted_labels) | set(open_labels(prediction))
        label = 10.0 * len(ra & pb) / len(ra | pb) if (ra | pb) else 0.0
        return OverlapScore(clue, label)


_SYSTEM = "You are a strict grader of emotion explanations. You answer with a score of the form N/10."
_CLUE_Q = (
    "Reference explanation: {ref}\nCandidate explanation: {pred}\n"
    "How many of the emotional clues in the reference (facial expression, tone of voice, words) does the candidate also "
    "mention? 0/10 means none, 10/10 means all of them. Answer in the form N/10."
)
_LABEL_Q = (
    "Reference emotions: {ref}\nCandidate emotions: {pred}\n"
    "How well do the candidate emotions agree with the reference emotions? 0/10 means not at all, 10/10 means the same. "
    "Answer in the form N/10."
)


class LlamaCppJudge:
    """A local GGUF LLM as the judge (see module docstring)."""

    name = "llama.cpp"

    def __init__(self, model_path: str | None = None, threads: int | None = None, runtime: Any = None) -> None:
        from emo_stream.runtime.llama_cpp import LlamaCppConfig, LlamaCppRuntime

        self.rt = runtime or LlamaCppRuntime(LlamaCppConfig(model_path=model_path, n_threads=threads, n_ctx=2048))
        self.name = f"llama.cpp:{self.rt.path.name}"

    def _expected(self, question: str) -> float:
        import numpy as np

        prompt = self.rt.chat_template.split(_SYSTEM, "", question, answer_prefix="Score: ")
        scores = self.rt.score_labels(prompt.prefix, prompt.suffix, SCORE_CHOICES)
        return float(np.dot(scores.probs, np.arange(len(SCORE_CHOICES))))

    def score(self, reference: str, prediction: str, reference_labels: Sequence[str], predicted_labels: Sequence[str]) -> OverlapScore:
        clue = self._expected(_CLUE_Q.format(ref=reference.strip() or "(none)", pred=prediction.strip() or "(none)"))
        ra = list(dict.fromkeys([*reference_labels, *open_labels(reference)]))
        pb = list(dict.fromkeys([*predicted_labels, *open_labels(prediction)]))
        label = self._expected(_LABEL_Q.format(ref=", ".join(ra) or "(none)", pred=", ".join(pb) or "(none)"))
        return OverlapScore(clue, label)

    def close(self) -> None:
        self.rt.close()


def make_judge(kind: str, model_path: str | None = None, threads: int | None = None) -> Judge:
    """``lexical`` or ``llm`` (llama.cpp; ``model_path`` default: packaged SmolLM2)."""
    from emo_stream.errors import ConfigError

    if kind == "lexical":
        return LexicalJudge()
    if kind == "llm":
        return LlamaCppJudge(model_path, threads)
    raise ConfigError(f"unknown judge {kind!r}; choose lexical or llm")
