"""llama.cpp runtime against the real SmolLM2-135M-Instruct Q4_1 GGUF.

The model is loaded once per module (~0.3 s), on one thread (see ``rt``).
Exactness tests compare the batched, prefix-cached path with independent
evaluations of the same token sequence in a fresh sequence
(``logits_for_inputs``), so a wrong position, a label token attending to
another label, or a stale cache cell shows up as a different number.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install llama-cpp-python==0.3.36)")

from emo_stream.assets import SMOLLM2_GGUF
from emo_stream.errors import ConfigError, ModelFileError
from emo_stream.runtime.llama_cpp import (
    GGUF_TYPES,
    SCORING_GGUF_TYPE,
    ChatPrompt,
    ChatTemplate,
    LlamaCppConfig,
    LlamaCppRuntime,
    cpu_features,
    gguf_file_type,
    read_gguf_index,
    requantized_gguf,
    sanitize_clue_text,
)

MER2023 = ["neutral", "angry", "happy", "sad", "worried", "surprise"]
SYSTEM = "You are an emotion recognition assistant."
INSTRUCTION = "Read the clues about a person and answer with one word from: neutral, angry, happy, sad, worried, surprise."
HAPPY = "Clues: the person is smiling broadly and laughing; says 'this is wonderful'"
ANGRY = "Clues: the person is frowning and shouting; slams the table; says 'I am furious with you'"
SAD = "Clues: the person is crying quietly with tears on the face; says 'I miss her so much'"


@pytest.fixture(scope="module")
def rt() -> Iterator[LlamaCppRuntime]:
    # One thread: llama.cpp's OpenMP threads spin at barriers, and on a shared
    # 2-core CI box (other test processes running) two threads made this module
    # 2-10x slower; one thread gives steady ~35 s. Results do not depend on it.
    runtime = LlamaCppRuntime(LlamaCppConfig(n_threads=1))
    yield runtime
    runtime.close()


def window(rt: LlamaCppRuntime, clues: str, answer_prefix: str = "Emotion:") -> ChatPrompt:
    return rt.chat_template.split(SYSTEM, INSTRUCTION, clues, answer_prefix=answer_prefix)


def brute_force_logprob(rt: LlamaCppRuntime, prefix: str, suffix: str, label: str | list[int]) -> float:
    """One full evaluation of prefix + suffix + label in a fresh sequence."""
    ctx = rt.tokenize(prefix, add_bos=rt.add_bos) + rt.tokenize(suffix)
    lab = rt.tokenize(label, special=False) if isinstance(label, str) else list(label)
    logits = rt.logits_for_inputs([np.asarray(ctx + lab, dtype=np.int32)], all_positions=True).astype(np.float64)
    total = 0.0
    for j, tok in enumerate(lab):
        row = logits[len(ctx) - 1 + j]
        m = row.max()
        total += row[tok] - m - np.log(np.exp(row - m).sum())
    return total


# ----------------------------------------------------------------------------- loading


def test_loads_packaged_model(rt: LlamaCppRuntime) -> None:
    # The packaged Q4_1 file, requantized once into the model cache to the scoring type.
    assert SCORING_GGUF_TYPE in GGUF_TYPES and gguf_file_type(rt.path) == SCORING_GGUF_TYPE
    assert gguf_file_type(SMOLLM2_GGUF.path()) == "Q4_1"
    assert rt.architecture == "llama"
    assert (rt.n_embd, rt.n_vocab) == (576, 49152)
    assert rt.chat_template.source == "gguf"
    assert set(rt.kv_sequences()) <= {0}  # nothing but (at most) a cached prefix


@pytest.mark.slow
def test_requantized_copy_is_cached_atomically_and_keyed_by_type(tmp_path: Path) -> None:
    src = SMOLLM2_GGUF.path()
    assert requantized_gguf(src, "Q4_1", tmp_path) == src.resolve()  # already that type: no copy
    q8 = requantized_gguf(src, "Q8_0", tmp_path)
    assert q8.parent == tmp_path and gguf_file_type(q8) == "Q8_0"
    assert [p.name for p in tmp_path.iterdir()] == [q8.name]  # no temporary file left behind
    mtime = q8.stat().st_mtime_ns
    assert requantized_gguf(src, "Q8_0", tmp_path) == q8 and q8.stat().st_mtime_ns == mtime  # reused, not rebuilt
    q8.write_bytes(b"GGUF")  # damaged in place: rebuilt
    assert gguf_file_type(requantized_gguf(src, "Q8_0", tmp_path)) == "Q8_0"
    with LlamaCppRuntime(LlamaCppConfig(default_model_type=None, n_threads=1)) as shipped:
        assert shipped.path == src
    with pytest.raises(ConfigError, match="default_model_type"):
        LlamaCppConfig(default_model_type="Q5_K")
    with pytest.raises(ConfigError, match="GGUF type"):
        requantized_gguf(src, "Q2_K", tmp_path)


def test_cpu_features_name_the_build() -> None:
    feats = cpu_features()
    assert feats and all(isinstance(v, bool) for v in feats.values())
    assert "AVX2" in feats or "NEON" in feats or "SSE3" in feats  # x86-64 or ARM build


def test_gguf_index_reads_header(rt: LlamaCppRuntime) -> None:
    idx = read_gguf_index(rt.path)
    assert idx.metadata["llama.block_count"] == 30
    assert idx.metadata["llama.embedding_length"] == 576
    assert idx.array_lengths["tokenizer.ggml.tokens"] == rt.n_vocab
    assert idx.tensors["token_embd.weight"].shape == (576, 49152)


def test_truncated_gguf_is_a_model_file_error(tmp_path: Path) -> None:
    src = SMOLLM2_GGUF.path()
    bad = tmp_path / "truncated.gguf"
    with src.open("rb") as fh:
        bad.write_bytes(fh.read(1 << 20))  # ends inside the 1.7 MB header
    with pytest.raises(ModelFileError, match="truncated") as err:
        LlamaCppRuntime(LlamaCppConfig(model_path=bad))
    assert str(bad) in str(err.value)


def test_gguf_truncated_in_tensor_data_is_a_model_file_error(tmp_path: Path) -> None:
    """Header intact, weights cut: caught from the header when a tensor starts past
    the end, else llama.cpp refuses (NULL model, no crash) and we relay its reason."""
    src = SMOLLM2_GGUF.path()
    size = src.stat().st_size
    for keep in (60 << 20, size - 1000):
        bad = tmp_path / f"cut_{keep}.gguf"
        with src.open("rb") as fh:
            bad.write_bytes(fh.read(keep))
        with pytest.raises(ModelFileError) as err:
            LlamaCppRuntime(LlamaCppConfig(model_path=bad))
        msg = str(err.value)
        assert str(bad) in msg and "no reason" not in msg
        bad.unlink()


def test_not_a_gguf_and_missing_file(tmp_path: Path) -> None:
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"PK\x03\x04" + b"\0" * 4096)
    with pytest.raises(ModelFileError, match="GGUF"):
        LlamaCppRuntime(LlamaCppConfig(model_path=junk))
    with pytest.raises(ModelFileError, match="missing"):
        LlamaCppRuntime(LlamaCppConfig(model_path=tmp_path / "nope.gguf"))


def test_config_is_validated() -> None:
    assert LlamaCppConfig().n_threads >= 1
    for bad in (
        {"n_ctx": 8},
        {"n_batch": 0},
        {"n_batch": 4096, "n_ctx": 1024},
        {"n_seq_max": 2},
        {"n_threads": 0},
        {"n_threads_batch": 0},
        {"n_ubatch": 600},
        {"seed": -1},
    ):
        with pytest.raises(ConfigError):
            LlamaCppConfig(**bad)


def test_close_is_idempotent_and_final() -> None:
    with LlamaCppRuntime(LlamaCppConfig(n_ctx=256, n_batch=64)) as r:
        assert r.tokenize("hello")
    r.close()
    with pytest.raises(RuntimeError, match="closed"):
        r.score_labels("a", "b", ["c"])


# ----------------------------------------------------------------------------- chat template


def test_chat_template_puts_static_part_first(rt: LlamaCppRuntime) -> None:
    p = window(rt, "Clues: x <|im_end|> y")
    assert p.prefix.startswith("<|im_start|>system\n" + SYSTEM + "<|im_end|>\n<|im_start|>user\n" + INSTRUCTION)
    assert "Clues" not in p.prefix
    assert p.suffix.endswith("<|im_end|>\n<|im_start|>assistant\nEmotion:")
    assert "<|im_end|> y" not in p.suffix  # untrusted text cannot close the user turn
    assert sanitize_clue_text("a <|im_end|>") == "a < |im_end| >"
    # same text as the GGUF template and as the ChatML fallback
    assert ChatTemplate(None).split(SYSTEM, INSTRUCTION, HAPPY) == rt.chat_template.split(SYSTEM, INSTRUCTION, HAPPY)
    # cut at a newline: tokenizing apart == tokenizing together
    assert rt.tokenize(p.prefix) + rt.tokenize(p.suffix) == rt.tokenize(p.text)


# ----------------------------------------------------------------------------- label scoring


def test_scores_are_a_probability_vector(rt: LlamaCppRuntime) -> None:
    p = window(rt, HAPPY, answer_prefix="")
    s = rt.score_labels(p.prefix, p.suffix, MER2023)
    assert s.labels == tuple(MER2023)
    assert s.probs.shape == (6,) and np.all(s.probs > 0)
    assert s.probs.sum() == pytest.approx(1.0, abs=1e-9)
    assert np.all(s.logprobs < 0)
    assert list(s.n_tokens) == [len(rt.tokenize(lab, special=False)) for lab in MER2023]


@pytest.mark.parametrize(("clues", "expected"), [(HAPPY, "happy"), (ANGRY, "angry"), (SAD, "sad")])
def test_unambiguous_clues_rank_the_right_label_first(rt: LlamaCppRuntime, clues: str, expected: str) -> None:
    """Measured with the 135M model and answer lead "Emotion:": happy 0.86, angry 0.89, sad 0.71.

    (Weaker cases are not asserted: "worried" clues come out as surprise/sad.)
    """
    p = window(rt, clues)
    s = rt.score_labels(p.prefix, p.suffix, [" " + lab for lab in MER2023])
    print(expected, np.round(s.probs, 3))
    assert s.top() == " " + expected
    assert s.probs.max() > 0.5


@pytest.mark.slow
def test_prefix_is_cached_and_cache_holds_only_the_prefix(rt: LlamaCppRuntime) -> None:
    p1, p2 = window(rt, HAPPY), window(rt, SAD)
    rt.score_labels(p1.prefix, p1.suffix, MER2023)
    evals, decoded = rt.stats.prefix_evals, rt.stats.tokens_decoded
    n_prefix = len(rt.tokenize(p1.prefix))
    assert rt.kv_sequences() == {0: (0, n_prefix - 1)}

    rt.score_labels(p2.prefix, p2.suffix, MER2023)
    assert rt.stats.prefix_evals == evals  # not re-evaluated
    branch_tokens = sum(len(rt.tokenize(lab, special=False)) - 1 for lab in MER2023)
    assert rt.stats.tokens_decoded - decoded == len(rt.tokenize(p2.suffix)) + branch_tokens
    assert rt.kv_sequences() == {0: (0, n_prefix - 1)}

    # a changed prefix is re-evaluated from its first differing token only
    changed = p2.prefix.replace("one word", "a single word")
    before = rt.stats.tokens_decoded
    rt.score_labels(changed, p2.suffix, [" happy"])
    assert rt.stats.prefix_evals == evals + 1
    common = next(i for i, (a, b) in enumerate(zip(rt.tokenize(p2.prefix), rt.tokenize(changed), strict=False)) if a != b)
    assert rt.stats.tokens_decoded - before == len(rt.tokenize(changed)) - common + len(rt.tokenize(p2.suffix))
    assert rt.kv_sequences() == {0: (0, len(rt.tokenize(changed)) - 1)}


@pytest.mark.slow
def test_reuse_on_off_and_brute_force_agree(rt: LlamaCppRuntime) -> None:
    """Multi-token labels (angry=2, sad=2, worried=3, surprise=2 tokens) included."""
    p = window(rt, ANGRY, answer_prefix="")
    labels = MER2023 + ["very angry indeed"]
    on = rt.score_labels(p.prefix, p.suffix, labels)
    off = rt.score_labels(p.prefix, p.suffix, labels, reuse_prefix=False)
    brute = np.array([brute_force_logprob(rt, p.prefix, p.suffix, lab) for lab in labels])
    assert max(on.n_tokens) >= 3
    print(f"max |reuse on - off| = {np.abs(on.logprobs - off.logprobs).max():.3g}, max |on - brute force| = {np.abs(on.logprobs - brute).max():.3g}")
    np.testing.assert_allclose(on.logprobs, off.logprobs, atol=1e-4, rtol=0)
    np.testing.assert_allclose(on.logprobs, brute, atol=1e-4, rtol=0)
    np.testing.assert_allclose(on.probs, off.probs, atol=1e-4, rtol=0)


@pytest.mark.slow
def test_logits_do_not_depend_on_batch_cuts_or_cache_occupancy(rt: LlamaCppRuntime) -> None:
    """The property the exactness above rests on (flash attention, n_ubatch < 64; see LlamaCppConfig)."""
    ids = np.asarray(rt.tokenize(" ".join(f"word{i}" for i in range(30))), dtype=np.int32)[:80]
    assert ids.size == 80
    rt.clear_cache()
    ref = rt.logits_for_inputs([ids])  # 80 rows: 64 of them in one flash-attention tile if n_ubatch allowed it
    diffs = [float(np.abs(rt.logits_for_inputs([ids[:k], ids[k:]]) - ref).max()) for k in (1, 33, 79)]
    rt.score_labels(rt.tokenize("filler " * 41), "x", ["y"])  # 41 cached cells shift the scratch cells
    diffs.append(float(np.abs(rt.logits_for_inputs([ids]) - ref).max()))
    print(f"max |logit diff| over cuts/occupancy: {max(diffs):.3g}")
    assert max(diffs) < 1e-4


def test_prompt_longer_than_the_context_is_refused_and_leaves_the_cache_clean(rt: LlamaCppRuntime) -> None:
    p = window(rt, HAPPY)
    rt.score_labels(p.prefix, p.suffix, MER2023)
    cached = rt.kv_sequences()
    with pytest.raises(ValueError, match="n_ctx"):
        rt.score_labels(p.prefix, "clue " * rt.config.n_ctx, MER2023)
    assert rt.kv_sequences() == cached
    assert rt.score_labels(p.prefix, p.suffix, MER2023).top() in MER2023


@pytest.mark.slow
def test_empty_suffix_uses_the_cached_prefix_logits(rt: LlamaCppRuntime) -> None:
    p = window(rt, HAPPY)
    labels = ["happy", "angry", "worried"]  # 1, 2 and 3 tokens
    s = rt.score_labels(p.text, "", labels)
    brute = np.array([brute_force_logprob(rt, p.text, "", lab) for lab in labels])
    np.testing.assert_allclose(s.logprobs, brute, atol=1e-4, rtol=0)


@pytest.mark.slow
def test_labels_given_as_token_ids(rt: LlamaCppRuntime) -> None:
    """Ids are used as is: same scores as the text, and an end-of-turn id can be appended."""
    p = window(rt, SAD)
    ids = [rt.tokenize(lab, special=False) for lab in MER2023]
    by_text = rt.score_labels(p.prefix, p.suffix, MER2023)
    by_ids = rt.score_labels(p.prefix, p.suffix, [np.asarray(i) for i in ids])
    assert by_ids.labels == tuple(tuple(i) for i in ids)
    np.testing.assert_array_equal(by_text.logprobs, by_ids.logprobs)
    end = rt.tokenize("<|im_end|>")
    assert len(end) == 1
    with_end = rt.score_labels(p.prefix, p.suffix, [i + end for i in ids])
    brute = [brute_force_logprob(rt, p.prefix, p.suffix, ids[k] + end) for k in (0, 4)]
    assert np.all(with_end.logprobs < by_text.logprobs)
    assert brute == pytest.approx(list(with_end.logprobs[[0, 4]]), abs=1e-4)


def test_bad_label_inputs(rt: LlamaCppRuntime) -> None:
    with pytest.raises(ValueError):
        rt.score_labels("a", "b", [])
    with pytest.raises(ValueError):
        rt.score_labels("a", "b", ["ok", ""])
    many = [f"label number {i}" for i in range(rt.max_branches + 1)]
    with pytest.raises(ValueError, match="n_seq_max"):
        rt.score_labels("a", "b", many)
    with pytest.raises(ValueError, match="empty"):
        rt.score_labels("", "", ["x"])


# ----------------------------------------------------------------------------- embeddings


@pytest.mark.slow
def test_embedding_injection_matches_token_ids(rt: LlamaCppRuntime) -> None:
    ids = np.asarray(rt.tokenize(window(rt, HAPPY).text), dtype=np.int32)
    by_ids = rt.logits_for_inputs([ids])
    by_embd = rt.logits_for_embeddings(rt.token_embeddings(ids))
    diff = float(np.abs(by_ids - by_embd).max())
    print(f"max |logits(ids) - logits(embd)| = {diff:.3g} over {ids.size} positions")
    assert diff < 1e-4
    assert int(np.argmax(by_ids)) == int(np.argmax(by_embd))
    # soft tokens mixed with text: same sequence, consecutive positions
    mixed = rt.logits_for_inputs([ids[:10], rt.token_embeddings(ids[10:30]), ids[30:]])
    assert float(np.abs(mixed - by_ids).max()) < 1e-4


@pytest.mark.slow
def test_soft_token_suffix_scores_like_text(rt: LlamaCppRuntime) -> None:
    p = window(rt, HAPPY)
    clue_ids = rt.tokenize(HAPPY)
    assert p.suffix.startswith(HAPPY)
    rest = p.suffix[len(HAPPY) :]
    text = rt.score_labels(p.prefix, [HAPPY, rest], MER2023)
    soft = rt.score_labels(p.prefix, [rt.token_embeddings(clue_ids), rest], MER2023)
    np.testing.assert_allclose(text.logprobs, soft.logprobs, atol=1e-4, rtol=0)


def test_bad_soft_tokens_are_rejected(rt: LlamaCppRuntime) -> None:
    with pytest.raises(ValueError, match="shape"):
        rt.logits_for_embeddings(np.zeros((3, 7), dtype=np.float32))
    nan = np.zeros((2, rt.n_embd), dtype=np.float32)
    nan[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        rt.logits_for_embeddings(nan)


# ----------------------------------------------------------------------------- generation


@pytest.mark.slow
def test_generate_greedy_stops_at_newline_and_stop_strings(rt: LlamaCppRuntime) -> None:
    p = rt.chat_template.split(SYSTEM, "Explain in one sentence which emotion the person shows.", HAPPY)
    text = rt.generate(p.prefix, p.suffix, max_tokens=32)
    assert text.strip() and "\n" not in text
    assert rt.generate(p.prefix, p.suffix, max_tokens=32) == text  # greedy is deterministic
    words = text.split()
    stop = words[min(2, len(words) - 1)]
    cut = rt.generate(p.prefix, p.suffix, max_tokens=32, stop=[stop])
    assert stop not in cut and text.startswith(cut)
    short = rt.generate(p.prefix, p.suffix, max_tokens=2, stop=())
    assert 0 < len(rt.tokenize(short, special=False)) <= 3
    sampled = rt.generate(p.prefix, p.suffix, max_tokens=8, temperature=0.8, seed=1)
    assert sampled == rt.generate(p.prefix, p.suffix, max_tokens=8, temperature=0.8, seed=1)
    assert set(rt.kv_sequences()) == {0}


# ----------------------------------------------------------------------------- threads


@pytest.mark.slow
def test_concurrent_scoring_and_generation_are_safe(rt: LlamaCppRuntime) -> None:
    windows = [window(rt, c) for c in (HAPPY, ANGRY, SAD)]
    expected = [rt.score_labels(w.prefix, w.suffix, MER2023).logprobs for w in windows]
    g = rt.chat_template.split(SYSTEM, "Explain in one sentence which emotion the person shows.", SAD)
    expected_text = rt.generate(g.prefix, g.suffix, max_tokens=16)
    errors: list[BaseException] = []
    results: dict[tuple[int, int], np.ndarray] = {}
    texts: list[str] = []

    def scorer(tid: int) -> None:
        try:
            for k in range(6):
                w = windows[(tid + k) % 3]
                results[(tid, k)] = rt.score_labels(w.prefix, w.suffix, MER2023).logprobs
        except BaseException as exc:
            errors.append(exc)

    def writer() -> None:
        try:
            texts.append(rt.generate(g.prefix, g.suffix, max_tokens=16))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=scorer, args=(t,)) for t in range(2)] + [threading.Thread(target=writer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert len(results) == 12 and texts == [expected_text]
    for (tid, k), lp in results.items():
        np.testing.assert_allclose(lp, expected[(tid + k) % 3], atol=1e-4, rtol=0)
    assert set(rt.kv_sequences()) == {0}
