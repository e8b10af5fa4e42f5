"""`emo-stream bench` end to end (figures present and consistent; no wall-clock limits)."""

import json
import math
import subprocess
import sys


def test_bench_writes_every_figure(media, tmp_path):
    out = tmp_path / "bench.json"
    r = subprocess.run(
        [sys.executable, "-m", "emo_stream.cli", "bench", "--engine", "baseline", "--input", str(media / "astronaut_speech.mp4"),
         "--json", str(out), "--no-micro", "--no-scaling"],
        capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    rt = res["realtime"]
    assert rt["mode"] == "realtime" and rt["states"] == rt["windows_cut"] - rt["windows_dropped"] > 0
    for key in ("p50", "p95", "p99"):
        assert math.isfinite(rt["e2e_latency_ms"][key]) and math.isfinite(rt["engine_ms"][key])
    assert rt["peak_rss_mib"] > 10 and rt["cpu_percent"] > 0 and rt["states_per_s"] > 0
    assert {"video_stats", "audio_stats"} <= set(rt["stages_ms"])
    ratio = res["throughput"]["ratio"]
    assert ratio["windows_per_s"] > 0 and res["throughput"]["reference_style"]["states"] == res["throughput"]["streaming"]["states"]
    md = (tmp_path / "bench.md").read_text()
    assert "end-to-end latency" in md and "reference-style" in md and "**ratio**" in md
    assert "streaming vs reference-style" in r.stderr  # the ratio is printed


def test_missing_input_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "emo_stream.cli", "bench", "--input", str(tmp_path / "x.mp4"), "--json", str(tmp_path / "o.json")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.count("\n") == 1
