#!/usr/bin/env bash
# Every GPU path in one run and one JSON report (emo_stream/bench/gpu_check.py says what each section does).
#
#   scripts/gpu_check.sh [--dry-run] --out DIR [--clip FILE] [--budget-s S] [--repeats N] [--max-windows N]
#
# On a lent H100/H200 it must finish inside 8 minutes: sections that would start after --budget-s
# (default 420 s) are skipped and the whole run is cut at 470 s; the report is rewritten after every
# section, so a cut run still leaves what it measured. --dry-run runs the same code on the CPU with tiny
# shapes (CI runs it: tests/bench/test_gpu_check.py). Exit 0: no section failed; 1: one failed; 2: bad args.
#
# Python: $PYTHON, else the project's .venv, else python3 with this checkout on PYTHONPATH (the device
# machine's image has torch, transformers, peft, onnx and onnxruntime; PyAV for --clip travels as a wheel).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-}
if [ -z "$py" ]; then
  if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
args=("$@")
have() { local a; for a in "${args[@]}"; do [ "$a" = "$1" ] && return 0; done; return 1; }
if ! have --clip && [ -f .cache/media/megamind.avi ]; then args+=(--clip .cache/media/megamind.avi); fi
if ! have --budget-s; then args+=(--budget-s 420); fi
exec timeout --signal=TERM --kill-after=10 470 "$py" -m emo_stream.bench.gpu_check "${args[@]}"
