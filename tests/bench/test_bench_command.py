"""`emo-stream bench` end to end (figures present and consistent; no wall-clock limits)."""

import json
import math
import subprocess
import sys

import pytest


def _bench(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "emo_stream.cli", "bench", *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_bench_writes_every_figure(media, tmp_path):
    out = tmp_path / "bench.json"
    cfg = tmp_path / "stream.yaml"
    cfg.write_text("window:\n  length_s: 1.5\n  hop_s: 1.0\nengine:\n  name: baseline\n")
    # --config sets window + engine; --hop overrides the config's hop (as in emo-stream run).
    r = _bench("--config", str(cfg), "--hop", "0.5", "--input", str(media / "astronaut_speech.mp4"), "--json", str(out), "--no-micro", "--no-scaling")
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert res["engine"] == "baseline" and res["window"] == {"length_s": 1.5, "hop_s": 0.5}
    assert res["host"]["llama_cpp_build"]  # which kernels llama.cpp was built with
    rt = res["realtime"]
    assert rt["mode"] == "realtime" and rt["states"] == rt["windows_cut"] - rt["windows_dropped"] > 0
    for key in ("p50", "p95", "p99"):
        assert math.isfinite(rt["e2e_latency_ms"][key]) and math.isfinite(rt["engine_ms"][key])
    assert rt["peak_rss_mib"] > 10 and rt["cpu_percent"] > 0 and rt["states_per_s"] > 0
    assert {"video_stats", "audio_stats"} <= set(rt["stages_ms"])
    assert 0 < rt["windows_emitted_fraction"] <= 1
    # The baseline engine has no LLM: its evidence age is reported as absent, not as 0.
    assert rt["llm_evidence_fraction"] is None and rt["llm_age_s"] == {"p50": None, "p95": None}
    assert rt["thread_cpu_s"] and all(v > 0 for v in rt["thread_cpu_s"].values())
    assert len(rt["label_sequence"]) == rt["states"]
    assert 0 <= rt["top_label_agreement_with_lossless"] <= 1
    ratio = res["throughput"]["ratio"]
    assert ratio["windows_per_s"] > 0 and res["throughput"]["reference_style"]["states"] == res["throughput"]["streaming"]["states"]
    md = (tmp_path / "bench.md").read_text()
    assert "end-to-end latency" in md and "reference-style" in md and "**ratio**" in md and "thread (/proc)" in md
    assert "streaming vs reference-style" in r.stderr  # the ratio is printed


@pytest.mark.slow
def test_live_like_mode_streams_through_camera_and_microphone(media, tmp_path):
    pytest.importorskip("pyaudio", reason="the ALSA-file microphone needs the audio extra (emo-stream[audio])")
    out = tmp_path / "live.json"
    r = _bench(
        "--engine", "baseline", "--live", "--input", str(media / "astronaut_speech.mp4"), "--json", str(out), "--no-micro", "--no-scaling", "--no-baseline"
    )
    assert r.returncode == 0, r.stderr
    live = json.loads(out.read_text())["live"]
    assert "skipped" not in live, live
    assert live["mode"] == "realtime" and live["states"] > 0
    # Both device sources delivered: picture and sound statistics in the states.
    assert {"video_stats", "audio_stats"} <= set(live["stages_ms"])
    assert any(name.startswith("capture:camera:udp://") for name in live["thread_cpu_s"])
    assert any(name.startswith("capture:mic:") for name in live["thread_cpu_s"])
    assert live["audio_fed_s"] > 5 and 0 <= live["audio_unrecorded_s"] < live["audio_fed_s"]
    assert "Live-like" in (tmp_path / "live.md").read_text()


def test_missing_input_is_one_line(tmp_path):
    r = _bench("--input", str(tmp_path / "x.mp4"), "--json", str(tmp_path / "o.json"), timeout=60)
    assert r.returncode == 2 and r.stderr.count("\n") == 1


def test_unwritable_json_fails_before_measuring_in_one_line(media, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = _bench("--input", str(media / "astronaut_speech.mp4"), "--json", str(blocker / "bench.json"), timeout=60)
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert r.stderr.startswith("emo-stream: error: cannot write") and "Traceback" not in r.stderr
    r = _bench(
        "--input", str(media / "astronaut_speech.mp4"), "--json", str(tmp_path / "b.json"), "--markdown", str(media / "astronaut_speech.mp4"), timeout=60
    )
    assert r.returncode == 2 and "same file" in r.stderr and r.stderr.count("\n") == 1
