#!/usr/bin/env bash
# Set up the live-window tests' own venv, .venv-gui (never .venv): the `gui`
# extra's opencv-python and the `headless` extra's opencv-python-headless both
# install the same `cv2` folder, so whichever is installed second silently
# replaces the other. .venv keeps the headless build (CI, servers); .venv-gui
# gets the GUI build (Qt + its X11 plugin), which is what a desktop user runs.
#
# What it installs: emo_stream editable with the light extras the demo's
# baseline engine needs (gui OpenCV + ONNX Runtime CPU), pytest. The wheels
# come from pip's cache after the first time (the same cache .venv used).
# Apt: Xvfb (the X server), xdotool (keys), ImageMagick (`import`, screenshots),
# as scripts/setup.sh installs them.
#
# Idempotent: a stamp keyed by a hash of the inputs skips pip when nothing changed.
#
#   scripts/gui_setup.sh             (PYTHON=python3.11 scripts/gui_setup.sh to pick an interpreter)
#   GUI_SETUP_FORCE=1 scripts/gui_setup.sh   reinstall even when the stamp matches
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"

venv=.venv-gui
scripts/apt_install.sh xvfb xdotool imagemagick

py=${PYTHON:-python3}
"$py" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || { echo "gui_setup: Python >= 3.10 required ($py is $("$py" -V 2>&1))" >&2; exit 1; }

stamp=$venv/.emo_stream_gui-installed
want=$(cat scripts/gui_setup.sh pyproject.toml constraints/cpu.txt | sha256sum | cut -d' ' -f1)
if [ -z "${GUI_SETUP_FORCE:-}" ] && [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  echo "gui_setup: $venv up to date"
  exit 0
fi
if [ ! -x "$venv/bin/python" ]; then
  echo "gui_setup: creating $venv with $("$py" -V 2>&1)"
  "$py" -m venv "$venv" 2>/dev/null || { scripts/apt_install.sh python3-venv; rm -rf "$venv"; "$py" -m venv "$venv"; }
fi
pip=("$venv/bin/python" -m pip install --progress-bar off -q)
echo "gui_setup: installing Python packages into $venv (first time: about a minute)"
"${pip[@]}" --upgrade pip setuptools wheel
"${pip[@]}" -c constraints/cpu.txt -e ".[gui,cpu]" "pytest>=8" "pytest-timeout>=2.2"

# Check the result the way the tests use it: the GUI build, not the headless one.
"$venv/bin/python" -c "
import cv2, emo_stream.demo.window as w
gui = w.gui_backend(cv2)
assert gui and gui.upper() != 'NONE', f'{cv2.__file__} has no GUI (GUI: {gui}); is opencv-python-headless installed too?'
print(f'gui_setup: OpenCV {cv2.__version__}, GUI: {gui}')
"
echo "$want" > "$stamp"
echo "gui_setup: done ($venv)"
