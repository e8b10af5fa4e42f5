"""``emo-stream prompt``: print the exact prompt text Emotion-LLaMA sees.

A fine-tuned checkpoint answers well only to the byte sequence it was tuned on
(double spaces included, see :mod:`emo_stream.model.prompts`), and a prompt is
invisible once it has been tokenized and mixed with multimodal embeddings. This
command renders it the one way the models do (:func:`~emo_stream.model.prompts.build_prompt`),
placeholders included, so a user can diff it against their own training code.
With ``--tokenizer DIR`` it also counts the text tokens the way the model feeds
them (each text segment between the slots tokenized on its own, plus BOS).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from emo_stream.model.prompts import PROMPT_TEMPLATE, PROMPT_TEMPLATE_V2, TASKS, WORDINGS, build_prompt, split_prompt

_TEMPLATES = {"v1": PROMPT_TEMPLATE, "v2": PROMPT_TEMPLATE_V2}


def add_parser(subparsers: Any) -> None:
    """Register ``prompt`` on the CLI's sub-parser action."""
    from emo_stream.labels import LABEL_SETS

    p = subparsers.add_parser(
        "prompt",
        help="print the exact prompt text the Emotion-LLaMA model sees (placeholders included)",
        description="Render the prompt as Emotion-LLaMA's training code formats it (first_face.py + MiniGPT-v2's "
        "[INST] wrapping), byte for byte: <VideoHere>/<FeatureHere> mark where the multimodal tokens go.",
    )
    p.add_argument("--task", required=True, choices=TASKS, help="emotion (label scoring) or reason (rationale)")
    p.add_argument("--label-set", required=True, choices=sorted(LABEL_SETS), help="label set whose instruction is used")
    p.add_argument("--subtitle", default="", help="the transcript (default: none, which the original renders as 'says: .')")
    p.add_argument("--wording", default=None, choices=WORDINGS, help="[emotion] instruction pool (default: the label set's own; Emotion-LLaMA 7B uses merr)")
    p.add_argument("--instruction-index", type=int, default=0, help="which instruction of the pool (default 0)")
    p.add_argument(
        "--template",
        dest="model_version",
        default="v1",
        choices=sorted(_TEMPLATES),
        help="v1: Emotion-LLaMA's template; v2: the conv-attention fusion's single-slot template",
    )
    p.add_argument("--tokenizer", type=Path, default=None, metavar="DIR", help="also report the number of text tokens with this local tokenizer (stderr)")
    p.set_defaults(func=cmd_prompt)


def count_text_tokens(prompt: str, tokenizer: Any) -> int:
    """Text tokens the model feeds for ``prompt``: BOS + every segment between slots, each tokenized alone."""
    seg = split_prompt(prompt)
    return 1 + sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in seg.texts)


def cmd_prompt(args: argparse.Namespace) -> int:
    from emo_stream.errors import ConfigError
    from emo_stream.labels import get_label_set
    from emo_stream.model.prompts import instruction_for

    if args.instruction_index < 0:
        raise ConfigError(f"--instruction-index must be >= 0, got {args.instruction_index}")
    label_set = get_label_set(args.label_set)
    prompt = build_prompt(
        task=args.task,
        label_set=label_set,
        subtitle=args.subtitle,
        instruction=instruction_for(args.task, label_set, args.instruction_index, args.wording),
        template=_TEMPLATES[args.model_version],
    )
    sys.stdout.write(prompt + "\n")
    sys.stdout.flush()
    if args.tokenizer is not None:
        from emo_stream.model.llm import load_tokenizer

        n = count_text_tokens(prompt, load_tokenizer(args.tokenizer))
        slots = ", ".join(split_prompt(prompt).slots)
        print(f"emo-stream: {n} text tokens (BOS included; the multimodal tokens at {slots} come on top)", file=sys.stderr)
    return 0
