"""Component comparisons and a pytest-benchmark suite of the hot paths.

Under `make test` the benchmark fixture runs each function once (benchmarks
disabled, a correctness check); `make bench` runs them with timing enabled.
"""

import numpy as np
import pytest

from emo_stream.bench import micro
from emo_stream.engines import clues as cl
from emo_stream.labels import get_label_set
from emo_stream.runtime.llama_cpp import LlamaCppConfig, LlamaCppRuntime

MER = get_label_set("mer2023")


@pytest.fixture(scope="module")
def runtime():
    with LlamaCppRuntime(LlamaCppConfig(n_threads=1)) as rt:
        yield rt


def test_kv_prefix_reuse_gives_identical_scores(runtime, benchmark):
    prefix, tail = micro._prompt(runtime, MER)
    labels = cl.label_continuations(MER)
    on = benchmark(runtime.score_labels, prefix, tail, labels)
    off = runtime.score_labels(prefix, tail, labels, reuse_prefix=False)
    assert np.allclose(on.logprobs, off.logprobs, atol=1e-3)
    res = micro.kv_prefix_reuse(runtime, MER, repeats=1)
    assert res["prompt_tokens"] > 50 and res["reuse_on_ms"] > 0 and res["reuse_off_ms"] > 0


def test_encoder_torch_and_onnxruntime_agree(benchmark):
    res = benchmark(micro.encoder_torch_vs_onnx, 1, 4)
    assert res["max_abs_diff"] < 1e-4 and res["torch_eager_ms"] > 0 and res["onnxruntime_ms"] > 0


def test_llm_size_rows(runtime):
    rows = micro.llm_size_scaling(runtime, MER, repeats=1)
    assert [r["llm"].split()[0] for r in rows[:2]] == ["SmolLM2-135M", "tiny"]
    assert all(r["score_ms"] > 0 and r["prompt_tokens"] == rows[0]["prompt_tokens"] for r in rows)
