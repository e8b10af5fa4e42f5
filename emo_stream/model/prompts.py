"""Emotion-LLaMA's prompt: template, tasks and instruction wording.

Read from Emotion-LLaMA's data pipeline (``minigpt4/datasets/datasets/first_face.py``)
and model (``minigpt4/models/minigpt_base.py``); the wording is theirs because a
fine-tuned checkpoint only answers well to the prompts it was tuned on.

The user turn is::

    <video><VideoHere></video> <feature><FeatureHere></feature> The person in video says: {subtitle}. [{task}] {instruction}

wrapped in LLaMA-2-chat's ``[INST] ... [/INST]``. During training (``prompt_wrap``)
the 256 grouped EVA patch tokens replace ``<VideoHere>`` and the four tokens
[face, video, audio, CLS] replace ``<FeatureHere>``; every text segment is
tokenized on its own without special tokens and a single BOS embedding is put in
front. We follow that training layout. (Their ``generate`` path splits only at
``<VideoHere>``, inserts all 260 tokens there, tokenizes the literal text
``<FeatureHere>`` and prepends ``<s>`` twice; a model tuned with ``prompt_wrap``
never saw that layout, so we do not reproduce it.)

The answer the model was tuned to produce for ``[emotion]`` is the bare label
word followed by ``</s>`` (``end_sym``); label scoring in :mod:`.llm` therefore
scores ``label + </s>`` after ``[/INST]``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Iterable, Sequence

from emo_stream.errors import ConfigError
from emo_stream.labels import LabelSet

#: Placeholders replaced by projected multimodal tokens.
VIDEO_SLOT = "<VideoHere>"
FEATURE_SLOT = "<FeatureHere>"
SLOTS = (VIDEO_SLOT, FEATURE_SLOT)

#: The full prompt (LLaMA-2-chat wrapping included). ``{subtitle_clause}`` is
#: ``"The person in video says: {subtitle}. "`` or empty when there is no transcript.
PROMPT_TEMPLATE = (
    "[INST] <video><VideoHere></video> <feature><FeatureHere></feature> "
    "{subtitle_clause}[{task}] {instruction} [/INST]"
)
#: The Emotion-LLaMAv2-style prompt used with the conv-attention fusion: all fused
#: tokens go into one slot (the v2 prompt is not public; this is our choice).
PROMPT_TEMPLATE_V2 = "[INST] <video><VideoHere></video> {subtitle_clause}[{task}] {instruction} [/INST]"

SUBTITLE_CLAUSE = "The person in video says: {subtitle}. "

TASKS = ("emotion", "reason")

#: ``emotion_instruction_pool`` of first_face.py: the MERR 9-label wording (the one
#: their released checkpoint was tuned with) and the commented-out MER2023
#: 6-label wording.
EMOTION_INSTRUCTIONS: dict[str, tuple[str, ...]] = {
    "merr": (
        "Please determine which emotion label in the video represents: "
        "happy, sad, neutral, angry, worried, surprise, fear, contempt, doubt.",
    ),
    "mer2023": (
        "Please determine which emotion label in the video represents: happy, sad, neutral, angry, worried, surprise.",
        "Identify the displayed emotion in the video: is it happy, sad, neutral, angry, worried, or surprise?",
        "Determine the emotional state shown in the video, choosing from happy, sad, neutral, angry, worried, or surprise.",
        "Please ascertain the specific emotion portrayed in the video, whether it be happy, sad, neutral, angry, worried, or surprise.",
        "Assess and label the emotion evident in the video: could it be happy, sad, neutral, angry, worried, surprise?",
    ),
}

#: ``reason_instruction_pool`` of first_face.py.
REASON_INSTRUCTIONS: tuple[str, ...] = (
    "Please analyze all the clues in the video and reason out the emotional label of the person in the video.",
    "What is the emotional state of the person in the video? Please tell me the reason.",
    "What are the facial expressions and vocal tone used in the video? What is the intended meaning behind his words? Which emotion does this reflect?",
    "Please integrate information from various modalities to infer the emotional category of the person in the video.",
    "Could you describe the emotion-related features of the individual in the video? What emotional category do they fall into?",
)

#: ``caption_instruction_pool`` of first_face.py (descriptions of expression and tone).
CAPTION_INSTRUCTIONS: tuple[str, ...] = (
    "Please describe the details of the expression and tone the video.",
    "Can you provide a description of the facial expression and tone shown by the person in the video?",
    "Could you outline the facial expressions and vocal tones displayed in the video?",
    "Detail the expressions and tone used in the video.",
    "Explain the visual and auditory expressions captured in the video.",
    "Provide an analysis of the expressions and tone featured in the video.",
)


def emotion_instruction(label_set: LabelSet, index: int = 0) -> str:
    """The ``[emotion]`` instruction listing ``label_set``'s labels.

    Emotion-LLaMA's own wording for MERR and MER2023; for other sets the same
    sentence with that set's labels.
    """
    pool = EMOTION_INSTRUCTIONS.get(label_set.id)
    if pool:
        return pool[index % len(pool)]
    return "Please determine which emotion label in the video represents: " + ", ".join(label_set.labels) + "."


def instruction_for(task: str, label_set: LabelSet, index: int = 0) -> str:
    """The instruction for ``task`` (``index`` picks one from the pool, deterministically)."""
    if task == "emotion":
        return emotion_instruction(label_set, index)
    if task == "reason":
        return REASON_INSTRUCTIONS[index % len(REASON_INSTRUCTIONS)]
    raise ConfigError(f"unknown task {task!r}; choose one of {TASKS}")


def random_instruction(task: str, label_set: LabelSet, rng: random.Random) -> str:
    """A random instruction from the task's pool (what training samples do)."""
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; choose one of {TASKS}")
    pool = EMOTION_INSTRUCTIONS.get(label_set.id, (emotion_instruction(label_set),)) if task == "emotion" else REASON_INSTRUCTIONS
    return rng.choice(pool)


def _clean_subtitle(subtitle: str) -> str:
    # The template supplies the final period; one trailing period in a transcript
    # would otherwise read "..". Placeholders inside user text must not create slots.
    text = " ".join(subtitle.split())
    for slot in SLOTS:
        text = text.replace(slot, "")
    return text.rstrip(".")


def build_prompt(
    *,
    task: str,
    label_set: LabelSet,
    subtitle: str = "",
    instruction: str | None = None,
    template: str = PROMPT_TEMPLATE,
) -> str:
    """Render the prompt for one sample.

    An empty ``subtitle`` (no transcript, e.g. no ASR on the robot) drops the
    "The person in video says" clause rather than feeding an empty quote.
    """
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; choose one of {TASKS}")
    text = _clean_subtitle(subtitle)
    clause = SUBTITLE_CLAUSE.format(subtitle=text) if text else ""
    return template.format(
        subtitle_clause=clause,
        task=task,
        instruction=instruction if instruction is not None else instruction_for(task, label_set),
    )


@dataclass(frozen=True)
class PromptSegments:
    """A prompt cut at its slots: ``texts[0] slots[0] texts[1] slots[1] ... texts[-1]``."""

    texts: tuple[str, ...]
    slots: tuple[str, ...]

    def check_tokens_for(self, given: Iterable[str]) -> None:
        """Raise ConfigError unless tokens were given for exactly this prompt's slots."""
        given = list(given)
        missing = [s for s in self.slots if s not in given]
        if missing:
            raise ConfigError(f"prompt has slot(s) {missing} but no tokens were given for them")
        unused = [s for s in given if s not in self.slots]
        if unused:
            raise ConfigError(f"tokens given for slot(s) {unused} that the prompt does not contain")


def split_prompt(prompt: str, slots: Sequence[str] = SLOTS) -> PromptSegments:
    """Cut ``prompt`` at every slot placeholder, keeping their order.

    Each slot may appear at most once (Emotion-LLaMA's prompts have one of each).
    """
    texts: list[str] = []
    found: list[str] = []
    rest = prompt
    while True:
        hits = [(rest.find(s), s) for s in slots if s in rest]
        if not hits:
            texts.append(rest)
            break
        pos, slot = min(hits)
        if slot in found:
            raise ConfigError(f"slot {slot} appears more than once in the prompt")
        texts.append(rest[:pos])
        found.append(slot)
        rest = rest[pos + len(slot):]
    return PromptSegments(tuple(texts), tuple(found))


def prompt_vocabulary() -> list[str]:
    """Every fixed text a prompt can contain (for building a test tokenizer)."""
    from emo_stream.labels import LABEL_SETS

    texts = [PROMPT_TEMPLATE, PROMPT_TEMPLATE_V2, SUBTITLE_CLAUSE, *REASON_INSTRUCTIONS, *CAPTION_INSTRUCTIONS]
    for pool in EMOTION_INSTRUCTIONS.values():
        texts.extend(pool)
    for ls in LABEL_SETS.values():
        texts.append(emotion_instruction(ls))
        texts.extend(ls.labels)
    texts.extend(f"[{t}]" for t in TASKS)
    return texts
