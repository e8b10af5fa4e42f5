"""The live demo's OpenCV window, and the order in which its libraries must load.

OpenCV's ``opencv-python`` wheel shows windows through a bundled Qt whose X11
plugin (``libqxcb``) links the wheel's own copies of ``libxcb-shape``,
``libxcb-shm``, ``libxcb-xfixes`` and ``libXau``. PyAV's wheel bundles copies
of the same libraries under the *same* hashed file names, but linked against
PyAV's private ``libxcb``. The dynamic loader deduplicates by name, so when
PyAV loads first, Qt's plugin gets PyAV's copies and ends up with two
``libxcb`` instances on one X connection: ``cv2.namedWindow`` then spins at
100% CPU forever, inside C, where even SIGTERM's Python handler never runs
(PyAV issues #978/#1050).

Measured with opencv-python 4.14 + av 18.1 under Xvfb: ``import av, cv2;
cv2.namedWindow("x")`` hangs; ``import cv2, av`` (OpenCV's copies load first)
and :func:`prepare_gui` then ``import av`` both open windows normally.

So the GUI must load first. :func:`prepare_gui` initialises OpenCV's window
system (Qt and its X plugin) with a window that is destroyed at once; the
``demo`` command calls it before anything imports ``av``. This module itself
imports neither PyAV nor anything that does (a test keeps it so).
:class:`CvDisplay` refuses with a one-line :class:`DisplayUnavailable` instead
of hanging when the order was wrong (see :func:`pyav_xcb_clash`).

The window is sized to the video, scaled down to fit the screen
(:func:`fit_to_screen`; the screen size comes from Xlib where there is one).
Qt aborts the whole process (SIGABRT) when ``$DISPLAY`` does not answer, so
:func:`check_display` asks plain Xlib first and refuses in one line.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import time
from collections.abc import Mapping

import numpy as np

from emo_stream.demo.errors import DisplayUnavailable, import_cv2

WINDOW_TITLE = "emo-stream demo"
HEADLESS_HINT = "use --headless --out annotated.mp4 to write an annotated video instead"
#: Largest share of the screen a window may take (leaves room for title bar and panels).
SCREEN_FILL = 0.9


def display_problem(cv2=None, environ: Mapping[str, str] | None = None, platform: str | None = None) -> str | None:
    """Why a live window cannot be shown here, in one line; None when it can (as far as we can tell
    without touching the display: see :func:`x_display_problem` for the connection itself)."""
    environ = os.environ if environ is None else environ
    platform = sys.platform if platform is None else platform
    problems = []
    if cv2 is None:
        try:
            import cv2
        except ImportError:
            return f"cannot open the live window: OpenCV is not installed (pip install 'emo-stream[gui]'); {HEADLESS_HINT}"
    gui = gui_backend(cv2)
    if gui is not None and gui.upper() == "NONE":
        problems.append(
            "this OpenCV build has no GUI (opencv-python-headless has no cv2.imshow; for a window, "
            "pip uninstall opencv-python-headless, then pip install 'emo-stream[gui]')"
        )
    if platform.startswith(("linux", "freebsd", "openbsd")):
        if (gui or "").upper().startswith("QT"):
            # opencv-python's Qt ships only the X11 (xcb) platform plugin: without an X
            # server (or XWayland) Qt aborts the process instead of returning an error.
            if not environ.get("DISPLAY"):
                on = " (Wayland without XWayland is not enough for OpenCV's Qt)" if environ.get("WAYLAND_DISPLAY") else ""
                problems.append(f"no X display is set (DISPLAY){on}")
        elif not (environ.get("DISPLAY") or environ.get("WAYLAND_DISPLAY")):
            problems.append("no display is set (DISPLAY/WAYLAND_DISPLAY)")
    if not problems:
        return None
    return "cannot open the live window: " + " and ".join(problems) + f"; {HEADLESS_HINT}"


def gui_backend(cv2) -> str | None:
    """OpenCV's ``GUI:`` build setting (``NONE`` in headless wheels, ``QT5``/``GTK3``/``WIN32UI``/``COCOA`` otherwise)."""
    try:
        info = cv2.getBuildInformation()
    except Exception:
        return None
    for line in info.splitlines():
        key, sep, value = line.strip().partition(":")
        if sep and key.strip() == "GUI":
            return value.strip() or None
    return None


def _loaded_libraries(maps_path: str = "/proc/self/maps") -> str | None:
    try:
        with open(maps_path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:  # not Linux: no such clash is known there
        return None


#: Libraries both wheels bundle under the same hashed file names (see the module doc).
_SHARED_XCB = ("libxcb-shm-", "libxcb-shape-", "libxcb-xfixes-", "libXau-")


def pyav_xcb_clash(maps: str | None = None) -> bool:
    """True when creating the first Qt window now would livelock (see the module doc).

    That is: PyAV's copies of the libraries both wheels share by name are loaded
    (so Qt's X plugin would get them) and Qt's X plugin (``libqxcb``) is not loaded
    yet. Importing ``cv2`` before ``av`` is enough to avoid it (OpenCV's copies
    load first); :func:`prepare_gui` makes it certain by loading the plugin.
    """
    maps = _loaded_libraries() if maps is None else maps
    if not maps or "libqxcb" in maps:
        return False
    return any(f"av.libs/{name}" in maps for name in _SHARED_XCB)


def prepare_gui(cv2=None) -> None:
    """Load OpenCV's window system now (before PyAV): create and destroy one window.

    Raises :class:`DisplayUnavailable` (one line) where no window can open, or
    where opening one would hang (PyAV loaded first). Safe to call more than once.
    """
    cv2 = import_cv2() if cv2 is None else cv2
    check_display(cv2)
    name = f"{WINDOW_TITLE} (starting)"
    try:
        cv2.namedWindow(name, cv2.WINDOW_AUTOSIZE)
        cv2.destroyWindow(name)
        cv2.waitKey(1)
    except cv2.error as exc:
        raise DisplayUnavailable(f"cannot open a window ({_cv_message(exc)}); {HEADLESS_HINT}") from None


def check_display(cv2) -> None:
    """Refuse (:class:`DisplayUnavailable`, one line) before any call into OpenCV's GUI
    that would fail, abort the process (Qt with an unreachable X server) or hang (the clash)."""
    problem = display_problem(cv2)
    if problem:
        raise DisplayUnavailable(problem)
    if _qt(cv2):
        problem = x_display_problem()
        if problem:
            raise DisplayUnavailable(problem)
        if pyav_xcb_clash():
            raise DisplayUnavailable(_CLASH)


_CLASH = (
    "cannot open the live window: PyAV's bundled libxcb was loaded before OpenCV's Qt window plugin, "
    "and the two livelock (PyAV issues #978/#1050); call emo_stream.demo.window.prepare_gui() before "
    f"anything imports av (emo-stream demo does); {HEADLESS_HINT}"
)


def _qt(cv2) -> bool:
    return (gui_backend(cv2) or "").upper().startswith("QT")


def _cv_message(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[-1] if text else type(exc).__name__


def _open_x(display: str | None = None):
    """(Xlib, Display*) for ``display`` (None: ``$DISPLAY``); (None, None) where Xlib is
    missing; (xlib, 0) where the server does not answer. Plain Xlib through ctypes: it
    cannot abort the process the way Qt does on an unreachable display."""
    path = ctypes.util.find_library("X11")
    if path is None:
        return None, None
    try:
        xlib = ctypes.CDLL(path)
        xlib.XOpenDisplay.restype = ctypes.c_void_p
        xlib.XOpenDisplay.argtypes = [ctypes.c_char_p]
        for fn in (xlib.XDefaultScreen, xlib.XCloseDisplay):
            fn.argtypes = [ctypes.c_void_p]
        xlib.XDisplayWidth.argtypes = xlib.XDisplayHeight.argtypes = [ctypes.c_void_p, ctypes.c_int]
        return xlib, xlib.XOpenDisplay(display.encode() if display else None) or 0
    except (OSError, AttributeError):
        return None, None


def x_display_problem(environ: Mapping[str, str] | None = None) -> str | None:
    """One line when ``$DISPLAY`` names an X server that does not answer; None when it answers
    (or when that cannot be asked: no Xlib here; Qt then reports for itself)."""
    environ = os.environ if environ is None else environ
    display = environ.get("DISPLAY")
    if not display:
        return None
    xlib, dpy = _open_x(display)
    if xlib is None:
        return None
    if not dpy:
        return f"cannot open the live window: the X display {display} does not answer (DISPLAY={display}); {HEADLESS_HINT}"
    xlib.XCloseDisplay(dpy)
    return None


def screen_size() -> tuple[int, int] | None:
    """(width, height) of the default X screen, or None where that cannot be asked (no X, no Xlib)."""
    if not os.environ.get("DISPLAY"):
        return None
    xlib, dpy = _open_x()
    if not dpy:
        return None
    try:
        screen = xlib.XDefaultScreen(dpy)
        size = int(xlib.XDisplayWidth(dpy, screen)), int(xlib.XDisplayHeight(dpy, screen))
    finally:
        xlib.XCloseDisplay(dpy)
    return size if size[0] > 0 and size[1] > 0 else None


def fit_to_screen(width: int, height: int, screen: tuple[int, int] | None, fill: float = SCREEN_FILL) -> tuple[int, int]:
    """The window size for a ``width`` x ``height`` video: its own size, or scaled down
    (aspect kept) to at most ``fill`` of the screen. Never scaled up: a small video
    stays pixel-exact."""
    if width <= 0 or height <= 0:
        raise ValueError(f"frame size must be positive, got {width}x{height}")
    if screen is None:
        return width, height
    scale = min(1.0, fill * screen[0] / width, fill * screen[1] / height)
    return max(1, round(width * scale)), max(1, round(height * scale))


class CvDisplay:
    """An OpenCV window (``cv2.imshow``) sized to the video; refuses with
    :class:`DisplayUnavailable` where none can open (or where opening would hang).

    The window itself opens with the first frame, at that frame's size (scaled to
    the screen): opened earlier it would sit at Qt's default 400 x 300, blank and
    unresponsive, while the models load. The checks that can refuse run here, at
    construction, so a missing display still fails before anything loads.
    """

    def __init__(self, title: str = WINDOW_TITLE) -> None:
        cv2 = import_cv2()
        check_display(cv2)
        self.cv2, self.title = cv2, title
        self._opened = False
        self._sized_for: tuple[int, int] | None = None
        self.size: tuple[int, int] | None = None  # the window size chosen for the current video size

    def _open(self) -> None:
        cv2 = self.cv2
        flags = cv2.WINDOW_NORMAL | getattr(cv2, "WINDOW_KEEPRATIO", 0) | getattr(cv2, "WINDOW_GUI_NORMAL", 0)
        try:
            cv2.namedWindow(self.title, flags)
        except cv2.error as exc:
            raise DisplayUnavailable(f"cannot open a window ({_cv_message(exc)}); {HEADLESS_HINT}") from None
        self._opened = True

    def show(self, image: np.ndarray) -> None:
        if not self._opened:
            self._open()
        h, w = image.shape[:2]
        if self._sized_for != (w, h):  # first frame, or the camera changed resolution
            self._sized_for = (w, h)
            self.size = fit_to_screen(w, h, screen_size())
            self.cv2.resizeWindow(self.title, *self.size)
        self.cv2.imshow(self.title, image)

    def poll_key(self, wait_ms: int) -> int:
        if not self._opened:  # no window yet: nothing to pump, and waitKey would return at once (a busy loop)
            time.sleep(max(1, int(wait_ms)) / 1000)
            return -1
        key = self.cv2.waitKey(max(1, int(wait_ms)))
        try:  # the user closed the window with its close button: treat as quit
            if self.cv2.getWindowProperty(self.title, self.cv2.WND_PROP_VISIBLE) < 1:
                return ord("q")
        except self.cv2.error:
            return ord("q")
        return key & 0xFF if key >= 0 else -1

    def close(self) -> None:
        if self._opened:
            self._opened = False
            try:
                self.cv2.destroyWindow(self.title)
                self.cv2.waitKey(1)
            except self.cv2.error:
                pass
