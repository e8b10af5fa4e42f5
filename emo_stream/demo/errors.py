"""User-facing errors of the demo and the lazy OpenCV import."""

from __future__ import annotations

from emo_stream.errors import EmoStreamError


class DemoError(EmoStreamError):
    """The demo cannot run as asked (bad output path, unsupported container ...)."""


class DisplayUnavailable(DemoError):
    """No window can be shown: no display, or an OpenCV build without a GUI."""


def import_cv2():
    """``cv2`` or a one-line error naming the extra to install."""
    try:
        import cv2
    except ImportError as exc:
        raise DemoError(
            f"the demo overlay needs OpenCV, which is not installed ({exc}); run: pip install 'emo-stream[headless]' (or [gui] for the live window)"
        ) from None
    return cv2
