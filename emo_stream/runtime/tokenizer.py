"""The exported tokenizer read with the ``tokenizers`` package alone (no transformers, no torch).

An export's ``tokenizer/`` is what ``PreTrainedTokenizerFast.save_pretrained``
wrote: ``tokenizer.json`` (the whole pipeline: normaliser, pre-tokeniser, model,
added tokens) and ``tokenizer_config.json`` / ``special_tokens_map.json`` (which
tokens are BOS and EOS). transformers' fast tokenizer *is* this ``tokenizers``
object plus bookkeeping, so ``encode(text, add_special_tokens=False)`` gives the
same ids (checked against transformers on the real prompts in the full venv);
a robot install (``emo-stream[robot]``) ships ``tokenizers`` without transformers.

:class:`JsonTokenizer` offers the part of the Hugging Face tokenizer interface
:class:`~emo_stream.runtime.lm.LlamaCppLM` uses: ``tok(text,
add_special_tokens=False)["input_ids"]``, ``bos_token_id``, ``eos_token_id``,
``len(tok)``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from emo_stream.errors import ModelFileError

TOKENIZER_JSON = "tokenizer.json"


def _token_text(value: Any) -> str | None:
    """A special token as tokenizer_config.json writes it: a string or an AddedToken dict."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


class JsonTokenizer:
    """``tokenizer.json`` + its special-token names (see module docstring)."""

    def __init__(self, directory: str | Path) -> None:
        from tokenizers import Tokenizer  # a missing package ends in one line (errors.missing_module_error)

        d = Path(directory)
        path = d / TOKENIZER_JSON
        if not path.is_file():
            raise ModelFileError(f"tokenizer: {d} has no {TOKENIZER_JSON}")
        try:
            self._tok = Tokenizer.from_file(str(path))
        except Exception as exc:
            raise ModelFileError(f"tokenizer: {path} cannot be read ({type(exc).__name__}: {exc})") from None
        names: dict[str, Any] = {}
        for meta in ("special_tokens_map.json", "tokenizer_config.json"):  # the config wins, as in transformers
            p = d / meta
            if p.is_file():
                try:
                    names.update({k: v for k, v in json.loads(p.read_text(encoding="utf-8")).items() if k.endswith("_token")})
                except (OSError, json.JSONDecodeError) as exc:
                    raise ModelFileError(f"tokenizer: {p} is not readable JSON ({exc})") from None
        self.bos_token_id = self._id_of(names, "bos_token", d)
        self.eos_token_id = self._id_of(names, "eos_token", d)

    def _id_of(self, names: dict[str, Any], key: str, d: Path) -> int:
        text = _token_text(names.get(key))
        tid = None if text is None else self._tok.token_to_id(text)
        if tid is None:
            raise ModelFileError(f"tokenizer: {d} names no {key} that is in its vocabulary ({text!r})")
        return int(tid)

    def __len__(self) -> int:
        return int(self._tok.get_vocab_size(with_added_tokens=True))

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=add_special_tokens).ids)

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        return {"input_ids": self.encode(text, add_special_tokens=add_special_tokens)}


def load_export_tokenizer(directory: str | Path) -> Any:
    """The tokenizer of an export: :class:`JsonTokenizer` when there is a ``tokenizer.json``, else transformers'
    (a sentencepiece-only ``tokenizer.model``, as LLaMA-2 ships it, needs transformers + sentencepiece)."""
    if (Path(directory) / TOKENIZER_JSON).is_file():
        return JsonTokenizer(directory)
    from emo_stream.model.llm import load_tokenizer

    return load_tokenizer(directory)
