"""``emo-stream export gguf``: the LLaMA (LoRA merged) as GGUF for llama.cpp, optionally quantized.

Steps:

1. **Merge LoRA.** Each LoRA-wrapped weight is written as W + B A * alpha / r
   (peft's ``get_delta_weight``, tensor by tensor: no copy of the model), so
   the GGUF is a plain LLaMA and llama.cpp needs no adapter support.
2. **Write F16 GGUF** with the ``gguf`` package's ``GGUFWriter``: llama
   architecture metadata (context length, widths, heads, RMS eps, RoPE base and
   dimension), tensors renamed to llama.cpp's names and the q/k projections
   permuted from Hugging Face's rotate-half RoPE layout to llama.cpp's
   interleaved one (the same permutation as llama.cpp's ``convert_hf_to_gguf.py``).
   Matrices are stored F16, norms F32 (what llama.cpp's converter does).
3. **Quantize** with llama.cpp itself (``llama_model_quantize`` from the
   ``llama-cpp-python`` bindings) to ``Q8_0`` or ``Q4_K_M``. K-quants need rows
   that are multiples of 256; llama.cpp falls back to Q5_0/Q8_0 for narrower
   tensors (all of them in the tiny test model) and the manifest records the
   actual per-tensor types.
4. **Measure** (when llama-cpp-python is installed): label probabilities of
   the GGUF vs torch on seeded multimodal prompts, and the logits of token
   embeddings fed through ``llama_batch.embd`` vs the token ids.

Vocabulary. llama.cpp refuses a model without a vocabulary, but emo_stream never
lets llama.cpp tokenize text: every runtime tokenizes with the model's own
Hugging Face tokenizer (exported beside the GGUF) and feeds token ids, so the
ids are exactly the torch model's (Emotion-LLaMA's segments are tokenized one
by one, without special tokens -- llama.cpp's SPM tokenizer would not
reproduce that). The GGUF vocabulary therefore only has to load, mark the
special tokens (BOS/EOS/UNK/PAD, end-of-generation) and detokenize generated
ids. It is written as a SentencePiece ("llama") vocabulary:

* a LLaMA-2 tokenizer dir (``tokenizer.json``, BPE with byte fallback) goes
  through ``gguf.LlamaHfVocab`` (or ``gguf.SentencePieceVocab`` from
  ``tokenizer.model`` when the ``sentencepiece`` package is there), as
  llama.cpp's converter does;
* any other tokenizer -- the tiny models' word-level one -- is written from its
  id -> token table: normal tokens as ``"\u2581" + token`` (so llama.cpp's
  detokenizer puts a space before each word, which is what the word-level
  tokenizer's decode does), special tokens as CONTROL/UNKNOWN, and rows of the
  embedding matrix beyond the tokenizer as UNUSED ``<unused_N>``.

Embedding scale: LLaMA applies none (``batch.embd`` rows are the embedding
table rows), recorded as ``embedding_scale: 1.0``; the projector output width
the GGUF expects is ``n_embd`` and is recorded as ``projector_output_width``.
"""

from __future__ import annotations

import contextlib
import re
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emo_stream.errors import ConfigError
from emo_stream.export.artifacts import TOKENIZER_DIR, ExportWriter
from emo_stream.export.common import (
    ExportError,
    MissingDependencyError,
    Progress,
    SourceModel,
    check_same_model,
    load_source_model,
    model_fingerprint,
    model_section,
    write_common_files,
)

QUANTS = ("F16", "Q8_0", "Q4_K_M", "Q4_0")
#: A documented bound: |p_Q8_0 - p_torch| per label on the seeded parity prompts is expected below this.
Q8_0_LABEL_PROB_BOUND = 2e-2
F16_LABEL_PROB_BOUND = 1e-2


def gguf_rel(quant: str) -> str:
    return f"llm/model.{quant}.gguf"


def _gguf() -> Any:
    try:
        import gguf
    except ImportError as exc:
        raise MissingDependencyError(f"GGUF export needs the gguf package: pip install gguf ({exc})") from None
    return gguf


def _llama_lib() -> Any:
    try:
        import llama_cpp.llama_cpp as lib
    except ImportError as exc:
        raise MissingDependencyError(f"quantizing GGUF needs llama.cpp: run scripts/setup.sh (builds llama-cpp-python==0.3.36 for this CPU) ({exc})") from None
    return lib


def merged_state(lm: Any) -> Iterator[tuple[str, Any]]:
    """(Hugging Face name, tensor) of the LLaMA with LoRA folded in, one tensor at a time.

    For every LoRA-wrapped linear layer the merged weight is ``W + delta`` with
    peft's own ``get_delta_weight`` (B A * alpha / r) summed over the active
    adapters -- what ``merge_and_unload`` computes, without copying the model
    (a 7B LLaMA would need twice its memory) and without touching it.
    """
    import torch

    base = lm.base_llama()
    lora_layers = {n: m for n, m in base.named_modules() if hasattr(m, "get_delta_weight") and hasattr(m, "base_layer")}
    with torch.no_grad():
        for name, t in base.state_dict().items():
            if ".lora_" in name:
                continue
            if ".base_layer." in name:
                owner, leaf = name.rsplit(".base_layer.", 1)
                if leaf == "weight" and lm.config.lora.enabled:
                    mod = lora_layers[owner]
                    t = t.float() + sum(mod.get_delta_weight(a).float() for a in mod.active_adapters)
                name = f"{owner}.{leaf}"
            yield name, t


def permute_rope(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF rotate-half q/k rows -> llama.cpp's interleaved layout (``convert_hf_to_gguf.LlamaModel.permute``)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)\.weight$")
_LAYER_NAMES = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}
_TOP_NAMES = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight", "lm_head.weight": "output.weight"}


def _gguf_name(key: str) -> str | None:
    """llama.cpp's name for a Hugging Face LLaMA tensor (None: not stored)."""
    if key.endswith("rotary_emb.inv_freq"):
        return None
    if key in _TOP_NAMES:
        return _TOP_NAMES[key]
    m = _LAYER.match(key)
    if not m or m.group(2) not in _LAYER_NAMES:
        raise ExportError(f"unexpected LLaMA tensor {key}; only plain LLaMA (no biases, no extra modules) is supported")
    return f"blk.{m.group(1)}.{_LAYER_NAMES[m.group(2)]}.weight"


def _is_tied(lm: Any) -> bool:
    sd = lm.base_llama().state_dict()
    return "lm_head.weight" not in sd or sd["lm_head.weight"].data_ptr() == sd["model.embed_tokens.weight"].data_ptr()


def llama_tensor_plan(lm: Any) -> list[tuple[str, tuple[int, ...]]]:
    """(GGUF name, shape) of every tensor :func:`llama_tensors` yields, in the same order, without computing any."""
    tied = _is_tied(lm)
    plan = []
    for key, t in lm.base_llama().state_dict().items():
        if ".lora_" in key:
            continue
        key = key.replace(".base_layer.", ".")
        name = _gguf_name(key)
        if name is None or (key == "lm_head.weight" and tied):
            continue
        plan.append((name, tuple(t.shape)))
    return plan


def llama_tensors(lm: Any, n_head: int, n_head_kv: int) -> Iterator[tuple[str, np.ndarray]]:
    """(GGUF name, float32 array) for every tensor of the LoRA-merged LLaMA of ``lm`` (an ``EmotionLlamaLM``), one at a time."""
    tied = _is_tied(lm)
    for key, t in merged_state(lm):
        name = _gguf_name(key)
        if name is None or (key == "lm_head.weight" and tied):
            continue
        a = t.detach().float().cpu().numpy()
        if key.endswith("self_attn.q_proj.weight"):
            a = permute_rope(a, n_head)
        elif key.endswith("self_attn.k_proj.weight"):
            a = permute_rope(a, n_head_kv)
        yield name, a


def vocab_entries(tokenizer: Any, tokenizer_dir: Path | None, n_vocab: int) -> tuple[list[bytes], list[float], list[int], str]:
    """(tokens, scores, types, kind) for the GGUF vocabulary (see module docstring)."""
    gguf = _gguf()
    entries: list[tuple[bytes, float, int]] | None = None
    kind = ""
    if tokenizer_dir is not None:
        if (tokenizer_dir / "tokenizer.model").is_file():
            with contextlib.suppress(ImportError, Exception):
                entries = [(t, s, int(k)) for t, s, k in gguf.SentencePieceVocab(tokenizer_dir).all_tokens()]
                kind = "sentencepiece"
        if entries is None and (tokenizer_dir / "tokenizer.json").is_file():
            with contextlib.suppress(FileNotFoundError, TypeError, KeyError, ValueError):
                entries = [(t, s, int(k)) for t, s, k in gguf.LlamaHfVocab(tokenizer_dir).all_tokens()]
                kind = "llama-hf"
    if entries is None:
        # A word-level vocabulary has bare words; prefix the SentencePiece space mark so that
        # llama.cpp's detokenizer separates them as the tokenizer's decode does. Pieces of other
        # tokenizers are written as they are.
        backend = getattr(getattr(tokenizer, "backend_tokenizer", None), "model", None)
        word_level = type(backend).__name__ == "WordLevel"
        kind = "word-level" if word_level else "generic"
        specials = set(tokenizer.all_special_ids)
        unk = tokenizer.unk_token_id
        entries = []
        for i in range(len(tokenizer)):
            text = tokenizer.convert_ids_to_tokens(i)
            if text is None:
                entries.append((f"<unused_{i}>".encode(), -1e9, int(gguf.TokenType.UNUSED)))
            elif i == unk:
                entries.append((text.encode(), 0.0, int(gguf.TokenType.UNKNOWN)))
            elif i in specials:
                entries.append((text.encode(), 0.0, int(gguf.TokenType.CONTROL)))
            else:
                entries.append((("\u2581" + text if word_level else text).encode(), -float(i), int(gguf.TokenType.NORMAL)))
    if len(entries) > n_vocab:
        raise ExportError(f"tokenizer has {len(entries)} tokens but the LLaMA embedding only {n_vocab} rows")
    for i in range(len(entries), n_vocab):
        entries.append((f"<unused_{i}>".encode(), -1e9, int(gguf.TokenType.UNUSED)))
    return [e[0] for e in entries], [float(e[1]) for e in entries], [e[2] for e in entries], kind


#: Token-id keys are set from the exported tokenizer (what training used), never copied.
_TOKEN_ID_KEYS = (
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.unknown_token_id",
    "tokenizer.ggml.padding_token_id",
    "tokenizer.ggml.add_eos_token",
)


def copy_tokenizer_fields(w: Any, source: str) -> str:
    """Copy the ``tokenizer.*`` keys (vocabulary, merges, pre-tokenizer, chat template) of the GGUF the LLM
    was loaded from into ``w``; returns the vocabulary kind (``tokenizer.ggml.model``)."""
    gguf = _gguf()
    from emo_stream.model.llm import gguf_path

    reader = gguf.GGUFReader(str(gguf_path(source)))
    kind = "gguf"
    for key, f in reader.fields.items():
        if not key.startswith("tokenizer.") or key in _TOKEN_ID_KEYS:
            continue
        value = f.contents()
        vtype = f.types[0]
        if vtype == gguf.GGUFValueType.ARRAY:
            w.add_key_value(key, value, vtype, sub_type=f.types[-1])
        else:
            w.add_key_value(key, value, vtype)
        if key == "tokenizer.ggml.model":
            kind = f"{value} (from {Path(str(gguf_path(source))).name})"
    return kind


def write_f16_gguf(path: Path, lm: Any, tokenizer_dir: Path | None, name: str = "emotion-llama") -> dict[str, Any]:
    """Write the merged LLaMA of ``lm`` (an ``EmotionLlamaLM``) as an F16 GGUF; return facts for the manifest."""
    gguf = _gguf()
    cfg = dict(lm.config.llama)
    tok = lm.tokenizer
    if tok is None:
        raise ExportError("the language model has no tokenizer")
    hidden, n_head = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
    n_kv = int(cfg.get("num_key_value_heads") or n_head)
    head_dim = int(cfg.get("head_dim") or hidden // n_head)
    n_vocab = int(cfg["vocab_size"])
    rope = cfg.get("rope_parameters") or {}
    top_theta: float = cfg.get("rope_theta", 10000.0)  # typed: a get() whose default is Any reads as "Any | None"
    rope_theta = float(rope.get("rope_theta", top_theta))
    rope_type = rope.get("rope_type", "default")
    if rope_type not in ("default", None) or cfg.get("rope_scaling"):
        raise ExportError(f"RoPE scaling {rope_type or cfg.get('rope_scaling')!r} is not supported by this exporter (LLaMA-2 has none)")
    if cfg.get("attention_bias") or cfg.get("mlp_bias"):
        raise ExportError("LLaMA with attention/MLP biases is not supported by this exporter")
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(name)
    w.add_context_length(int(cfg.get("max_position_embeddings", 4096)))
    w.add_embedding_length(hidden)
    w.add_block_count(int(cfg["num_hidden_layers"]))
    w.add_feed_forward_length(int(cfg["intermediate_size"]))
    w.add_rope_dimension_count(head_dim)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    if head_dim != hidden // n_head:
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
    w.add_layer_norm_rms_eps(float(cfg.get("rms_norm_eps", 1e-5)))
    w.add_rope_freq_base(rope_theta)
    w.add_vocab_size(n_vocab)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    source_gguf = getattr(lm.config, "gguf", None)
    if source_gguf:
        # A GGUF-born LLM (SmolLM2: GPT-2 BPE) keeps its own llama.cpp vocabulary, merges and pre-tokenizer.
        kind = copy_tokenizer_fields(w, source_gguf)
    else:
        tokens, scores, types, kind = vocab_entries(tok, tokenizer_dir, n_vocab)
        w.add_tokenizer_model("llama")
        w.add_token_list(tokens)
        w.add_token_scores(scores)
        w.add_token_types(types)
    for key, setter in (
        ("bos_token_id", w.add_bos_token_id),
        ("eos_token_id", w.add_eos_token_id),
        ("unk_token_id", w.add_unk_token_id),
        ("pad_token_id", w.add_pad_token_id),
    ):
        tid = getattr(tok, key, None)
        if tid is not None:
            setter(int(tid))
    if not source_gguf:
        w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    # Streamed: tensor infos first (shapes only), then each merged tensor computed and written
    # in turn, so peak memory is the model plus one tensor (GGUFWriter.add_tensor would hold all).
    counts: Counter[str] = Counter()
    plan = llama_tensor_plan(lm)
    for gname, shape in plan:
        dt = np.dtype(np.float16 if len(shape) >= 2 else np.float32)
        w.add_tensor_info(gname, shape, dt, int(np.prod(shape)) * dt.itemsize)
        counts["F16" if len(shape) >= 2 else "F32"] += 1
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for (gname, a), (want, shape) in zip(llama_tensors(lm, n_head, n_kv), plan, strict=True):
        if gname != want or a.shape != shape:
            raise ExportError(f"GGUF tensor order changed while writing: {gname} {a.shape} vs {want} {shape}")
        w.write_tensor_data(np.ascontiguousarray(a.astype(np.float16 if a.ndim >= 2 else np.float32)))
    w.close()
    return {
        "n_vocab": n_vocab,
        "n_embd": hidden,
        "n_head": n_head,
        "n_head_kv": n_kv,
        "n_layer": int(cfg["num_hidden_layers"]),
        "n_ctx_train": int(cfg.get("max_position_embeddings", 4096)),
        "rope_theta": rope_theta,
        "vocab": kind,
        "tokenizer_tokens": len(tok),
        "bos_id": tok.bos_token_id,
        "eos_id": tok.eos_token_id,
        "tensor_types": dict(counts),
    }


def quantize_gguf(src: Path, dst: Path, quant: str, threads: int = 0) -> None:
    """``llama_model_quantize(src -> dst)``; ``dst`` is written directly (callers pass a temporary path).

    The runtime's :func:`~emo_stream.runtime.llama_cpp.quantize_gguf` does the
    work (one binding wrapper for exports and the model cache); its failure is
    an :class:`ExportError` here.
    """
    _llama_lib()  # a missing llama.cpp is a MissingDependencyError with the install hint
    from emo_stream.errors import ModelFileError
    from emo_stream.runtime.llama_cpp import quantize_gguf as llama_quantize

    if quant not in QUANTS:
        raise ConfigError(f"GGUF quantization must be one of {', '.join(QUANTS)}, got {quant!r}")
    try:
        llama_quantize(src, dst, quant, threads)
    except ModelFileError as exc:
        raise ExportError(str(exc)) from None


def gguf_tensor_types(path: Path) -> dict[str, int]:
    from emo_stream.runtime.llama_cpp import read_gguf_index

    gguf = _gguf()
    idx = read_gguf_index(path)
    return dict(Counter(gguf.GGMLQuantizationType(t.ggml_type).name for t in idx.tensors.values()))


def export_gguf(
    model: str | Path | SourceModel,
    out: str | Path,
    *,
    quants: Sequence[str] = ("Q8_0",),
    seed: int = 0,
    threads: int = 0,
    parity: bool = True,
    force: bool = False,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Write ``llm/model.<QUANT>.gguf`` for each of ``quants`` into ``out``; return the manifest."""
    quants = tuple(dict.fromkeys(quants))
    bad = [q for q in quants if q not in QUANTS]
    if not quants or bad:
        raise ConfigError(f"--quant must be one or more of {', '.join(QUANTS)}; got {list(quants)}")
    _gguf()
    if any(q != "F16" for q in quants):
        _llama_lib()
    progress = progress or Progress(enabled=False)
    if not isinstance(model, SourceModel):
        progress.note(f"loading model {model}")
    src = model if isinstance(model, SourceModel) else load_source_model(model, seed=seed)
    src.model.eval()
    progress.total = 2 + sum(q != "F16" for q in quants) + (1 if parity else 0)
    writer = ExportWriter(out)
    fingerprint = model_fingerprint(src.model)
    check_same_model(writer, fingerprint, force)
    with progress.step("model config and tokenizer"):
        write_common_files(writer, src.model)
    lm = src.model.llm
    variants: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(dir=writer.root, prefix=".gguf.partial-") as tmp_root:
        tmp = Path(tmp_root)
        f16 = tmp / "model.F16.gguf"
        with progress.step("merge LoRA and write F16 GGUF"):
            facts = write_f16_gguf(f16, lm, writer.root / TOKENIZER_DIR, name=f"emotion-llama-{src.model.config.version}")
        made: dict[str, Path] = {}
        for q in quants:
            if q == "F16":
                made[q] = f16
                continue
            dst = tmp / f"model.{q}.gguf"
            with progress.step(f"quantize to {q} (llama.cpp)"):
                t0 = time.perf_counter()
                quantize_gguf(f16, dst, q, threads)
            made[q] = dst
            variants[q] = {"quantize_seconds": round(time.perf_counter() - t0, 3)}
        for q, p in made.items():
            variants.setdefault(q, {}).update({"file": gguf_rel(q), "quant": q, "tensor_types": gguf_tensor_types(p), "bytes": p.stat().st_size})
        if parity:
            with progress.step(f"parity vs torch ({', '.join(made)})"):
                for q, p in made.items():
                    variants[q]["parity"] = measure_gguf_parity(src.model, p, q)
        for q, p in made.items():
            writer.commit(p, gguf_rel(q))
    prev = (writer.previous or {}).get("gguf", {})
    same_model = (writer.previous or {}).get("model", {}).get("fingerprint") == fingerprint
    all_variants = {k: v for k, v in prev.get("variants", {}).items() if same_model and k not in variants}
    all_variants.update(variants)
    facts.pop("tensor_types", None)  # per variant below
    section = {
        **facts,
        "projector_output_width": facts["n_embd"],
        "embedding_scale": 1.0,
        "lora_merged": bool(lm.config.lora.enabled),
        "lora": {"r": lm.config.lora.r, "alpha": lm.config.lora.alpha, "targets": list(lm.config.lora.target_modules)},
        "score_eos": bool(lm.config.score_eos),
        "tokenize_with": TOKENIZER_DIR,
        "writer": "gguf.GGUFWriter (F16), llama.cpp llama_model_quantize for the quantized variants",
        "variants": all_variants,
    }
    keep = {v["file"] for v in all_variants.values()}
    stale = [r for r in (writer.previous or {}).get("files", {}) if r.startswith("llm/") and r not in keep]
    manifest = writer.finish({"model": model_section(src, fingerprint), "gguf": section}, drop_files_of=stale)
    progress.note(f"GGUF {', '.join(quants)} written to {writer.root / 'llm'} in {progress.elapsed():.1f} s")
    return manifest


def measure_gguf_parity(model: Any, gguf_path: Path, quant: str, n_prompts: int = 3, seed: int = 0) -> dict[str, Any]:
    """Label probabilities (llama.cpp vs torch) on seeded random projections, and embd-vs-ids logits."""
    try:
        from emo_stream.runtime.lm import LlamaCppLM, TorchLM
    except ImportError as exc:  # pragma: no cover
        return {"skipped": str(exc)}
    try:
        cpp = LlamaCppLM.load(gguf_path, model.llm.tokenizer, score_eos=model.llm.config.score_eos, n_threads=1)
    except MissingDependencyError as exc:
        return {"skipped": str(exc)}
    try:
        ref = TorchLM(model.llm)
        rng = np.random.default_rng(seed)
        diffs = []
        from emo_stream.model.prompts import split_prompt

        label_set = model.label_set
        for i in range(n_prompts):
            prompt = model.prompt("emotion", "the person says hello" if i % 2 else "", label_set)
            slots = random_slots(model, split_prompt(prompt).slots, rng, present=i != 2)
            p_ref = ref.label_probs(prompt, slots, label_set.labels)
            p_cpp = cpp.label_probs(prompt, slots, label_set.labels)
            diffs.append(float(np.abs(p_ref - p_cpp).max()))
        ids = np.asarray([cpp.bos_id] + cpp.encode(model.prompt("reason", "", label_set))[:48], dtype=np.int32)
        l_ids = cpp.runtime.logits_for_inputs([ids], all_positions=True)
        l_emb = cpp.runtime.logits_for_inputs([cpp.runtime.token_embeddings(ids)], all_positions=True)
        bound = F16_LABEL_PROB_BOUND if quant == "F16" else Q8_0_LABEL_PROB_BOUND if quant == "Q8_0" else None
        return {
            "prompts": n_prompts,
            "label_prob_max_abs_diff": max(diffs),
            "per_prompt": diffs,
            "bound": bound,
            "embd_vs_ids_logit_max_abs_diff": float(np.abs(l_ids - l_emb).max()),
            "definition": "max over labels and prompts of |p_llama.cpp(label) - p_torch(label)|; prompts: emotion task, seeded random projector tokens",
        }
    finally:
        cpp.close()


def random_slots(model: Any, slot_names: Sequence[str], rng: np.random.Generator, present: bool = True) -> dict[str, Any]:
    """Seeded stand-in projector outputs (scaled like token embeddings) for each prompt slot."""
    import torch

    from emo_stream.model.projectors import SlotTokens

    emb = model.llm.embedding.weight.detach().float()
    scale = float(emb.std())
    counts = _slot_token_counts(model)
    out = {}
    for s in slot_names:
        n = counts.get(s, 4)
        tok = torch.from_numpy(rng.standard_normal((1, n, model.llm.hidden_size)).astype(np.float32) * scale)
        mask = torch.ones(1, n, dtype=torch.bool)
        if not present:
            mask[0, n // 2 :] = False
        out[s] = SlotTokens(tok, mask)
    return out


def _slot_token_counts(model: Any) -> dict[str, int]:
    from emo_stream.model.prompts import FEATURE_SLOT, VIDEO_SLOT

    c = model.config
    if c.version == "v1":
        return {VIDEO_SLOT: c.projector.num_video_tokens, FEATURE_SLOT: 4}
    return {VIDEO_SLOT: c.fusion.num_tokens}
