"""`emo-stream report` on a JSONL of several tracked people: one timeline row per person."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from emo_stream.report import make_report
from emo_stream.report.palette import emotion_rgb

from .conftest import MER, _probs

matplotlib_image = pytest.importorskip("matplotlib.image")


def _png(path) -> np.ndarray:
    return (matplotlib_image.imread(str(path))[..., :3] * 255).round().astype(int)


def _column(img, box, t, t_lo=0.0, t_hi=10.0):
    x0, y0, x1, y1 = box
    x = round(x0 + (t - t_lo) / (t_hi - t_lo) * (x1 - x0))
    return img[y0 + 3 : y1 - 3, x]


def _share(pixels, rgb, tol=10) -> float:
    return float(np.mean(np.abs(pixels - np.array(rgb)).max(axis=-1) <= tol))


@pytest.fixture
def two_people(stream):
    """The conftest stream as person p1 (primary, every window) and p2, angry, seen in windows 6-13 (3-7 s),
    in the order the JSONL sink writes them: each window's primary state first."""
    primary = [dataclasses.replace(s, person_id="p1") for s in stream()]
    out = []
    for s in primary:
        out.append(s)
        if 6 <= s.sequence <= 13:
            out.append(dataclasses.replace(
                s, person_id="p2", rationale="", flags=(), probabilities=tuple(_probs("angry", 0.8)), top_label="angry", confidence=0.8,
            ))  # fmt: skip
    return primary, out


def test_one_row_per_person_labelled_with_the_id_and_drawn_where_they_were_seen(two_people, write_jsonl, tmp_path) -> None:
    primary, everyone = two_people
    rep = make_report(write_jsonl(everyone), tmp_path / "timeline.png")
    assert rep.people == ("p1", "p2")
    assert set(rep.axes) == {"probabilities", "person:p1", "person:p2", "valence_arousal", "modalities"}
    img = _png(rep.png)
    assert img.shape[:2] == (rep.height, rep.width) == (750 + 2 * 110, 1200)  # one 1.1 in row per person
    rows = [rep.axes[k] for k in ("probabilities", "person:p1", "person:p2", "valence_arousal")]
    assert all(a[3] <= b[1] for a, b in zip(rows, rows[1:]))  # stacked top to bottom in that order
    p2 = rep.axes["person:p2"]
    assert _share(_column(img, p2, 5.0), emotion_rgb("angry")) > 0.6  # seen: their own top label
    white = lambda a: (a >= 250).all(axis=-1)  # noqa: E731
    assert white(_column(img, p2, 1.5)).mean() > 0.9 and white(_column(img, p2, 9.0)).mean() > 0.9  # absent: empty
    p1 = rep.axes["person:p1"]
    assert _share(_column(img, p1, 2.0), emotion_rgb("happy")) > 0.5 and _share(_column(img, p1, 5.5), emotion_rgb("sad")) > 0.5
    # the panels above describe the primary person exactly as a report of their stream alone
    alone = make_report(write_jsonl(primary, "p1.jsonl"), tmp_path / "p1.png")
    assert rep.segments == alone.segments and rep.overview == alone.overview and alone.people == ()
    # the summary lists every person with their own dominant emotion
    md = rep.summary.read_text(encoding="utf-8")
    assert "## People" in md and "## People" not in alone.summary.read_text(encoding="utf-8")
    lines = {ln.split("|")[1].strip(): ln for ln in md.splitlines() if ln.startswith(("| p1 ", "| p2 "))}
    assert set(lines) == {"p1", "p2"}
    assert "| 8 |" in lines["p2"] and "| angry |" in lines["p2"] and "| 1.50 - 7.00 |" in lines["p2"]  # first window start to last window end
    assert "| 20 |" in lines["p1"] and "| happy |" in lines["p1"]


def test_a_single_person_with_an_id_looks_as_before(stream, write_jsonl, tmp_path) -> None:
    plain = make_report(write_jsonl(stream()), tmp_path / "plain.png", title="t")
    tagged = make_report(write_jsonl([dataclasses.replace(s, person_id="p1") for s in stream()], "p1.jsonl"), tmp_path / "p1.png", title="t")
    assert tagged.people == () and set(tagged.axes) == set(plain.axes) and (tagged.width, tagged.height) == (plain.width, plain.height)
    assert np.array_equal(_png(tagged.png), _png(plain.png))


def test_html_summary_has_the_people_table(two_people, write_jsonl, tmp_path) -> None:
    _, everyone = two_people
    rep = make_report(write_jsonl(everyone), tmp_path / "t.png", summary=tmp_path / "t.html")
    html = rep.summary.read_text(encoding="utf-8")
    assert "<h2>People</h2>" in html and "<td>p2</td>" in html


assert MER.labels[1] == "angry"  # the fixture's second person is angry
