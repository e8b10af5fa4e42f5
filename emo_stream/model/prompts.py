"""Emotion-LLaMA's prompt: template, tasks and instruction wording.

Read from Emotion-LLaMA's data pipeline (``minigpt4/datasets/datasets/first_face.py``)
and model (``minigpt4/models/minigpt_base.py``); the wording is theirs because a
fine-tuned checkpoint only answers well to the prompts it was tuned on.

The user turn is built exactly as ``FeatureFaceDataset.__getitem__`` builds it::

    character_line = "The person in video says: {}. ".format(sentence)
    "<video><VideoHere></video> <feature><FeatureHere></feature> {} [{}] {} ".format(character_line, task, instruction)

and ``MiniGPTBase`` wraps it in LLaMA-2-chat's ``"[INST] {} [/INST]"``. The
spacing is therefore *not* what one would write by hand: the clause ends with a
space and the format string adds another before ``[task]``, and the trailing
space of the user turn meets the space of ``" [/INST]"``. For MERR, subtitle
"I can't believe you did that" and the emotion task the model saw::

    [INST] <video><VideoHere></video> <feature><FeatureHere></feature> The person in video says: I can't believe you did that.  [emotion] Please determine which emotion label in the video represents: happy, sad, neutral, angry, worried, surprise, fear, contempt, doubt.  [/INST]

(two spaces before ``[emotion]`` and before ``[/INST]``). A LLaMA sentencepiece
tokenizer turns each double space into one extra token, so a hand-tidied prompt
is 2 tokens shorter than every prompt the checkpoint was tuned on. We reproduce
the original string formatting, including its edge cases: with no transcript the
clause stays (``says: .``), and a transcript that ends with a period gets the
template's period as well (``that..``), because ``format`` does nothing to the
sentence. The only things we change in a transcript are what cannot occur in a
training CSV cell: surrounding whitespace and line breaks (ASR output) are
collapsed to single spaces, and slot placeholders typed by a speaker are removed
so user text can never create a slot. ``emo-stream prompt`` prints the result.

During training (``prompt_wrap``)
the 256 grouped EVA patch tokens replace ``<VideoHere>`` and the four tokens
[face, video, audio, CLS] replace ``<FeatureHere>``; every text segment is
tokenized on its own without special tokens and a single BOS embedding is put in
front. We follow that training layout. (Their ``generate`` path splits only at
``<VideoHere>``, inserts all 260 tokens there, tokenizes the literal text
``<FeatureHere>`` and prepends ``<s>`` twice; a model tuned with ``prompt_wrap``
never saw that layout, so we do not reproduce it.)

Instruction wording (``[emotion]``): ``first_face.py`` keeps two pools, the MERR
9-label sentence (active) and five MER2023 6-label sentences (commented out).
The released Emotion_LLaMA.pth was trained by that file with the MERR sentence
as the only emotion instruction, so :meth:`EmotionLlamaConfig.emotion_llama_7b
<emo_stream.model.emotion_llama.EmotionLlamaConfig.emotion_llama_7b>` uses the
``"merr"`` wording even when scoring MER2023's 6 labels; ``"mer2023"`` selects
the 6-label pool (for checkpoints tuned on MER2023 with the commented-out pool),
``"labels"`` a sentence listing the scored label set, and ``None`` ("auto") the
label set's own wording.

The answer the model was tuned to produce for ``[emotion]`` is the bare label
word followed by ``</s>`` (``end_sym``); label scoring in :mod:`.llm` therefore
scores ``label + </s>`` after ``[/INST]``.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from emo_stream.errors import ConfigError
from emo_stream.labels import LabelSet

#: Placeholders replaced by projected multimodal tokens.
VIDEO_SLOT = "<VideoHere>"
FEATURE_SLOT = "<FeatureHere>"
SLOTS = (VIDEO_SLOT, FEATURE_SLOT)

#: LLaMA-2-chat's wrapping as ``MiniGPTBase.prompt_template`` applies it.
CHAT_WRAP = "[INST] {} [/INST]"
#: The user turn of ``first_face.py`` (note the space after ``{subtitle_clause}``
#: and the trailing space: see the module docstring).
USER_TURN = "<video><VideoHere></video> <feature><FeatureHere></feature> {subtitle_clause} [{task}] {instruction} "
#: The full prompt (LLaMA-2-chat wrapping included). ``{subtitle_clause}`` is
#: :data:`SUBTITLE_CLAUSE` filled with the transcript (empty transcript included).
PROMPT_TEMPLATE = CHAT_WRAP.format(USER_TURN)
#: The Emotion-LLaMAv2-style prompt used with the conv-attention fusion: all fused
#: tokens go into one slot (the v2 prompt is not public; this is our choice, with
#: v1's spacing so a v1-style tokenisation carries over).
PROMPT_TEMPLATE_V2 = CHAT_WRAP.format("<video><VideoHere></video> {subtitle_clause} [{task}] {instruction} ")

#: ``character_line`` of first_face.py (its trailing space is part of the original).
SUBTITLE_CLAUSE = "The person in video says: {subtitle}. "

TASKS = ("emotion", "reason")
#: ``[emotion]`` instruction wordings (see the module docstring); None = auto.
WORDINGS = ("merr", "mer2023", "labels")

#: ``emotion_instruction_pool`` of first_face.py: the MERR 9-label wording (the one
#: their released checkpoint was tuned with) and the commented-out MER2023
#: 6-label wording.
EMOTION_INSTRUCTIONS: dict[str, tuple[str, ...]] = {
    "merr": ("Please determine which emotion label in the video represents: happy, sad, neutral, angry, worried, surprise, fear, contempt, doubt.",),
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


def check_wording(wording: str | None) -> None:
    """Raise ConfigError unless ``wording`` is None (auto) or one of :data:`WORDINGS`."""
    if wording is not None and wording not in WORDINGS:
        raise ConfigError(f"unknown instruction wording {wording!r}; choose one of {WORDINGS} (or leave it unset for the label set's own)")


def emotion_instruction_pool(label_set: LabelSet, wording: str | None = None) -> tuple[str, ...]:
    """The ``[emotion]`` instructions for ``wording`` (None: the label set's own, else a sentence listing its labels)."""
    check_wording(wording)
    key = wording if wording is not None else label_set.id
    if key in EMOTION_INSTRUCTIONS:
        return EMOTION_INSTRUCTIONS[key]
    return ("Please determine which emotion label in the video represents: " + ", ".join(label_set.labels) + ".",)


def emotion_instruction(label_set: LabelSet, index: int = 0, wording: str | None = None) -> str:
    """One ``[emotion]`` instruction (``index`` picks from the pool, deterministically)."""
    pool = emotion_instruction_pool(label_set, wording)
    return pool[index % len(pool)]


def instruction_for(task: str, label_set: LabelSet, index: int = 0, wording: str | None = None) -> str:
    """The instruction for ``task`` (``index`` picks one from the pool, deterministically)."""
    if task == "emotion":
        return emotion_instruction(label_set, index, wording)
    if task == "reason":
        return REASON_INSTRUCTIONS[index % len(REASON_INSTRUCTIONS)]
    raise ConfigError(f"unknown task {task!r}; choose one of {TASKS}")


def random_instruction(task: str, label_set: LabelSet, rng: random.Random, wording: str | None = None) -> str:
    """A random instruction from the task's pool (what training samples do)."""
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; choose one of {TASKS}")
    pool = emotion_instruction_pool(label_set, wording) if task == "emotion" else REASON_INSTRUCTIONS
    return rng.choice(pool)


def clean_subtitle(subtitle: str) -> str:
    """The transcript as it goes into the clause: whitespace runs collapsed, slot placeholders removed.

    Nothing else changes (a final period stays, so "that." reads "that.." as the
    original's ``format`` gives): see the module docstring.
    """
    text = subtitle
    while any(slot in text for slot in SLOTS):  # removing one may join the halves of another
        for slot in SLOTS:
            text = text.replace(slot, "")
    return " ".join(text.split())


def build_prompt(
    *,
    task: str,
    label_set: LabelSet,
    subtitle: str = "",
    instruction: str | None = None,
    template: str = PROMPT_TEMPLATE,
    wording: str | None = None,
) -> str:
    """Render the prompt for one sample, byte for byte as Emotion-LLaMA's training code does.

    An empty ``subtitle`` (no transcript, e.g. no ASR on the robot) keeps the
    clause as ``"The person in video says: . "``: that is what the original
    formats for an empty sentence, and the clause's tokens are part of the
    context the checkpoint always saw. ``wording`` picks the ``[emotion]``
    instruction pool (ignored when ``instruction`` is given).
    """
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; choose one of {TASKS}")
    clause = SUBTITLE_CLAUSE.format(subtitle=clean_subtitle(subtitle))
    return template.format(
        subtitle_clause=clause,
        task=task,
        instruction=instruction if instruction is not None else instruction_for(task, label_set, wording=wording),
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
        rest = rest[pos + len(slot) :]
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
