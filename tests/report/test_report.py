"""The timeline PNG (size, non-empty panels, colours where the data says) and the summaries."""

from __future__ import annotations

import numpy as np
import pytest

from emo_stream.report import ReportError, make_report
from emo_stream.report.palette import emotion_rgb
from emo_stream.report.plot import FACE_SHADE

matplotlib_image = pytest.importorskip("matplotlib.image")


def _png(path) -> np.ndarray:
    return (matplotlib_image.imread(str(path))[..., :3] * 255).round().astype(int)


def _inner(img, box, pad=4):
    x0, y0, x1, y1 = box
    return img[y0 + pad : y1 - pad, x0 + pad : x1 - pad]


def _column(img, box, t, t_lo, t_hi):
    x0, y0, x1, y1 = box
    x = round(x0 + (t - t_lo) / (t_hi - t_lo) * (x1 - x0))
    return img[y0 + 4 : y1 - 4, x]


def _has_colour(pixels, rgb, alpha=0.92, tol=10) -> bool:
    want = np.array(rgb) * alpha + 255 * (1 - alpha)  # the stack is drawn at alpha 0.92 on white
    return bool((np.abs(pixels - want).max(axis=-1) <= tol).any())


def test_png_size_panels_and_colours_follow_the_data(stream, write_jsonl, tmp_path) -> None:
    rep = make_report(write_jsonl(stream()), tmp_path / "timeline.png")
    img = _png(rep.png)
    assert img.shape[:2] == (rep.height, rep.width) == (750, 1200)
    assert set(rep.axes) == {"probabilities", "valence_arousal", "modalities"}
    white = lambda a: (a >= 250).all(axis=-1)  # noqa: E731
    # every panel has content
    assert 1 - white(_inner(img, rep.axes["probabilities"])).mean() > 0.95  # the stack fills it
    assert 1 - white(_inner(img, rep.axes["valence_arousal"])).mean() > 0.3  # shading + lines
    assert 1 - white(_inner(img, rep.axes["modalities"])).mean() > 0.2  # lanes
    # the stack's biggest colour at 2 s / 5.5 s / 8.5 s is the segment's label
    box = rep.axes["probabilities"]
    for t, label in ((2.0, "happy"), (5.5, "sad"), (8.5, "neutral")):
        col = _column(img, box, t, 0.0, 10.0)
        assert _has_colour(col, emotion_rgb(label)), label
        share = np.mean(np.abs(col - (np.array(emotion_rgb(label)) * 0.92 + 255 * 0.08)).max(axis=-1) <= 10)
        assert share > 0.5, (label, share)
    # face spans are shaded (0-5 s), nothing at 9 s (no face, no voice)
    va = rep.axes["valence_arousal"]
    face = np.array(FACE_SHADE) * 255 * 0.18 + 255 * 0.82
    assert (np.abs(_column(img, va, 1.0, 0.0, 10.0) - face).max(axis=-1) <= 6).mean() > 0.5
    assert white(_column(img, va, 9.0, 0.0, 10.0)).mean() > 0.8
    # speech (2-8 s) adds hatching: more non-background pixels at 6 s than at 9 s
    assert (~white(_column(img, va, 6.0, 0.0, 10.0))).mean() > (~white(_column(img, va, 9.0, 0.0, 10.0))).mean() + 0.2


def test_markdown_summary_lists_segments_and_dominant_emotions(stream, write_jsonl, tmp_path) -> None:
    rep = make_report(write_jsonl(stream(rationale="a | piped reason {i}")), tmp_path / "out" / "t.png", summary=tmp_path / "s.md")
    md = rep.summary.read_text()
    assert "![timeline](out/t.png)" in md
    assert "| happy | 40% | " in md and "| sad | 30% | " in md
    assert "| 1 | 0.00 | 4.00 | 4.00 | happy | 8 |" in md
    assert "| 2 | 4.00 | 7.00 | 3.00 | sad | 6 |" in md
    assert "| 3 | 7.00 | 10.00 | 3.00 | neutral | 6 |" in md
    assert "a \\| piped reason 0" in md  # table-safe
    assert "| face present | 50% |" in md and "| speech (voice) | 60% |" in md


def test_html_summary_is_escaped(stream, write_jsonl, tmp_path) -> None:
    rep = make_report(write_jsonl(stream(rationale="<script>alert({i})</script>")), tmp_path / "t.png", summary=tmp_path / "s.html")
    text = rep.summary.read_text()
    assert text.startswith("<!DOCTYPE html>") and '<img src="t.png"' in text
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert "<td>happy</td>" in text


def test_engines_without_emotions_or_valence_still_get_a_report(tmp_path, media) -> None:
    """Real states of the baseline engine: uniform, no valence/arousal, no face or voice."""
    from emo_stream.config import StreamConfig
    from emo_stream.engines import make_engine
    from emo_stream.pipeline import Pipeline
    from emo_stream.stream.sinks import CallbackSink
    from emo_stream.stream.sources.factory import open_sources

    cfg = StreamConfig().replace(engine={"name": "baseline"})
    states = []
    with make_engine(cfg) as engine:
        Pipeline(open_sources(str(media / "megamind.avi"), cfg), engine, [CallbackSink(states.append)], cfg).run()
    rep = make_report(states, tmp_path / "b.png")
    assert [s.label for s in rep.segments] == ["(uniform)"] and len(states) == 23
    img = _png(rep.png)
    assert 1 - (_inner(img, rep.axes["probabilities"]) >= 250).all(axis=-1).mean() > 0.95
    md = rep.summary.read_text()
    assert "not_an_emotion_model x23" in md and "| - | - |" in md  # valence/arousal absent


def test_live_clock_times_start_at_the_first_window(stream, tmp_path) -> None:
    rep = make_report(stream(n=4, t0=5000.0, clock="monotonic"), tmp_path / "live.png")
    md = rep.summary.read_text()
    assert "0.00 - 2.00 s (since the first window; monotonic clock)" in md
    assert "| 1 | 0.00 | 2.00 |" in md


def test_single_state_report(stream, tmp_path) -> None:
    rep = make_report(stream(n=1), tmp_path / "one.png")
    assert rep.png.stat().st_size > 5000 and len(rep.segments) == 1


@pytest.mark.parametrize(
    "out,summary,message",
    [("t.jpg", None, "must be a .png"), ("t.png", "t.txt", "must be a .md or .html"), ("t.png", "t.png", "different files")],
)
def test_bad_output_names(stream, tmp_path, out, summary, message) -> None:
    with pytest.raises(ReportError, match=message):
        make_report(stream(n=2), tmp_path / out, summary=None if summary is None else tmp_path / summary)


def test_no_states(tmp_path) -> None:
    with pytest.raises(ReportError, match="no states"):
        make_report([], tmp_path / "t.png")
