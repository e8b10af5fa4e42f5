"""``emo-stream`` sizes the OpenMP/BLAS pools before any native library loads (issue 14 item 3).

Each test runs the real CLI ``main`` in a fresh interpreter: the variables only
matter at the moment numpy / onnxruntime / llama.cpp load, so the check is an
import hook that records the environment when numpy is first imported, plus the
BLAS pool size threadpoolctl reads from the loaded library afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from emo_stream.threads import command_of

REPO = Path(__file__).resolve().parents[1]

_PROBE = r"""
import importlib.abc, json, os, sys
seen = {}
class Hook(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name in ("numpy", "onnxruntime") and name not in seen:
            seen[name] = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_WAIT_POLICY")}
        return None
sys.meta_path.insert(0, Hook())
from emo_stream.cli import main
rc = main(json.loads(sys.argv[1]))
import threadpoolctl
blas = [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
print("PROBE " + json.dumps({"rc": rc, "seen": seen, "blas": blas}))
"""


def _probe(argv: list[str], env_extra: dict[str, str] | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY")}
    env.update(env_extra or {})
    proc = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(argv)], capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("PROBE ")]
    assert lines, proc.stderr[-2000:]
    return json.loads(lines[-1][len("PROBE ") :])


@pytest.fixture()
def run_argv(media, tmp_path) -> list[str]:
    return ["run", "--input", str(media / "librivox_0870.wav"), "--engine", "baseline", "-q", "--jsonl", str(tmp_path / "s.jsonl")]


def test_run_sizes_pools_before_numpy_loads(run_argv):
    got = _probe(run_argv)
    assert got["rc"] == 0
    assert got["seen"]["numpy"] == {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    assert got["blas"] and set(got["blas"]) == {1}  # the loaded OpenBLAS really runs one thread


def test_a_value_the_user_set_wins(run_argv):
    got = _probe(["--log-level", "WARNING", *run_argv], {"OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2", "OMP_WAIT_POLICY": "ACTIVE"})
    assert got["seen"]["numpy"] == {"OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2", "OMP_WAIT_POLICY": "ACTIVE"}


def test_non_streaming_commands_keep_library_defaults(media, tmp_path):
    """Training/eval size torch from OMP_NUM_THREADS: only the wait policy is set for them."""
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("")
    got = _probe(["dataset", "check", "--manifest", str(manifest)])
    assert got["seen"], "the command loaded neither numpy nor onnxruntime: the check would be empty"
    for seen in got["seen"].values():
        assert seen["OMP_NUM_THREADS"] is None and seen["OMP_WAIT_POLICY"] == "PASSIVE"


@pytest.mark.parametrize(
    ("argv", "want"),
    [
        (["run", "--input", "x"], "run"),
        (["--log-level", "DEBUG", "bench"], "bench"),
        (["--log-level=INFO", "demo"], "demo"),
        (["--version"], None),
        ([], None),
    ],
)
def test_command_of(argv, want):
    assert command_of(argv) == want
