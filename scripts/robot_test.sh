#!/usr/bin/env bash
# Run tests/robot in the torch-free .venv-robot (scripts/robot_setup.sh makes it; run here first,
# idempotent): the default engine on a clean model cache, and `emo-stream run --export` on a
# tiny export that the full .venv makes beforehand (exporting needs torch; running must not).
#
#   scripts/robot_test.sh [PYTEST ARGS...]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"
scripts/robot_setup.sh

work=$(mktemp -d "${TMPDIR:-/tmp}/emo-robot.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "robot_test: exporting the tiny model with the full .venv (ONNX + GGUF Q8_0) into $work/export"
.venv/bin/emo-stream export onnx --model tiny --out "$work/export" --quiet
.venv/bin/emo-stream export gguf --model tiny --out "$work/export" --quiet

# addopts is replaced: the project's names pytest-benchmark, which the robot venv does not have.
EMO_STREAM_ROBOT_EXPORT="$work/export" EMO_STREAM_CACHE="$work/cache" \
  .venv-robot/bin/python -m pytest -q -p no:cacheprovider -o addopts="-ra --strict-markers --import-mode=importlib" \
  tests/robot "$@"
