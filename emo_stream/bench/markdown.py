"""Render a benchmark result (the JSON of ``emo-stream bench``) as markdown tables."""

from __future__ import annotations

from typing import Any


def _f(x: Any, digits: int = 1) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _stream_rows(r: dict[str, Any]) -> list[str]:
    e2e, eng = r["e2e_latency_ms"], r["engine_ms"]
    return [
        f"| states | {r['states']} over {_f(r['media_s'])} s of media ({r['mode']}) |",
        f"| states/s (wall) | {_f(r['states_per_s'], 2)} |",
        f"| end-to-end latency p50 / p95 / p99 (window end -> state) | {_f(e2e['p50'])} / {_f(e2e['p95'])} / {_f(e2e['p99'])} ms |",
        f"| engine time p50 / p95 / p99 | {_f(eng['p50'])} / {_f(eng['p95'])} / {_f(eng['p99'])} ms |",
        f"| windows dropped / cut | {r['windows_dropped']} / {r['windows_cut']} |",
        f"| capture samples dropped | {r['capture_dropped']} |",
        f"| CPU | {_f(r['cpu_percent'])} % (100 % = one core) |",
        f"| peak RSS | {_f(r['peak_rss_mib'])} MiB |",
        f"| GPU peak memory | {_f(r['gpu_peak_mib'])} MiB |",
    ] + _evidence_rows(r)


def _evidence_rows(r: dict[str, Any]) -> list[str]:
    """Rows that older reports (before issue 14) do not have."""
    rows = []
    if r.get("windows_emitted_fraction") is not None:
        rows.append(f"| windows emitted | {_f(100 * r['windows_emitted_fraction'])} % |")
    if "llm_age_s" in r:
        age = r["llm_age_s"]
        frac = r.get("llm_evidence_fraction")
        rows.append(
            f"| LLM evidence age p50 / p95 | {_f(age.get('p50'), 2)} / {_f(age.get('p95'), 2)} s (in {_f(None if frac is None else 100 * frac)} % of states) |"
        )
    if r.get("multimodal_tokens"):
        t = r["multimodal_tokens"]
        rows.append(f"| multimodal tokens per window (min / p50 / max) | {_f(t['min'], 0)} / {_f(t['p50'], 0)} / {_f(t['max'], 0)} |")
    if r.get("top_label_agreement_with_lossless") is not None:
        rows.append(f"| top-label agreement with the lossless run | {_f(100 * r['top_label_agreement_with_lossless'])} % |")
    return rows


def _cpu_rows(r: dict[str, Any]) -> list[str]:
    lines = []
    if r.get("stage_cpu_s"):
        lines += ["| stage (pipeline's CPU clock) | CPU s |", "|---|---|"]
        lines += [f"| {k} | {_f(v, 2)} |" for k, v in sorted(r["stage_cpu_s"].items(), key=lambda kv: -kv[1])]
        lines.append("")
    if r.get("thread_cpu_s"):
        lines += ["| thread (/proc) | CPU s |", "|---|---|"]
        lines += [f"| {k} | {_f(v, 2)} |" for k, v in list(r["thread_cpu_s"].items())[:12]]
        lines.append("")
    return lines


def render_markdown(res: dict[str, Any]) -> str:
    lines = [f"# emo-stream bench: `{res['engine']}` on `{res['input']}`", "", f"model: `{res.get('model_id', '?')}`; host: {res['host']}", ""]
    rt = res["realtime"]
    lines += ["## Paced in real time (as a camera delivers it)", "", "| figure | value |", "|---|---|", *_stream_rows(rt), ""]
    lines += ["| stage | p50 ms | p95 ms |", "|---|---|---|"]
    lines += [f"| {k} | {_f(v['p50'])} | {_f(v['p95'])} |" for k, v in rt["stages_ms"].items()]
    lines += ["", *_cpu_rows(rt)]
    live = res.get("live")
    if live and "skipped" in live:
        lines += [f"Live-like run skipped: {live['skipped']}", ""]
    elif live:
        lines += ["## Live-like (UDP loopback camera + ALSA-file microphone)", "", "| figure | value |", "|---|---|", *_stream_rows(live), ""]
        lines += ["| stage | p50 ms | p95 ms |", "|---|---|---|"]
        lines += [f"| {k} | {_f(v['p50'])} | {_f(v['p95'])} |" for k, v in live["stages_ms"].items()]
        lines += ["", *_cpu_rows(live)]
    lines += [f"ROS publish latency: {res.get('ros_publish_latency', 'n/a')}", ""]
    tp = res.get("throughput")
    if tp and "reference_style" in tp:
        s, r, ratio = tp["streaming"], tp["reference_style"], tp["ratio"]
        lines += [
            "## Streaming design vs reference-style pipeline (same process, as fast as possible)",
            "",
            "| | windows/s | engine p50 ms | engine p95 ms | CPU % |",
            "|---|---|---|---|---|",
            f"| emo_stream ({res['engine']}) | {_f(s['states_per_s'], 2)} | {_f(s['engine_ms']['p50'])} | {_f(s['engine_ms']['p95'])} | {_f(s['cpu_percent'])} |",
            f"| reference-style | {_f(r['states_per_s'], 2)} | {_f(r['engine_ms']['p50'])} | {_f(r['engine_ms']['p95'])} | {_f(r['cpu_percent'])} |",
            f"| **ratio** | **{_f(ratio['windows_per_s'], 1)}x** | **{_f(ratio['engine_p50_latency'], 1)}x lower** | | |",
            "",
        ]
    comp = res.get("components")
    if comp:
        lines += ["## Components", ""]
        enc = comp.get("encoder_torch_vs_onnxruntime", {})
        if "torch_eager_ms" in enc:
            lines.append(
                f"- FER net (batch {enc['batch']}): torch eager {_f(enc['torch_eager_ms'], 2)} ms vs ONNX Runtime {_f(enc['onnxruntime_ms'], 2)} ms ({_f(enc['speedup'])}x), max |diff| {enc['max_abs_diff']:.1e}"
            )
        kv = comp.get("kv_prefix_reuse", {})
        if "reuse_on_ms" in kv:
            lines.append(
                f"- KV-prefix reuse ({kv['prompt_tokens']} prompt tokens): on {_f(kv['reuse_on_ms'])} ms vs off {_f(kv['reuse_off_ms'])} ms ({_f(kv['speedup'])}x)"
            )
        for lt in comp.get("llamacpp_vs_transformers_by_threads") or [comp.get("llamacpp_vs_transformers", {})]:
            if "llama_cpp_q4_ms" in lt:
                lines.append(
                    f"- Label scoring, SmolLM2, {lt['threads']} thread(s) each: llama.cpp {lt.get('gguf_type', 'Q4_1')} {_f(lt['llama_cpp_q4_ms'])} ms vs transformers fp32 {_f(lt['transformers_fp32_ms'])} ms ({_f(lt['speedup'])}x); same top label: {lt['same_top_label']}, max prob diff {_f(lt['max_prob_diff_q4_vs_fp32'], 3)}"
                )
            elif lt:
                lines.append(f"- llama.cpp vs transformers: {lt}")
        gt = comp.get("gguf_types", {})
        if "rows" in gt:
            from emo_stream.bench.gguf_types import render

            lines += ["", "GGUF type for label scoring (ms per scoring of the clue prompt, nothing cached):", "", render(gt)]
        sizes = comp.get("llm_size")
        if isinstance(sizes, list):
            lines += ["", "| LLM | params (M) | prompt tokens | scoring ms |", "|---|---|---|---|"]
            lines += [f"| {r['llm']} | {_f(float(r['params_m']), 1)} | {r['prompt_tokens']} | {_f(r['score_ms'])} |" for r in sizes]
        lines.append("")
    sc = res.get("scaling")
    if sc:
        lines += [
            "## Scaling (lossless runs, same engine)",
            "",
            "| sweep | setting | states | engine p50 ms | engine p95 ms | CPU s per media s |",
            "|---|---|---|---|---|---|",
        ]
        for name, rows in sc.items():
            lines += [
                f"| {name} | {r['window']} | {r['states']} | {_f(r['engine_p50_ms'])} | {_f(r['engine_p95_ms'])} | {_f(r['cpu_s_per_media_s'], 2)} |"
                for r in rows
            ]
        lines.append("")
    if res.get("people"):
        from emo_stream.bench.people import render_people

        lines += render_people(res["people"])
    return "\n".join(lines)
