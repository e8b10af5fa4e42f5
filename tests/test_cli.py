"""`emo-stream run` end to end on real media, as a user runs it (subprocess)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from emo_stream.state import read_jsonl


def run_cli(*args, timeout=120):
    """Run the CLI; the stream-core tests use the model-free baseline engine unless told otherwise."""
    if "--engine" not in args and args and args[0] == "run":
        args = (*args, "--engine", "baseline")
    return subprocess.run(
        [sys.executable, "-m", "emo_stream.cli", *map(str, args)], capture_output=True, text=True, timeout=timeout, env={**os.environ, "PYTHONWARNINGS": "ignore"}
    )


def test_megamind_gives_one_state_per_hop_and_flags_the_corrupt_packet(media, tmp_path):
    out = tmp_path / "states.jsonl"
    r = run_cli("run", "--input", media / "megamind.avi", "--jsonl", out)
    assert r.returncode == 0, r.stderr
    states = read_jsonl(str(out))
    assert len(states) == 23  # 11.26 s clip, hop 0.5 s: 22 grid windows + one ending at the last sample
    assert states[-1].window_end == pytest.approx(11.26, abs=0.05)
    assert len(r.stdout.strip().splitlines()) == 23  # one printed line per state
    assert [s.sequence for s in states] == list(range(23))
    assert all(s.modalities == ("video", "audio") for s in states)
    assert sum("corrupt_input" in s.flags for s in states) >= 1
    assert all(abs(sum(s.probabilities) - 1) < 1e-6 for s in states)
    assert "23 states" in r.stderr and "corrupt packets 1" in r.stderr
    # The JSONL has the documented schema, line by line.
    first = json.loads(out.read_text().splitlines()[0])
    for key in ("stamp", "window_start", "window_end", "sequence", "label_set", "labels", "probabilities", "top_label",
                "confidence", "valence", "arousal", "modalities", "rationale", "rationale_age_s", "latency_ms", "model_id"):
        assert key in first


def test_file_without_audio_track_streams_video_only(media, tmp_path):
    out = tmp_path / "s.jsonl"
    r = run_cli("run", "--input", media / "astronaut_3s_noaudio.mp4", "--jsonl", out, "-q")
    assert r.returncode == 0, r.stderr
    states = read_jsonl(str(out))
    assert len(states) == 6 and all(s.modalities == ("video",) for s in states)
    assert not any("no_audio" in s.flags for s in states)  # no audio was expected: not a fault


def test_stereo_44k_wav_is_converted(media, tmp_path):
    out = tmp_path / "s.jsonl"
    r = run_cli("run", "--input", media / "speech_stereo_44k.wav", "--jsonl", out, "-q")
    assert r.returncode == 0, r.stderr
    states = read_jsonl(str(out))
    assert len(states) == 15  # 7.1 s of speech, hop 0.5, + the final window at 7.1 s
    assert all(s.modalities == ("audio",) for s in states)
    assert max(s.signals["voiced_ratio"] for s in states) > 0.3  # real speech came through the resampler
    assert all(s.signals["audio_coverage"] > 0.99 for s in states)


@pytest.mark.parametrize(
    "make, expect",
    [
        (lambda d: d / "missing.mp4", "not found"),
        (lambda d: d, "directory"),
        (lambda d: (d / "empty.mp4").write_bytes(b"") or d / "empty.mp4", "empty"),
        (lambda d: (d / "junk.mp4").write_bytes(os.urandom(5000)) or d / "junk.mp4", ""),
    ],
    ids=["missing", "directory", "zero-length", "garbage"],
)
def test_unusable_inputs_are_one_line_errors(tmp_path, make, expect):
    r = run_cli("run", "--input", make(tmp_path))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("emo-stream: error:"), r.stderr
    assert expect in lines[0].lower()
    assert "Traceback" not in r.stderr


def test_bad_config_is_a_one_line_error(media, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("window:\n  hop: 1\n")
    r = run_cli("run", "--input", media / "megamind.avi", "--config", cfg)
    assert r.returncode == 2 and "window.hop" in r.stderr and "Traceback" not in r.stderr


def test_truncated_file_streams_what_it_can(media, tmp_path):
    data = (media / "astronaut_speech.mp4").read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 6 // 10])
    out = tmp_path / "s.jsonl"
    r = run_cli("run", "--input", cut, "--jsonl", out, "-q")
    # Either a clear one-line refusal (moov atom lost) or a flagged, shorter stream: never a traceback.
    assert "Traceback" not in r.stderr
    if r.returncode == 0:
        assert len(read_jsonl(str(out))) >= 1
    else:
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1


def test_window_and_hop_flags(media, tmp_path):
    out = tmp_path / "s.jsonl"
    r = run_cli("run", "--input", media / "megamind.avi", "--window", 4, "--hop", 1, "--label-set", "merr", "--jsonl", out, "-q")
    assert r.returncode == 0, r.stderr
    states = read_jsonl(str(out))
    assert len(states) == 12 and states[0].label_set == "merr" and len(states[0].labels) == 9
    assert states[-2].window_end - states[-2].window_start == pytest.approx(4.0)


def test_tiny_emotion_llama_streams_a_real_clip(media, tmp_path):
    out = tmp_path / "s.jsonl"
    r = run_cli("run", "--input", media / "astronaut_speech.mp4", "--engine", "emotion-llama", "-o", "tiny=true",
                "--label-set", "merr", "--jsonl", out, "-q", timeout=300)
    assert r.returncode == 0, r.stderr
    states = read_jsonl(str(out))
    assert len(states) == 15
    for s in states:
        assert s.label_set == "merr" and s.top_label in s.labels and abs(sum(s.probabilities) - 1) < 1e-6
        assert "random_weights" in s.flags  # a tiny random model never passes for a trained one


def test_import_and_option_errors_are_one_line(tmp_path):
    r = run_cli("import", "emotion-llama", "--checkpoint", tmp_path / "none.pth", "--llama-dir", tmp_path, "--out", tmp_path / "o")
    assert r.returncode == 2 and "not found" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("run", "--input", tmp_path / "x.mp4", "-o", "novalue")
    assert r.returncode == 2 and "KEY=VALUE" in r.stderr
