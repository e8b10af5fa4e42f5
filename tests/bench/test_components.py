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


@pytest.mark.slow
def test_kv_prefix_reuse_gives_identical_scores(runtime, benchmark):
    prefix, tail = micro._prompt(runtime, MER)
    labels = cl.label_continuations(MER)
    on = benchmark(runtime.score_labels, prefix, tail, labels)
    off = runtime.score_labels(prefix, tail, labels, reuse_prefix=False)
    assert np.allclose(on.logprobs, off.logprobs, atol=1e-3)
    res = micro.kv_prefix_reuse(runtime, MER, repeats=1)
    assert res["prompt_tokens"] > 50 and res["reuse_on_ms"] > 0 and res["reuse_off_ms"] > 0


@pytest.mark.slow
def test_encoder_torch_and_onnxruntime_agree(benchmark):
    res = benchmark(micro.encoder_torch_vs_onnx, 1, 4)
    assert res["max_abs_diff"] < 1e-4 and res["torch_eager_ms"] > 0 and res["onnxruntime_ms"] > 0


@pytest.mark.slow
def test_llm_size_rows(runtime):
    rows = micro.llm_size_scaling(runtime, MER, repeats=1)
    assert [r["llm"].split()[0] for r in rows[:2]] == ["SmolLM2-135M", "tiny"]
    assert all(r["score_ms"] > 0 and r["prompt_tokens"] == rows[0]["prompt_tokens"] for r in rows)


@pytest.mark.slow
def test_gguf_type_measurement_covers_the_chosen_type():
    from emo_stream.bench.gguf_types import measure_gguf_types, render
    from emo_stream.runtime.llama_cpp import GGUF_TYPES, SCORING_GGUF_TYPE

    res = measure_gguf_types(MER, types=(SCORING_GGUF_TYPE, "Q4_1"), threads=(1,), repeats=1)
    assert SCORING_GGUF_TYPE in GGUF_TYPES and res["chosen"] == SCORING_GGUF_TYPE and res["chosen_measured"]
    assert [(r["type"], r["threads"]) for r in res["rows"]] == [(SCORING_GGUF_TYPE, 1), ("Q4_1", 1)]
    assert all(r["score_ms"] > 0 and r["prompt_tokens"] > 50 for r in res["rows"])
    assert res["fastest"]["1"] in (SCORING_GGUF_TYPE, "Q4_1") and res["build"]
    table = render(res)
    assert f"| {SCORING_GGUF_TYPE} (chosen) |" in table and "| Q4_1 |" in table


def test_thread_cpu_is_charged_to_the_thread_that_spent_it():
    import threading
    import time

    from emo_stream.bench.resources import ResourceMonitor

    def spin() -> None:
        end = time.thread_time() + 0.15  # CPU time, not wall time: holds on a loaded machine
        while time.thread_time() < end:
            pass
        time.sleep(0.3)  # alive for a few more samples: a thread's CPU counts up to its last sample

    with ResourceMonitor(interval_s=0.05) as mon:
        th = threading.Thread(target=spin, name="test-spinner")
        th.start()
        th.join()
    usage = mon.usage
    assert usage.thread_cpu_s.get("test-spinner", 0) >= 0.1  # ticks are 10 ms
    assert "MainThread" not in usage.thread_cpu_s or usage.thread_cpu_s["MainThread"] < usage.thread_cpu_s["test-spinner"]
