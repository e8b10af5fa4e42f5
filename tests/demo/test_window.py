"""The live window's pieces that need no X server: which display problems refuse, the
PyAV/Qt library clash detector, the window size, and the import order on the demo path.

The real window (Xvfb, the GUI OpenCV build, keys, screenshot, signals) is tested by
tests/demo/test_window_gui.py, which scripts/gui_test.sh runs in .venv-gui.
"""

from __future__ import annotations

import ctypes.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from emo_stream.demo.errors import DisplayUnavailable
from emo_stream.demo.window import CvDisplay, display_problem, fit_to_screen, pyav_xcb_clash, x_display_problem

REPO = Path(__file__).resolve().parents[2]


class FakeCv2:
    """Only ``getBuildInformation``: what display_problem reads the GUI backend from."""

    def __init__(self, gui: str) -> None:
        self.gui = gui

    def getBuildInformation(self) -> str:
        return f"General configuration\n  GUI:                           {self.gui}\n"


def test_display_problem_explains_and_suggests_headless() -> None:
    headless = display_problem(FakeCv2("NONE"), environ={"DISPLAY": ":0"}, platform="linux")
    assert "no GUI" in headless and "--headless" in headless and "\n" not in headless
    no_display = display_problem(FakeCv2("QT5"), environ={}, platform="linux")
    assert "DISPLAY" in no_display and "--headless" in no_display
    assert display_problem(FakeCv2("QT5"), environ={"DISPLAY": ":0"}, platform="linux") is None
    assert display_problem(FakeCv2("WIN32UI"), environ={}, platform="win32") is None


def test_qt_needs_x11_where_gtk_takes_wayland() -> None:
    """opencv-python's Qt has only the xcb plugin: on Wayland without XWayland Qt aborts the process."""
    wayland = {"WAYLAND_DISPLAY": "wayland-0"}
    qt = display_problem(FakeCv2("QT5"), environ=wayland, platform="linux")
    assert qt is not None and "XWayland" in qt and "--headless" in qt
    assert display_problem(FakeCv2("GTK3"), environ=wayland, platform="linux") is None


# /proc/self/maps lines as the loader writes them, for the three load orders.
_SITE = "/venv/lib/python3.11/site-packages"
_AV_FIRST = "\n".join(
    f"7f00 r-xp 0 08:01 1 {_SITE}/av.libs/{lib}"
    for lib in ("libxcb-5ddf6756.so.1.1.0", "libxcb-shm-0be6dfbf.so.0.0.0", "libxcb-shape-7716c890.so.0.0.0", "libXau-154567c4.so.6.0.0")
)
_CV2_FIRST = "\n".join(
    [f"7f00 r-xp 0 08:01 1 {_SITE}/av.libs/libxcb-5ddf6756.so.1.1.0"]
    + [f"7f00 r-xp 0 08:01 1 {_SITE}/opencv_python.libs/{lib}" for lib in ("libxcb-shm-0be6dfbf.so.0.0.0", "libxcb-shape-7716c890.so.0.0.0")]
)
_QT_UP = _AV_FIRST + f"\n7f00 r-xp 0 08:01 1 {_SITE}/cv2/qt/plugins/platforms/libqxcb.so"


def test_clash_is_pyavs_shared_name_libraries_loaded_before_qts_x_plugin() -> None:
    assert pyav_xcb_clash(_AV_FIRST)
    assert not pyav_xcb_clash(_CV2_FIRST)  # av's own libxcb alone is harmless: OpenCV's copies came first
    assert not pyav_xcb_clash(_QT_UP)  # the plugin already runs: windows open fine from now on
    assert not pyav_xcb_clash("")  # not Linux / nothing to read


def test_this_process_reads_its_own_maps() -> None:
    """The default argument reads /proc/self/maps; the main venv's headless OpenCV loads no Qt plugin."""
    import av  # noqa: F401 - loaded by the other demo tests anyway

    maps = Path("/proc/self/maps").read_text()
    assert pyav_xcb_clash() == pyav_xcb_clash(maps)


@pytest.mark.parametrize(
    "video, screen, want",
    [
        ((640, 360), (1920, 1080), (640, 360)),  # fits: its own size, never scaled up
        ((1920, 1080), (1280, 800), (1152, 648)),  # 0.9 of the width is the tighter bound
        ((1080, 1920), (1920, 1080), (547, 972)),  # portrait: 0.9 of the height
        ((3840, 2160), None, (3840, 2160)),  # no screen known: its own size
        ((7, 5), (1920, 1080), (7, 5)),
    ],
)
def test_window_is_the_video_size_scaled_down_to_the_screen(video, screen, want) -> None:
    assert fit_to_screen(*video, screen) == want


def test_window_size_refuses_an_empty_frame() -> None:
    with pytest.raises(ValueError, match="positive"):
        fit_to_screen(0, 480, (1920, 1080))


@pytest.mark.skipif(ctypes.util.find_library("X11") is None, reason="no libX11 to ask an X server with")
def test_an_x_display_that_does_not_answer_is_one_line() -> None:
    """Qt aborts the process (SIGABRT) on an unreachable DISPLAY; Xlib is asked first."""
    assert x_display_problem({}) is None
    gone = x_display_problem({"DISPLAY": ":987"})  # no server listens there
    assert gone is not None and "does not answer" in gone and ":987" in gone and "--headless" in gone


def test_cv_display_refuses_where_no_window_can_open() -> None:
    if display_problem() is None:
        pytest.skip("this machine has a display and a GUI OpenCV build")
    with pytest.raises(DisplayUnavailable, match="--headless"):
        CvDisplay()


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={**os.environ, "PYTHONWARNINGS": "ignore", **env},
    )


def test_the_window_module_imports_no_pyav() -> None:
    r = _python("import sys, emo_stream.demo.window; print('av' in sys.modules)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


def test_demo_initialises_the_gui_before_anything_imports_pyav(media) -> None:
    """Through the real entry point (emo_stream.cli.main, every sub-parser built): the live demo
    path reaches prepare_gui with PyAV not loaded yet. prepare_gui is replaced by a probe that
    records the order and ends the command (the main venv's OpenCV has no GUI to initialise)."""
    code = f"""
import sys
import emo_stream.demo.window as w
w.display_problem = lambda *a, **k: None
def probe(*a, **k):
    print("av loaded before prepare_gui:", "av" in sys.modules, flush=True)
    raise SystemExit(7)
w.prepare_gui = probe
from emo_stream.cli import main
sys.exit(main(["demo", "--input", {str(media / "astronaut_3s_noaudio.mp4")!r}, "--engine", "baseline"]))
"""
    r = _python(code, DISPLAY=":0")
    assert r.returncode == 7, r.stderr
    assert r.stdout.strip() == "av loaded before prepare_gui: False"


@pytest.mark.slow
def test_headless_demo_never_touches_the_gui(media, tmp_path) -> None:
    code = f"""
import sys
import emo_stream.demo.window as w
def probe(*a, **k):
    raise SystemExit("prepare_gui called in headless mode")
w.prepare_gui = probe
from emo_stream.cli import main
sys.exit(main(["demo", "--input", {str(media / "astronaut_3s_noaudio.mp4")!r}, "--headless", "--out", {str(tmp_path / "a.mp4")!r},
               "--engine", "baseline", "-q"]))
"""
    r = _python(code)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "a.mp4").is_file()


class _SignalDuringLoad:
    """Subprocess script: the live demo with a stand-in window whose engine load receives ``SIG``."""

    CODE = """
import os, signal, sys, time
import emo_stream.demo.window as w
import emo_stream.engines as engines
w.display_problem = lambda *a, **k: None
w.prepare_gui = lambda *a, **k: None
class Window:
    def __init__(self): pass
    def show(self, image): pass
    def poll_key(self, wait_ms): time.sleep(wait_ms / 1000); return -1
    def close(self): print("window closed", flush=True)
w.CvDisplay = Window
def slow_load(config):
    os.kill(os.getpid(), signal.{sig})  # arrives while the "models load"
    time.sleep(30)
    raise SystemExit("the signal did not stop the model load")
engines.make_engine = slow_load
from emo_stream.cli import main
sys.exit(main(["demo", "--input", {clip!r}, "--engine", "baseline"]))
"""


@pytest.mark.parametrize("sig, code", [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_signal_while_models_load_stops_the_live_demo_at_once(media, sig, code) -> None:
    """Nothing streams yet, so nothing can end gently: the command stops now (one line, 128 + signal),
    the window and sources closed on the way out, as ``emo-stream run`` does."""
    r = _python(_SignalDuringLoad.CODE.format(sig=sig, clip=str(media / "astronaut_3s_noaudio.mp4")))
    assert r.returncode == code, (r.returncode, r.stderr[-2000:])
    assert r.stderr.strip().splitlines() == [f"emo-stream: stopped by {sig}"]
    assert r.stdout.strip() == "window closed"
