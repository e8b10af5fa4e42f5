"""Helpers of the robot-install tests (a module, so test files can import them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

TRAINING_STACK = ("torch", "transformers", "peft")


def run_cli(args: list[str], tmp_path: Path, cache: Path, timeout: float = 300) -> tuple[subprocess.CompletedProcess, list[str]]:
    """``emo-stream ARGS`` in a fresh interpreter with its model cache at ``cache``; also returns the
    top-level names in that process's ``sys.modules`` when the command ended (written by the wrapper)."""
    modules = tmp_path / "modules.json"
    code = (
        "import json, sys\n"
        "from emo_stream.cli import main\n"
        "try:\n"
        f"    rc = main({args!r})\n"
        "finally:\n"
        f"    open({str(modules)!r}, 'w').write(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))\n"
        "sys.exit(rc)\n"
    )
    env = {**os.environ, "EMO_STREAM_CACHE": str(cache)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env)
    loaded = json.loads(modules.read_text()) if modules.is_file() else []
    return out, loaded
