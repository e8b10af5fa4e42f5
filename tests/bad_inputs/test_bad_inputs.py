"""Every bad-input corpus case through the real CLI (issue 13 item 2).

One subprocess per case (``.venv/bin/emo-stream ...``, the installed entry
point), with a timeout: a hang fails. The outcome class the case declares is
asserted exactly (see ``generate.py``), and every input file is hashed before
and after: a lost or altered input fails whatever the exit status.

Cases that still fail because their owner's fix is not in yet are listed in
``FAILING_NOW`` (strict xfail: once a fix lands the case passes, the xfail
turns into a failure, and the entry must be removed).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("bad_inputs_generate", HERE / "generate.py")
gen = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = gen
_spec.loader.exec_module(gen)

#: Case id -> why it fails today (issue 13 class, the file that fixes it).
FAILING_NOW: dict[str, str] = {}

CASES = gen.with_xfails(gen.all_cases(), FAILING_NOW)

#: The cases `make test-fast` keeps (`-m "not slow"`): a few per kind, each a fraction of a second.
#: Every other case is marked slow (one CLI subprocess each, ~200 in all); `make test` runs them all.
FAST_CASES = {
    "fmt-mp4-h264-aac",
    "audio-nan",
    "type-s24",
    "dur-0.2s",
    "video-only",
    "garbage",
    "input-missing",
    "cfg-syntax",
    "cli-engine-unknown",
    "model-onnx-trunc",
    "out-alias-same",
}
assert FAST_CASES <= {c.id for c in CASES}, f"FAST_CASES names unknown cases: {sorted(FAST_CASES - {c.id for c in CASES})}"

#: The one error line the CLI prints. argparse usage errors (a malformed number,
#: an unknown choice) carry the subcommand in the program name.
ERROR_LINE = re.compile(r"^emo-stream(?: [a-z-]+)?: error: \S")


def _param(case):
    marks = [pytest.mark.xfail(strict=True, reason=case.xfail)] if case.xfail else []
    if case.id not in FAST_CASES:
        marks.append(pytest.mark.slow)
    return pytest.param(case, id=case.id, marks=marks)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory, media) -> gen.Corpus:
    """The corpus media, built on first use and shared by every case of the session."""
    return gen.Corpus(tmp_path_factory.mktemp("bad_inputs_media"), media)


def _sha256(path: Path) -> str | None:
    if not path.is_file():
        return None
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _record(case, inv, rc: int | None, err: str, verdict: str) -> None:
    """With EMO_BAD_INPUTS_REPORT=FILE, append what happened (``generate.py --table`` makes the case table)."""
    report = os.environ.get("EMO_BAD_INPUTS_REPORT")
    if not report:
        return
    lines = inv.jsonl.read_text().splitlines() if inv.jsonl and inv.jsonl.is_file() else []
    try:
        flags = sorted({f for line in lines for f in json.loads(line).get("flags", [])})
    except ValueError:
        flags = ["<unparsable JSONL>"]
    errors = [ln for ln in err.splitlines() if ERROR_LINE.match(ln)]
    row = {
        "id": case.id,
        "rc": rc,
        "states": len(lines),
        "flags": flags,
        "error": errors[-1] if errors else "",
        "traceback": "Traceback" in err,
        "last_stderr": (err.strip().splitlines() or [""])[-1],
        "verdict": verdict,
    }
    with open(report, "a") as fh:
        fh.write(json.dumps(row) + "\n")


def _flag_present(want: str, flags: set[str]) -> bool:
    return any(alt in flags for alt in want.split("|"))


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_bad_input(case, corpus, tmp_path):
    if case.id == "out-jsonl-readonly-dir" and os.geteuid() == 0:
        pytest.skip("running as root: directory permission bits are not enforced")
    assert gen.EMO_STREAM.is_file(), f"{gen.EMO_STREAM} missing: install the project (make setup)"
    inv = case.build(corpus, tmp_path)
    before = {p: _sha256(p) for p in inv.protect}
    assert all(before.values()), f"corpus inputs missing: {inv.protect}"
    env = {**os.environ, **inv.env, "PYTHONUNBUFFERED": "1"}
    if inv.before:
        inv.before()
    stdout = open(inv.stdout, "wb") if inv.stdout else subprocess.PIPE
    try:
        proc = subprocess.run(
            [str(gen.EMO_STREAM), *inv.argv],
            stdout=stdout,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=tmp_path,
            timeout=case.timeout_s,
        )
    except subprocess.TimeoutExpired:
        _record(case, inv, None, "", f"FAIL: hang (> {case.timeout_s} s)")
        pytest.fail(f"hang: emo-stream {' '.join(inv.argv)} still running after {case.timeout_s} s")
    finally:
        if inv.stdout:
            stdout.close()
        if inv.after:
            inv.after()
    err = proc.stderr.decode("utf-8", "replace")
    try:
        _assert_outcome(case, inv, proc.returncode, err, before)
    except AssertionError as exc:
        _record(case, inv, proc.returncode, err, "FAIL: " + str(exc).splitlines()[0])
        raise
    _record(case, inv, proc.returncode, err, "as expected")


def _assert_outcome(case, inv, rc: int, err: str, before: dict) -> None:
    cmd = f"emo-stream {' '.join(inv.argv)}"
    lost = [str(p) for p, h in before.items() if _sha256(p) != h]
    assert not lost, f"input changed or lost by {cmd}: {lost}"
    assert "Traceback" not in err, f"traceback from {cmd}:\n{err[-3000:]}"

    if case.expect == "error":
        lines = [ln for ln in err.splitlines() if ERROR_LINE.match(ln)]
        assert rc == 2, f"{cmd}: exit {rc}, expected 2 (a refused input)\n{err[-2000:]}"
        assert len(lines) == 1, f"{cmd}: expected exactly one 'emo-stream: error:' line, got {len(lines)}:\n{err[-2000:]}"
        if case.error_match:
            assert re.search(case.error_match, lines[0], re.I), f"{cmd}: the error does not name the problem ({case.error_match!r}): {lines[0]}"
        return

    assert rc == 0, f"{cmd}: exit {rc}, expected 0 with states\n{err[-2000:]}"
    assert inv.jsonl is not None and inv.jsonl.is_file(), f"{cmd}: no JSONL written"
    from emo_stream.state import EmotionState

    states = [json.loads(line) for line in inv.jsonl.read_text().splitlines()]
    for s in states:
        EmotionState.from_dict(s)  # every line is a valid state (probabilities sum to 1 ...)
    assert len(states) >= case.min_states, f"{cmd}: {len(states)} states, expected >= {case.min_states}\n{err[-1000:]}"
    flags = {f for s in states for f in s["flags"]}
    missing = [f for f in case.flags if not _flag_present(f, flags)]
    assert not missing, f"{cmd}: degraded input not flagged: want {missing}, states carry {sorted(flags)}"
    if case.check:
        case.check(states, inv)


def test_corpus_is_big_and_balanced():
    """Issue 13 asks for >= 60 cases across media, configs/options, model files and outputs."""
    groups = {c.id.split("-")[0] for c in CASES}
    assert len(CASES) >= 60, len(CASES)
    assert {"fmt", "audio", "video", "cfg", "cli", "model", "out"} <= groups, groups
    assert {c.expect for c in CASES} == {"states", "error"}
