"""`emo-stream demo` / `report` as a user types them (through a stand-alone harness parser)."""

from __future__ import annotations

import pytest

from emo_stream.demo.video import probe
from emo_stream.demo.window import display_problem
from emo_stream.state import read_jsonl


@pytest.mark.parametrize("extra", [[], ["--headless", "--out", "cam.mp4"]])
def test_missing_camera_is_one_line_and_non_zero(cli_subprocess, tmp_path, extra) -> None:
    r = cli_subprocess("demo", "--camera", "99", "--engine", "baseline", *[str(tmp_path / e) if e.endswith(".mp4") else e for e in extra])
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert lines == ["emo-stream: error: camera 99 could not be opened (no such device?)"], r.stderr
    assert not (tmp_path / "cam.mp4").exists()


def test_window_mode_without_a_display_refuses_and_suggests_headless(cli_subprocess, media) -> None:
    if display_problem() is None:
        pytest.skip("this machine can show a window")
    r = cli_subprocess("demo", "--input", media / "astronaut_3s_noaudio.mp4", "--engine", "baseline")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("emo-stream: error: cannot open the live window")
    assert "--headless --out annotated.mp4" in lines[0]


@pytest.mark.slow
def test_headless_file_writes_video_and_jsonl_next_to_it(cli, media, tmp_path) -> None:
    out = tmp_path / "sub" / "annotated.mp4"
    code, stdout, stderr = cli("demo", "--input", media / "astronaut_speech.mp4", "--headless", "--out", out, "--engine", "baseline", "--hop", "1.0")
    assert code == 0, stderr
    states = read_jsonl(str(out.with_suffix(".jsonl")))
    assert len(states) == len(stdout.strip().splitlines()) == 8  # one printed line per state
    info = probe(out)
    assert info.frames == 178 and info.audio_codec == "aac"
    assert "annotated 178/178 frames" in stderr and "copy aac" in stderr


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--headless"], "--headless needs --out"),
        (["--out", "x.mp4"], "add --headless"),
        (["--headless", "--out", "x.webm"], "use one of"),
        (["--input", "MEDIA", "--mic", "0"], "microphone can only be combined with camera"),
        (["--input", "nope.mp4", "--headless", "--out", "x.mp4"], "input file not found"),
        (["--headless", "--out", "x.mp4", "--max-seconds", "0"], "--max-seconds must be > 0"),
        (["--input", "MEDIA", "--headless", "--out", "x.mp4", "-o", "novalue"], "KEY=VALUE"),
        (["--input", "WAV", "--headless", "--out", "x.mp4"], "has no video track"),
    ],
)
def test_usage_errors_are_one_line(cli, media, tmp_path, argv, message) -> None:
    named = {"MEDIA": media / "astronaut_3s_noaudio.mp4", "WAV": media / "librivox_0870.wav"}
    argv = [str(named[a]) if a in named else str(tmp_path / a) if a.startswith("x.") else a for a in argv]
    code, _, stderr = cli("demo", "--engine", "baseline", *argv)
    assert code == 2
    assert stderr.startswith("emo-stream: error: ") and message in stderr and stderr.count("\n") == 1


@pytest.mark.slow
def test_report_command(cli, media, tmp_path) -> None:
    out = tmp_path / "annotated.mp4"
    assert cli("demo", "-i", media / "astronaut_3s_noaudio.mp4", "--headless", "-O", out, "--engine", "baseline", "-q")[0] == 0
    n = len(read_jsonl(str(out.with_suffix(".jsonl"))))
    code, _stdout, stderr = cli("report", "--jsonl", out.with_suffix(".jsonl"), "--out", tmp_path / "timeline.png")
    assert code == 0, stderr
    assert (tmp_path / "timeline.png").stat().st_size > 10_000
    assert "(uniform) 100%" in stderr and f"{n} states" in stderr
    md = (tmp_path / "timeline.md").read_text()
    assert "![timeline](timeline.png)" in md and "| 1 | 0.00 | 3.00 | 3.00 | (uniform) |" in md
    code, _, stderr = cli("report", "--jsonl", tmp_path / "missing.jsonl", "--out", tmp_path / "t.png")
    assert code == 2 and "states file not found" in stderr
