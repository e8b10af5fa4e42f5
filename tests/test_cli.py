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
        [sys.executable, "-m", "emo_stream.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


@pytest.mark.slow
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
    for key in (
        "stamp",
        "window_start",
        "window_end",
        "sequence",
        "label_set",
        "labels",
        "probabilities",
        "top_label",
        "confidence",
        "valence",
        "arousal",
        "modalities",
        "rationale",
        "rationale_age_s",
        "latency_ms",
        "model_id",
    ):
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
    # 7.1 s of speech, hop 0.5: the end falls within the 0.1 s final slack of the 7.0 s window, so
    # that grid window is the final one (no extra tail window; the scheduler's end-of-stream rule).
    assert len(states) == 14 and states[-1].window_end == 7.0
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


@pytest.mark.slow
def test_window_and_hop_flags(media, tmp_path):
    out = tmp_path / "s.jsonl"
    r = run_cli("run", "--input", media / "megamind.avi", "--window", 4, "--hop", 1, "--label-set", "merr", "--jsonl", out, "-q")
    assert r.returncode == 0, r.stderr
    states = read_jsonl(str(out))
    assert len(states) == 12 and states[0].label_set == "merr" and len(states[0].labels) == 9
    assert states[-2].window_end - states[-2].window_start == pytest.approx(4.0)


@pytest.mark.slow
def test_tiny_emotion_llama_streams_a_real_clip(media, tmp_path):
    out = tmp_path / "s.jsonl"
    r = run_cli(
        "run",
        "--input",
        media / "astronaut_speech.mp4",
        "--engine",
        "emotion-llama",
        "-o",
        "tiny=true",
        "--label-set",
        "merr",
        "--jsonl",
        out,
        "-q",
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    states = read_jsonl(str(out))
    assert len(states) == 15
    for s in states:
        assert s.label_set == "merr" and s.top_label in s.labels and abs(sum(s.probabilities) - 1) < 1e-6
        assert "random_weights" in s.flags  # a tiny random model never passes for a trained one


@pytest.mark.slow
def test_import_and_option_errors_are_one_line(tmp_path):
    r = run_cli("import", "emotion-llama", "--checkpoint", tmp_path / "none.pth", "--llama-dir", tmp_path, "--out", tmp_path / "o")
    assert r.returncode == 2 and "not found" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("run", "--input", tmp_path / "x.mp4", "-o", "novalue")
    assert r.returncode == 2 and "KEY=VALUE" in r.stderr


# -- outputs: never the input, failed writes are one line and keep what was written (issue 13) ---------


def _one_error_line(r: subprocess.CompletedProcess) -> str:
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("emo-stream: error:"), (r.returncode, r.stderr)
    return lines[0]


@pytest.mark.parametrize("how", ["same", "symlink", "hardlink"])
def test_jsonl_that_is_the_input_is_refused_and_the_input_survives(media, tmp_path, how):
    src = tmp_path / "in.mp4"
    src.write_bytes((media / "silence_noface_3s.mp4").read_bytes())
    out = {"same": src, "symlink": tmp_path / "l.jsonl", "hardlink": tmp_path / "h.jsonl"}[how]
    if how == "symlink":
        out.symlink_to(src)
    elif how == "hardlink":
        os.link(src, out)
    r = run_cli("run", "--input", src, "--jsonl", out)
    assert "is the same file as --input" in _one_error_line(r)
    assert src.read_bytes() == (media / "silence_noface_3s.mp4").read_bytes()


def test_demo_out_that_is_the_input_is_refused(media, tmp_path):
    src = tmp_path / "in.mp4"
    src.write_bytes((media / "silence_noface_3s.mp4").read_bytes())
    r = run_cli("demo", "--input", src, "--headless", "--out", src, "--engine", "baseline")
    assert "--out" in _one_error_line(r) and src.read_bytes() == (media / "silence_noface_3s.mp4").read_bytes()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="/dev/full is Linux-only")
def test_full_disk_for_jsonl_and_stdout(media):
    r = run_cli("run", "--input", media / "silence_noface_3s.mp4", "--jsonl", "/dev/full", "-q")
    assert _one_error_line(r) == "emo-stream: error: cannot write /dev/full: No space left on device"
    with open("/dev/full", "w") as full:
        r = subprocess.run(
            [sys.executable, "-m", "emo_stream.cli", "run", "--input", str(media / "silence_noface_3s.mp4"), "--engine", "baseline"],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    assert _one_error_line(r) == "emo-stream: error: cannot write stdout: No space left on device"


def test_jsonl_keeps_every_complete_line_when_the_disk_fills_mid_stream(media, tmp_path):
    """RLIMIT_FSIZE makes the file system refuse bytes past a limit (EFBIG), as a full disk would, even as root."""
    import resource
    import signal

    limit = 3000  # a few states of the 23 megamind gives

    def fill_at_limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    out = tmp_path / "s.jsonl"
    r = subprocess.run(
        [sys.executable, "-m", "emo_stream.cli", "run", "--input", str(media / "megamind.avi"), "--engine", "baseline", "--jsonl", str(out), "-q"],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=fill_at_limit,
    )
    assert _one_error_line(r) == f"emo-stream: error: cannot write {out}: File too large"
    raw = out.read_bytes()
    complete = raw[: raw.rfind(b"\n") + 1].decode().splitlines()
    assert 1 <= len(complete) < 23
    assert [json.loads(line)["sequence"] for line in complete] == list(range(len(complete)))


@pytest.mark.slow
def test_closed_and_broken_stdout(media, tmp_path):
    clip = str(media / "megamind.avi")
    r = subprocess.run(
        [sys.executable, "-m", "emo_stream.cli", "run", "--input", clip, "--engine", "baseline"],
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
        preexec_fn=lambda: os.close(1),
    )  # `>&-`
    assert "cannot write stdout: it is closed" in _one_error_line(r)
    out = tmp_path / "s.jsonl"
    p = subprocess.Popen(
        [sys.executable, "-m", "emo_stream.cli", "run", "--input", clip, "--engine", "baseline", "--jsonl", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    p.stdout.readline()  # `| head -1`
    p.stdout.close()
    err = p.stderr.read()
    assert p.wait(timeout=120) == 2 and err.strip().splitlines() == ["emo-stream: error: cannot write stdout: Broken pipe"], err
    assert 1 <= len(read_jsonl(str(out))) < 23  # what was written before stays, whole


def test_report_and_bench_outputs_never_replace_their_input(media, tmp_path):
    states = tmp_path / "s.jsonl"
    assert run_cli("run", "--input", media / "silence_noface_3s.mp4", "--jsonl", states, "-q").returncode == 0
    before = states.read_bytes()
    r = run_cli("report", "--jsonl", states, "--out", tmp_path / "t.png", "--summary", states)
    assert "is the same file as --jsonl" in _one_error_line(r) and states.read_bytes() == before
    r = run_cli("bench", "--input", media / "silence_noface_3s.mp4", "--json", media / "silence_noface_3s.mp4", "--engine", "baseline")
    assert "is the same file as --input" in _one_error_line(r)


# -- signals: Ctrl-C / SIGTERM at any moment, models loading included (issue 13) -------------------------


@pytest.mark.parametrize(
    "signame, delay",
    [
        ("SIGINT", 0.8),
        pytest.param("SIGTERM", 0.8, marks=pytest.mark.slow),
        pytest.param("SIGINT", 2.0, marks=pytest.mark.slow),
        pytest.param("SIGTERM", 2.0, marks=pytest.mark.slow),
    ],
)
def test_a_signal_while_loading_or_streaming_exits_cleanly(media, tmp_path, signame, delay):
    """The default engine imports torch/onnxruntime and loads its models in the first ~2 s: a signal there
    (or once streaming) ends the command with one line and 128 + signal, never a traceback."""
    import signal
    import time

    out = tmp_path / "s.jsonl"
    p = subprocess.Popen(
        [sys.executable, "-m", "emo_stream.cli", "run", "--input", str(media / "astronaut_speech.mp4"), "-q", "--jsonl", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(delay)
    p.send_signal(getattr(signal, signame))
    _, err = p.communicate(timeout=120)
    sig = getattr(signal, signame)
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert p.returncode == 128 + sig, (p.returncode, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and (lines[0] == f"emo-stream: stopped by {signame}" or " states in " in lines[0]), err
    if out.exists():
        read_jsonl(str(out))  # whatever was written parses


def test_a_signal_swallowed_by_a_c_callback_is_still_honoured():
    """A signal handler that raises inside a ctypes callback (llama.cpp's log callback) is swallowed by ctypes;
    the guard keeps it and raises it at the next check (before streaming starts)."""
    import ctypes
    import ctypes.util
    import signal

    from emo_stream.cli import SIGNALS, Interrupted

    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    cmp_t = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
    sent = []

    def compare(a, b):
        if not sent:
            sent.append(1)
            signal.raise_signal(signal.SIGINT)  # the handler runs here, inside the C-called callback
        return 0

    SIGNALS.install()
    try:
        arr = (ctypes.c_int * 8)(*range(8))
        libc.qsort(arr, 8, ctypes.sizeof(ctypes.c_int), cmp_t(compare))  # returns normally: ctypes swallowed it
        assert SIGNALS.pending == signal.SIGINT
        with pytest.raises(Interrupted):
            SIGNALS.check()
    finally:
        SIGNALS.uninstall()
        SIGNALS.pending = None
