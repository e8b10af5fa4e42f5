"""Which GGUF type scores fastest: the packaged SmolLM2 requantized to each candidate type.

Label scoring is one prefill (the window's clue tokens after the cached static
prompt; the whole prompt when nothing is cached), so the measure is
:meth:`~emo_stream.runtime.llama_cpp.LlamaCppRuntime.score_labels` on the real
clue prompt with ``reuse_prefix=False`` (every token evaluated), median of
``repeats`` calls, at each thread count. The result says which llama.cpp build
ran (its instruction sets) and checks that the type the runtime uses
(:data:`~emo_stream.runtime.llama_cpp.SCORING_GGUF_TYPE`) is among those measured.

    python -m emo_stream.bench.gguf_types [--threads 1 2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Sequence
from typing import Any

from emo_stream.bench import micro
from emo_stream.engines import clues as cl
from emo_stream.labels import LabelSet, get_label_set
from emo_stream.runtime.llama_cpp import GGUF_TYPES, SCORING_GGUF_TYPE, LlamaCppConfig, LlamaCppRuntime, cpu_features


def measure_gguf_types(label_set: LabelSet, types: Sequence[str] = GGUF_TYPES, threads: Sequence[int] = (1, 2), repeats: int = 5) -> dict[str, Any]:
    """Scoring milliseconds per (type, threads) and the fastest type per thread count."""
    rows: list[dict[str, Any]] = []
    labels = cl.label_continuations(label_set)
    for gguf_type in types:
        for n in threads:
            with LlamaCppRuntime(LlamaCppConfig(default_model_type=gguf_type, n_threads=n)) as rt:
                prefix, tail = micro._prompt(rt, label_set)
                ms = micro.timed(functools.partial(rt.score_labels, prefix, tail, labels, reuse_prefix=False), repeats)
                rows.append(
                    {
                        "type": gguf_type,
                        "threads": n,
                        "prompt_tokens": len(rt.tokenize(prefix + tail)),
                        "score_ms": ms,
                        "file_mib": rt.path.stat().st_size / 2**20,
                    }
                )
    fastest = {str(n): min((r for r in rows if r["threads"] == n), key=lambda r: r["score_ms"])["type"] for n in threads}
    features = cpu_features()
    return {
        "build": sorted(k for k, on in features.items() if on),
        "repeats": repeats,
        "rows": rows,
        "fastest": fastest,
        "chosen": SCORING_GGUF_TYPE,
        "chosen_measured": SCORING_GGUF_TYPE in types,
    }


def render(res: dict[str, Any]) -> str:
    """A markdown table: one row per type, one column per thread count."""
    threads = sorted({r["threads"] for r in res["rows"]})
    lines = [
        f"llama.cpp build: {' '.join(res['build'])}",
        "",
        "| type | " + " | ".join(f"{n} thread(s) ms" for n in threads) + " | file MiB |",
        "|---|" + "---|" * (len(threads) + 1),
    ]
    for t in dict.fromkeys(r["type"] for r in res["rows"]):
        cells = {r["threads"]: r for r in res["rows"] if r["type"] == t}
        mark = " (chosen)" if t == res["chosen"] else ""
        lines.append(f"| {t}{mark} | " + " | ".join(f"{cells[n]['score_ms']:.1f}" for n in threads) + f" | {next(iter(cells.values()))['file_mib']:.0f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m emo_stream.bench.gguf_types", description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--types", nargs="+", default=list(GGUF_TYPES), choices=GGUF_TYPES)
    p.add_argument("--label-set", default="mer2023")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    a = p.parse_args(argv)
    res = measure_gguf_types(get_label_set(a.label_set), a.types, a.threads, a.repeats)
    print(json.dumps(res, indent=2) if a.json else render(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
