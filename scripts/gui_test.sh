#!/usr/bin/env bash
# Run the live-window tests (tests/demo/test_window_gui.py) in .venv-gui, the venv
# with the GUI OpenCV build, under a private Xvfb the tests start themselves.
#
#   scripts/gui_test.sh [pytest args]      (scripts/gui_setup.sh first; make test runs both)
#
# -s: the tests print what they measured (screenshot checks, q / SIGTERM exit times).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"
py=.venv-gui/bin/python
[ -x "$py" ] || { echo "gui_test: $py missing: run scripts/gui_setup.sh first" >&2; exit 1; }
# Own addopts: pyproject's name plugins of the main venv (pytest-benchmark) that .venv-gui does not have.
# XDG_RUNTIME_DIR: Qt warns on every start without one.
runtime=$(mktemp -d "${TMPDIR:-/tmp}/emo_stream_gui.XXXXXX")
trap 'rm -rf "$runtime"' EXIT
XDG_RUNTIME_DIR="$runtime" exec "$py" -m pytest tests/demo/test_window_gui.py -q -s -p no:cacheprovider \
  -o addopts="-ra --strict-markers --import-mode=importlib" -o timeout=120 "$@"
