#!/usr/bin/env python3
"""Real-time figures of one ``emo-stream run --jsonl`` output (issue 14's acceptance numbers).

Reads the states a run wrote and prints:

* emitted / expected windows: expected = the grid windows of the stream
  (``max(sequence) + 1``: sequence k is the window ending at ``t0 + (k+1) * hop``,
  so gaps are dropped windows; the final extra window at the last sample
  shares the last grid index, see ``Scheduler.ready_windows``);
* ``latency_ms.since_window_end`` p50 / p95 / p99 (window end -> state emitted
  on the capture / playback clock; absent for lossless runs, which have no "now");
* LLM evidence: share of states that carry ``signals.llm_age_s`` and its p50 / p95;
* rationales: the longest stream-time interval between states that carry a new
  rationale (and from the first state to the first rationale);
* with ``--against OTHER.jsonl``: top-label agreement over the windows both runs
  emitted (matched by ``sequence``) and the max-abs probability difference.

Usage::

    python scripts/latency_report.py /tmp/h5/paced.jsonl --against /tmp/h5/lossless.jsonl
    python scripts/latency_report.py run.jsonl --json   # one JSON object instead of text
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from emo_stream.stats import percentile


def read_states(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL file, one per non-empty line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise SystemExit(f"latency_report: error: cannot read {path}: {exc.strerror}") from None
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            raise SystemExit(f"latency_report: error: {path}:{n} is not JSON") from None
    return out


_pct = percentile  # the one percentile helper (emo_stream.stats)


def report(states: list[dict[str, Any]], against: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The figures as a flat dict (None where a figure does not apply)."""
    seqs = [int(s["sequence"]) for s in states]
    expected = max(seqs) + 1 if seqs else 0
    emitted = len(set(seqs))
    lat = [float(s["latency_ms"]["since_window_end"]) for s in states if "since_window_end" in s.get("latency_ms", {})]
    ages = [float(s["signals"]["llm_age_s"]) for s in states if "llm_age_s" in s.get("signals", {})]
    stamps = [float(s["window_end"]) for s in states if s.get("rationale")]
    first = float(states[0]["window_end"]) if states else None
    gaps = list(np.diff(stamps)) if len(stamps) > 1 else []
    out: dict[str, Any] = {
        "states": len(states),
        "expected_windows": expected,
        "emitted_share": emitted / expected if expected else None,
        "since_window_end_p50_ms": _pct(lat, 50),
        "since_window_end_p95_ms": _pct(lat, 95),
        "since_window_end_p99_ms": _pct(lat, 99),
        "llm_evidence_share": len(ages) / len(states) if states else None,
        "llm_age_p50_s": _pct(ages, 50),
        "llm_age_p95_s": _pct(ages, 95),
        "rationales": len(stamps),
        "rationale_interval_max_s": float(max(gaps)) if gaps else None,
        "first_rationale_after_s": (stamps[0] - first) if stamps and first is not None else None,
    }
    if against is not None:
        other = {int(s["sequence"]): s for s in against}
        pairs = [(s, other[int(s["sequence"])]) for s in states if int(s["sequence"]) in other]
        agree = [s["top_label"] == o["top_label"] for s, o in pairs]
        diffs = [float(np.max(np.abs(np.subtract(s["probabilities"], o["probabilities"])))) for s, o in pairs]
        out.update(
            compared_windows=len(pairs),
            top_label_agreement=float(np.mean(agree)) if agree else None,
            prob_max_abs_diff=float(max(diffs)) if diffs else None,
            prob_mean_abs_diff=float(np.mean(diffs)) if diffs else None,
        )
    return out


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("jsonl", type=Path, help="states written by emo-stream run --jsonl")
    parser.add_argument("--against", type=Path, help="another run of the same input (e.g. lossless) to compare top labels with")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    states = read_states(args.jsonl)
    if not states:
        print(f"latency_report: error: {args.jsonl} holds no states", file=sys.stderr)
        return 2
    figures = report(states, read_states(args.against) if args.against else None)
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key:28s} {_fmt(value)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
