"""JsonTokenizer (the robot runtime's tokenizer: ``tokenizers`` alone) against transformers, on real prompts.

The exported small model's tokenizer (SmolLM2's vocabulary, export/emotion-llama-small) and the tiny
export's: every text the LLM runtime encodes -- the prompt's pieces between its slots, for both tasks,
with and without a subtitle, every reason instruction, and every label answer -- must give byte-identical
ids, and BOS/EOS/vocabulary size must agree, or llama.cpp would score a different prompt on the robot.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from emo_stream.errors import ModelFileError
from emo_stream.runtime.tokenizer import JsonTokenizer

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

ROOT = Path(__file__).resolve().parents[2]
SMALL_EXPORT = ROOT / "export" / "emotion-llama-small"


def _prompt_texts(config) -> list[str]:
    from emo_stream.labels import get_label_set
    from emo_stream.model.prompts import REASON_INSTRUCTIONS, instruction_for, split_prompt

    ls = get_label_set(config.label_set)
    texts: list[str] = list(ls.labels) + list(REASON_INSTRUCTIONS)
    subtitles = ("", "I can't believe you did that!", "Ça va? naïve café — 你好 🙂  two  spaces")
    for sub in subtitles:
        for i in range(3):
            for task in ("emotion", "reason"):
                prompt = config.render_prompt(task, sub, ls, instruction_for(task, ls, i))
                texts += split_prompt(prompt).texts
    return [t for t in dict.fromkeys(texts) if t]


def _check_same_ids(tok_dir: Path, config) -> int:
    from transformers import AutoTokenizer

    ref = AutoTokenizer.from_pretrained(str(tok_dir), local_files_only=True)
    ours = JsonTokenizer(tok_dir)
    assert (ours.bos_token_id, ours.eos_token_id, len(ours)) == (ref.bos_token_id, ref.eos_token_id, len(ref))
    texts = _prompt_texts(config)
    for text in texts:
        assert ours(text, add_special_tokens=False)["input_ids"] == ref(text, add_special_tokens=False)["input_ids"], text
    return len(texts)


def test_small_export_tokenizer_gives_transformers_ids_on_the_real_prompts() -> None:
    if not (SMALL_EXPORT / "tokenizer" / "tokenizer.json").is_file():
        pytest.skip(f"{SMALL_EXPORT} is not built here (README: the small model recipe)")
    from emo_stream.runtime.artifacts import load_manifest

    config = load_manifest(SMALL_EXPORT).model_config()
    assert _check_same_ids(SMALL_EXPORT / "tokenizer", config) > 10


def test_tiny_model_tokenizer_gives_transformers_ids(tmp_path: Path) -> None:
    from emo_stream.export.common import build_tiny

    model = build_tiny("v1")
    model.llm.tokenizer.save_pretrained(tmp_path)
    assert _check_same_ids(tmp_path, model.config) > 10


def test_a_directory_without_tokenizer_json_is_a_model_file_error(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="has no tokenizer.json"):
        JsonTokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ModelFileError, match="cannot be read"):
        JsonTokenizer(tmp_path)
