"""The demo: the emotion overlay on live or recorded video.

* :mod:`.overlay` -- :func:`draw_overlay` (pure: frame + state -> new frame) and
  :func:`overlay_regions` (where it may draw);
* :mod:`.track` -- which state is on screen at a time (recorded or live);
* :mod:`.video` -- PyAV decoding/encoding with the input's timing and audio;
* :mod:`.headless` -- :class:`FileAnnotator`: file -> states JSONL + annotated video;
* :mod:`.live` -- :class:`LiveDemo`: camera/mic -> window or recording, never
  waiting on the engine;
* :mod:`.window` -- :class:`CvDisplay` (the OpenCV window, sized to the video) and
  :func:`prepare_gui` (OpenCV's GUI loads before PyAV, or the first window livelocks);
* :mod:`.cli` -- the ``demo`` and ``report`` sub-commands.

Heavy modules (OpenCV, PyAV encoders) load lazily: importing this package is cheap.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "OverlayStats": "emo_stream.demo.overlay",
    "draw_overlay": "emo_stream.demo.overlay",
    "overlay_regions": "emo_stream.demo.overlay",
    "overlay_layout": "emo_stream.demo.overlay",
    "StateTrack": "emo_stream.demo.track",
    "LatestState": "emo_stream.demo.track",
    "FileAnnotator": "emo_stream.demo.headless",
    "AnnotateResult": "emo_stream.demo.headless",
    "annotate_file": "emo_stream.demo.headless",
    "LiveDemo": "emo_stream.demo.live",
    "CvDisplay": "emo_stream.demo.window",
    "display_problem": "emo_stream.demo.window",
    "prepare_gui": "emo_stream.demo.window",
    "AnnotatedVideoWriter": "emo_stream.demo.video",
    "probe": "emo_stream.demo.video",
    "DemoError": "emo_stream.demo.errors",
    "DisplayUnavailable": "emo_stream.demo.errors",
}

__all__ = [
    "AnnotateResult",
    "AnnotatedVideoWriter",
    "CvDisplay",
    "DemoError",
    "DisplayUnavailable",
    "FileAnnotator",
    "LatestState",
    "LiveDemo",
    "OverlayStats",
    "StateTrack",
    "annotate_file",
    "display_problem",
    "draw_overlay",
    "overlay_layout",
    "overlay_regions",
    "prepare_gui",
    "probe",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'emo_stream.demo' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
