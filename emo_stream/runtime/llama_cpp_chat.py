"""The model's chat template: render the GGUF's Jinja template (ChatML when it has
none or it cannot be split) into a static prefix and a per-window part, and
sanitize clue text so it cannot close the template's turns.

Split from :mod:`emo_stream.runtime.llama_cpp` (issue 15).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# --------------------------------------------------------------------------- chat template

#: ChatML, the format SmolLM2 (and Qwen) were tuned on; used when the GGUF has no
#: template or the template cannot be rendered/split.
CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
_SPLIT = "\u2063emo-stream-split\u2063"


@dataclass(frozen=True)
class ChatPrompt:
    """A chat prompt cut where the per-window part starts.

    ``prefix`` (system turn + start of the user turn + fixed instructions) is the
    same for every window and is what :class:`LlamaCppRuntime` caches; ``suffix``
    (clues, end of the user turn, assistant header, answer lead) changes.
    """

    prefix: str
    suffix: str

    @property
    def text(self) -> str:
        return self.prefix + self.suffix


def _render_chatml(messages: Sequence[dict[str, str]], add_generation_prompt: bool) -> str:
    out = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return out + ("<|im_start|>assistant\n" if add_generation_prompt else "")


def sanitize_clue_text(text: str) -> str:
    """Break special-token markers (``<|im_end|>`` ...) in untrusted text.

    Prompts are tokenized with special tokens parsed (the template needs them),
    so a transcript containing ``<|im_end|>`` would otherwise end the user turn.
    """
    return text.replace("<|", "< |").replace("|>", "| >")


class ChatTemplate:
    """Render chat prompts with the model's own template, static part first.

    The template comes from the GGUF ``tokenizer.chat_template`` (a Jinja
    template, rendered in a sandbox like ``transformers`` does). If there is
    none, jinja2 is missing, or the template does not reproduce the user
    content verbatim (so the static/dynamic cut cannot be found), ChatML is
    used: that is what SmolLM2 was tuned on.
    """

    def __init__(self, template: str | None = None, *, bos_token: str = "", eos_token: str = "") -> None:
        self.template = template
        self.bos_token, self.eos_token = bos_token, eos_token
        self._compiled: Any = None
        self.source = "chatml-default"
        if template:
            try:
                from jinja2.sandbox import ImmutableSandboxedEnvironment

                env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
                env.globals["raise_exception"] = _raise_template_error
                self._compiled = env.from_string(template)
                self.source = "gguf"
            except Exception:
                self._compiled = None

    def render(self, messages: Sequence[dict[str, str]], *, add_generation_prompt: bool = True) -> str:
        if self._compiled is not None:
            try:
                return self._compiled.render(
                    messages=list(messages),
                    add_generation_prompt=add_generation_prompt,
                    bos_token=self.bos_token,
                    eos_token=self.eos_token,
                )
            except Exception:  # noqa: S110 - a template jinja cannot render falls back to ChatML below
                pass
        return _render_chatml(messages, add_generation_prompt)

    def split(self, system: str, instruction: str, clues: str, *, answer_prefix: str = "") -> ChatPrompt:
        """Prompt for one window: ``system`` + ``instruction`` static, ``clues`` per window.

        The user turn is ``instruction`` + newline + ``clues``; ``answer_prefix``
        is appended after the assistant header (e.g. ``"Emotion:"``) to steer
        the continuation that labels are scored as. ``clues`` is passed through
        :func:`sanitize_clue_text`. The cut is right after a newline, where the
        BPE pre-tokenizer splits anyway, so prefix and suffix tokenized apart
        give the same tokens as the model would see in one piece.
        """
        static = instruction if not instruction or instruction.endswith("\n") else instruction + "\n"
        messages = [{"role": "system", "content": system}, {"role": "user", "content": static + _SPLIT}]
        text = self.render(messages, add_generation_prompt=True)
        if text.count(_SPLIT) != 1:
            text = _render_chatml(messages, True)
        head, tail = text.split(_SPLIT)
        return ChatPrompt(head, sanitize_clue_text(clues) + tail + answer_prefix)


def _raise_template_error(message: str) -> None:
    raise ValueError(message)
