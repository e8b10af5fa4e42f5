"""The overlay is a pure function: it draws only inside its regions, and draws there."""

from __future__ import annotations

import numpy as np
import pytest

from emo_stream.demo.overlay import (
    FACE_STALE_S,
    OverlayStats,
    draw_overlay,
    face_box,
    face_tag,
    overlay_layout,
    overlay_regions,
    regions_mask,
)
from emo_stream.report.palette import emotion_bgr


def _changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.any(a != b, axis=2)


def _frac(mask: np.ndarray, rect) -> float:
    x0, y0, x1, y1 = rect
    return float(mask[y0:y1, x0:x1].mean())


def test_returns_a_new_frame_and_leaves_the_input_alone(astronaut_frame, make_state) -> None:
    before = astronaut_frame.copy()
    out = draw_overlay(astronaut_frame, make_state(), OverlayStats(state_rate_hz=2.0, latency_ms=100.0))
    assert out is not astronaut_frame and out.shape == astronaut_frame.shape and out.dtype == np.uint8
    assert np.array_equal(astronaut_frame, before)
    assert _changed(out, before).any()


@pytest.mark.parametrize(
    "kind",
    ["full", "uniform_no_face", "no_state", "no_valence", "paused_with_note", "ten_labels"],
)
def test_draws_only_inside_its_regions_and_visibly_inside_them(astronaut_frame, make_state, kind) -> None:
    rationale = "The speaker smiles broadly and the voice is lively, which suggests happiness rather than surprise."
    if kind == "full":
        state, stats = make_state(rationale=rationale, rationale_age_s=0.0), OverlayStats(now=2.1, state_rate_hz=2.0, latency_ms=95.0)
    elif kind == "uniform_no_face":
        state = make_state(probs=[1 / 6] * 6, valence=None, arousal=None, modalities=("video", "audio"), flags=["not_an_emotion_model"], signals={})
        stats = OverlayStats(state_rate_hz=2.0)
    elif kind == "no_state":
        state, stats = None, OverlayStats(fps=25.0, note="waiting for first state")
    elif kind == "no_valence":
        state, stats = make_state(valence=None, arousal=None), OverlayStats(now=2.0, rationale="older words", rationale_age_s=3.2)
    elif kind == "paused_with_note":
        state, stats = make_state(), OverlayStats(now=2.0, paused=True, fps=30.0, dropped=3, note="q quit  space pause")
    else:  # a 9-label set (merr): the panel grows, still compact
        probs = np.linspace(1, 2, 9)
        state, stats = make_state(probs=probs / probs.sum(), label_set="merr"), OverlayStats(now=2.0)
    out = draw_overlay(astronaut_frame, state, stats)
    changed = _changed(out, astronaut_frame)
    lay = overlay_layout(astronaut_frame.shape, state, stats)
    inside = regions_mask(astronaut_frame.shape, lay.regions())
    assert not (changed & ~inside).any(), "pixels changed outside the overlay regions"
    assert _frac(changed, lay.panel) > 0.6  # the shaded panel
    if lay.rationale is not None:
        assert _frac(changed, lay.rationale) > 0.6
    assert (lay.rationale is not None) == (kind in ("full", "no_valence"))
    assert (lay.face is not None) == (kind not in ("uniform_no_face", "no_state"))
    # compact: the overlay leaves most of the picture untouched
    assert inside.mean() < 0.5


def test_face_box_is_drawn_where_the_state_says_in_the_top_label_colour(astronaut_frame, make_state) -> None:
    state = make_state()
    h, w = astronaut_frame.shape[:2]
    box = face_box(state, w, h)
    assert box == (round(0.35 * w), round(0.11 * h), round(0.54 * w), round(0.35 * h))
    out = draw_overlay(astronaut_frame, state, OverlayStats(now=2.0))
    x0, y0, x1, y1 = box
    colour = np.array(emotion_bgr("happy"))
    # left and right edges of the outline carry the label colour along their whole height
    for x in (x0, x1 - 1):
        column = out[y0 + 5 : y1 - 5, x]
        assert np.all(np.abs(column.astype(int) - colour).max(axis=1) <= 1)
    # the face inside the box is not painted over
    inner = (slice(y0 + 10, y1 - 10), slice(x0 + 10, x1 - 10))
    assert np.array_equal(out[inner], astronaut_frame[inner])


def test_face_box_needs_face_modality_signals_and_freshness(make_state) -> None:
    assert face_box(make_state(modalities=("video",)), 100, 100) is None
    assert face_box(make_state(signals={"faces_found": 0.0}), 100, 100) is None
    fresh = make_state()
    assert face_box(fresh, 100, 100, now=1.9 + FACE_STALE_S - 0.1) is not None
    assert face_box(fresh, 100, 100, now=1.9 + FACE_STALE_S + 0.1) is None


def test_panel_moves_right_when_it_would_hide_the_face(make_state) -> None:
    frame_shape = (480, 640, 3)
    left_face = make_state(signals=dict(face_x=0.05, face_y=0.05, face_w=0.2, face_h=0.3, face_t=2.0))
    right_face = make_state(signals=dict(face_x=0.6, face_y=0.05, face_w=0.2, face_h=0.3, face_t=2.0))
    assert overlay_layout(frame_shape, left_face).panel[0] > 320
    assert overlay_layout(frame_shape, right_face).panel[0] < 50


@pytest.mark.parametrize("shape", [(8, 8, 3), (17, 33, 3), (1080, 1920, 3), (600, 90, 3)])
def test_any_frame_size_is_drawn_without_escaping_the_regions(make_state, shape) -> None:
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, shape, dtype=np.uint8)
    state = make_state(rationale="a reason " * 30)
    out = draw_overlay(frame, state, OverlayStats(now=2.0))
    assert out.shape == shape
    inside = regions_mask(shape, overlay_regions(shape, state, OverlayStats(now=2.0)))
    assert not (_changed(out, frame) & ~inside).any()


def test_rejects_frames_that_are_not_bgr_uint8(make_state) -> None:
    with pytest.raises(ValueError, match="BGR"):
        draw_overlay(np.zeros((10, 10), np.uint8), make_state())
    with pytest.raises(ValueError, match="BGR"):
        draw_overlay(np.zeros((10, 10, 3), np.float32), make_state())


def test_latest_rationale_comes_from_stats_when_the_state_has_none(astronaut_frame, make_state) -> None:
    state = make_state(rationale="")
    without = overlay_layout(astronaut_frame.shape, state, OverlayStats())
    with_old = overlay_layout(astronaut_frame.shape, state, OverlayStats(rationale="said earlier", rationale_age_s=1.5))
    assert without.rationale is None and with_old.rationale is not None


# -- every tracked person ---------------------------------------------------------------
def _two_people(make_state):
    """The primary person (p1, happy, left) and two others: p2 (sad, right) and p3 without a face box."""
    primary = make_state(person_id="p1", signals=dict(face_x=0.08, face_y=0.62, face_w=0.2, face_h=0.25))
    sad = (0.02, 0.02, 0.03, 0.88, 0.03, 0.02)
    p2 = make_state(probs=sad, person_id="p2", signals=dict(face_x=0.62, face_y=0.25, face_w=0.22, face_h=0.28))
    p3 = make_state(person_id="p3", modalities=("video", "audio"), signals={})
    return primary, [p2, p3]


def test_every_tracked_person_gets_a_box_tag_and_bars_at_their_own_face(astronaut_frame, make_state) -> None:
    primary, others = _two_people(make_state)
    stats = OverlayStats(now=2.0)
    out = draw_overlay(astronaut_frame, primary, stats, others)
    changed = _changed(out, astronaut_frame)
    lay = overlay_layout(astronaut_frame.shape, primary, stats, others)
    assert [p.state.person_id for p in lay.people] == ["p2"]  # p3 has no face to draw at
    p2 = lay.people[0]
    # nothing escapes the regions, the other person's included
    assert changed[~regions_mask(astronaut_frame.shape, lay.regions())].sum() == 0
    # the outline, in p2's own top-label colour (sad), not the primary's (happy)
    x0, y0, x1, y1 = p2.face_box
    left_edge = out[y0 + 10 : y1 - 10, x0]
    assert np.all(left_edge == emotion_bgr("sad"))
    assert face_tag(p2.state) == "p2 sad 0.88" and face_tag(primary).startswith("p1 happy")
    # the compact bars sit under the box and are mostly drawn on
    assert p2.bars is not None and p2.bars[1] >= y1 and _frac(changed, p2.bars) > 0.5
    # the longest bar is p2's top label: its row holds the most bar colour
    bx0, by0, bx1, by1 = p2.bars
    rows = np.array_split(np.arange(by0, by1), len(p2.state.labels))
    sad_px = [int(np.all(out[r[0] : r[-1] + 1, bx0:bx1] == emotion_bgr("sad"), axis=2).sum()) for r in rows]
    assert int(np.argmax(sad_px)) == p2.state.labels.index("sad")
    # without the others, their region is left alone
    alone = draw_overlay(astronaut_frame, primary, stats)
    assert np.array_equal(alone[y0:y1, x0:x1], astronaut_frame[y0:y1, x0:x1])


def test_a_person_with_the_primary_id_is_not_drawn_twice(astronaut_frame, make_state) -> None:
    primary, _ = _two_people(make_state)
    lay = overlay_layout(astronaut_frame.shape, primary, OverlayStats(now=2.0), [primary])
    assert lay.people == ()


@pytest.mark.parametrize("shape", [(120, 160, 3), (480, 640, 3), (64, 64, 3)])
def test_others_near_the_frame_edges_stay_inside_it_and_their_regions(make_state, shape) -> None:
    frame = np.full(shape, 90, np.uint8)
    primary = make_state(person_id="p1")
    edge = [
        make_state(person_id="p2", signals=dict(face_x=0.8, face_y=0.75, face_w=0.2, face_h=0.25)),  # bottom right
        make_state(person_id="p3", signals=dict(face_x=0.0, face_y=0.0, face_w=0.3, face_h=0.9)),  # tall, top left
    ]
    out = draw_overlay(frame, primary, OverlayStats(now=2.0), edge)
    lay = overlay_layout(shape, primary, OverlayStats(now=2.0), edge)
    assert len(lay.people) == 2
    h, w = shape[:2]
    assert all(0 <= r[0] < r[2] <= w and 0 <= r[1] < r[3] <= h for r in lay.regions())
    assert _changed(out, frame)[~regions_mask(shape, lay.regions())].sum() == 0


def test_panel_moves_right_when_it_would_hide_another_person(astronaut_frame, make_state) -> None:
    primary = make_state(person_id="p1", modalities=("video", "audio"), signals={})  # primary face not seen
    p2 = make_state(person_id="p2", signals=dict(face_x=0.05, face_y=0.05, face_w=0.2, face_h=0.25))
    shape = astronaut_frame.shape
    assert overlay_layout(shape, primary).panel[0] < 50  # alone: top left, as always
    lay = overlay_layout(shape, primary, None, [p2])
    assert lay.panel[0] > shape[1] // 2
