"""Draw an :class:`~emo_stream.state.EmotionState` onto a video frame.

Pure functions, no I/O: :func:`draw_overlay` takes a BGR frame, a state (or
None before the first one) and an :class:`OverlayStats` (what the caller
measured: state rate, latency, frame rate, the latest rationale and its age)
and returns a *new* frame; the input is never modified. This keeps the overlay
unit-testable and lets the live demo, the headless writer and anything else
(a ROS image republisher) share it.

Layout (all sizes scale with the frame; see :func:`overlay_layout`):

* a semi-transparent **side panel** in the top-left corner (top-right when
  the face box would be hidden under it): top label with
  confidence, one probability bar per label, a valence/arousal square with the
  marker, modality chips (present ones lit), state rate / latency / fps, flags;
* a semi-transparent **rationale strip** along the bottom edge (only when a
  rationale exists), with its age;
* the **face box** (outline only) from the state's normalised face signals
  (``face_x``, ``face_y``, ``face_w``, ``face_h``), tagged with the person's id
  (when the engine tracks people) and the top label;
* for every **other tracked person** (``people``: the states the pipeline
  sends to :meth:`~emo_stream.stream.sinks.Sink.write_person`), a compact
  version next to their own face: the box, a tag with id, top label and
  confidence, and a small block of probability bars under (or above) the box.
  The primary person keeps the full panel; the others' blocks are drawn first,
  so where they overlap the panel the primary person's panel wins.

Everything is drawn through views clipped to those rectangles, so pixels
outside :func:`overlay_regions` are guaranteed to stay identical to the input
(the headless writer and the tests rely on this).
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from emo_stream.report.palette import emotion_bgr, modality_bgr
from emo_stream.state import MODALITIES, EmotionState

#: (x0, y0, x1, y1), pixel coordinates, end-exclusive, clipped to the frame.
Rect = tuple[int, int, int, int]

#: Opacity of the panel backgrounds (0 = invisible, 1 = opaque).
PANEL_ALPHA = 0.62
PANEL_BGR = (24, 24, 24)
TEXT_BGR = (240, 240, 240)
DIM_BGR = (130, 130, 130)
WARN_BGR = (60, 170, 255)
#: Rationale lines shown at most (the rest is cut with an ellipsis).
RATIONALE_LINES = 3
#: A face box older than this (seconds, frame time - face_t) is not drawn:
#: it would point at where the face *was*.
FACE_STALE_S = 2.0
#: Abbreviations for the modality chips.
_CHIP = {"video": "vid", "audio": "aud", "face": "face", "voice": "voice", "text": "text"}


@dataclass(frozen=True)
class OverlayStats:
    """What the overlay shows besides the state; measured by the caller.

    Attributes:
        now: time of the displayed frame on the state's clock (for the face
            box's staleness); None = always draw the box.
        state_rate_hz: states per second recently received.
        latency_ms: latency of the shown state (engine or end-to-end).
        fps: display / capture frame rate (live mode).
        rationale: the latest non-empty rationale; None = use ``state.rationale``.
        rationale_age_s: its age in seconds at ``now``.
        paused: show a PAUSED tag.
        dropped: frames or windows dropped so far (shown when > 0).
        note: one short extra line (key help, "waiting for first state").
    """

    now: float | None = None
    state_rate_hz: float | None = None
    latency_ms: float | None = None
    fps: float | None = None
    rationale: str | None = None
    rationale_age_s: float | None = None
    paused: bool = False
    dropped: int = 0
    note: str = ""


@dataclass(frozen=True)
class PersonLayout:
    """Where one non-primary tracked person is drawn (see :func:`overlay_layout`)."""

    state: EmotionState
    face: Rect  # box + tag + line width
    face_box: Rect  # the box itself
    bars: Rect | None  # the compact probability bars (None when the frame has no room)


@dataclass(frozen=True)
class OverlayLayout:
    """Where the overlay draws on a frame of a given size (see :func:`overlay_layout`)."""

    scale: float
    panel: Rect
    rationale: Rect | None
    face: Rect | None
    face_box: Rect | None  # the box itself (inside ``face``, which adds the tag and line width)
    people: tuple[PersonLayout, ...] = ()

    def regions(self) -> list[Rect]:
        out = [r for r in (self.panel, self.rationale, self.face) if r is not None]
        for p in self.people:
            out += [r for r in (p.face, p.bars) if r is not None]
        return out


# -- geometry ---------------------------------------------------------------------------
def _scale(w: int, h: int) -> float:
    return float(min(2.5, max(0.5, min(w, h) / 480.0)))


def _clip(rect: tuple[float, float, float, float], w: int, h: int, even: bool = True) -> Rect | None:
    """Round to pixels and clip to the frame. ``even``: widen to even coordinates, so a region
    covers whole 2x2 blocks (yuv420p shares one colour sample per block: an encoded frame then
    changes only inside the regions too)."""
    x0, y0, x1, y1 = (round(v) for v in rect)
    if even:
        x0, y0 = x0 - x0 % 2, y0 - y0 % 2
        x1, y1 = x1 + x1 % 2, y1 + y1 % 2
    x0, x1 = max(0, min(w, x0)), max(0, min(w, x1))
    y0, y1 = max(0, min(h, y0)), max(0, min(h, y1))
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def face_box(state: EmotionState | None, width: int, height: int, now: float | None = None) -> Rect | None:
    """The state's primary face box in pixels of a ``width`` x ``height`` frame, or None.

    None when the state has no face signals, "face" is not among its modalities,
    or the box is older than :data:`FACE_STALE_S` at ``now``.
    """
    if state is None or "face" not in state.modalities:
        return None
    sig = state.signals
    try:
        fx, fy, fw, fh = (float(sig[k]) for k in ("face_x", "face_y", "face_w", "face_h"))
    except KeyError:
        return None
    if not all(math.isfinite(v) for v in (fx, fy, fw, fh)) or fw <= 0 or fh <= 0:
        return None
    ft = sig.get("face_t")
    if now is not None and ft is not None and now - float(ft) > FACE_STALE_S:
        return None
    return _clip((fx * width, fy * height, (fx + fw) * width, (fy + fh) * height), width, height, even=False)


def _overlap(a: Rect, b: Rect) -> int:
    """Area of the intersection of two rectangles."""
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))


def _panel_rows(state: EmotionState | None, s: float) -> float:
    """Height of the side panel's content in pixels."""
    pad = 6 * s
    h = pad + 24 * s  # title
    if state is None:
        return h + 16 * s + 14 * s + pad  # "waiting" + stats
    h += len(state.labels) * 15 * s + 4 * s  # bars
    h += 58 * s + 4 * s  # valence/arousal square
    h += 16 * s  # modality chips
    h += 15 * s  # stats
    if state.flags:
        h += 14 * s
    return h + pad


def _rationale_text(state: EmotionState | None, stats: OverlayStats) -> str:
    if stats.rationale is not None:
        return stats.rationale.strip()
    return state.rationale.strip() if state is not None else ""


def _wrap(text: str, width_px: float, fs: float) -> list[str]:
    """Wrap ``text`` for Hershey simplex at font scale ``fs`` (about 20 px per char at fs=1)."""
    chars = max(8, int(width_px / (19.0 * fs)))
    lines = textwrap.wrap(" ".join(text.split()), chars) or [""]
    if len(lines) > RATIONALE_LINES:
        lines = lines[:RATIONALE_LINES]
        lines[-1] = lines[-1][: max(0, chars - 3)].rstrip() + "..."
    return lines


def face_tag(state: EmotionState) -> str:
    """The text over a face box: the person's id (when tracked), then the top label and confidence."""
    what = "face" if _uniform(state) else f"{state.top_label} {state.confidence:.2f}"
    return f"{state.person_id} {what}" if state.person_id else what


def _tag_width(state: EmotionState, s: float) -> float:
    """Upper bound of the face tag's width in pixels (Hershey simplex at 0.45 * s: <= 10 px per char)."""
    return len(face_tag(state)) * 10.0 * s + 8 * s


def _face_rect(box: Rect, state: EmotionState, w: int, h: int, s: float) -> Rect | None:
    """The face box grown by the line width and the tag above it (or inside it at the top edge)."""
    t = max(1, round(2 * s))
    tag_h = round(18 * s)
    x0, y0, x1, y1 = box
    top = y0 - tag_h if y0 - tag_h >= 0 else y0
    return _clip((x0 - t, min(top, y0 - t), max(x1 + t, x0 + int(max(110 * s, _tag_width(state, s)))), y1 + t), w, h)


#: Height of one compact probability bar row (times the scale).
PERSON_ROW = 9.0


def _person_layout(state: EmotionState, w: int, h: int, s: float, now: float | None) -> PersonLayout | None:
    """A non-primary person's box, tag and bar block; None without a (fresh) face box."""
    box = face_box(state, w, h, now)
    if box is None:
        return None
    face = _face_rect(box, state, w, h, s)
    if face is None:
        return None
    bw = max(box[2] - box[0], 96 * s)
    bh = len(state.labels) * PERSON_ROW * s + 6 * s
    t = max(1, round(2 * s))
    y0: float
    if box[3] + t + bh <= h:  # under the box
        y0 = box[3] + t
    elif face[1] - bh >= 0:  # above the tag
        y0 = face[1] - bh
    else:  # no room around it: over the bottom of the box
        y0 = max(0.0, h - bh)
    x0 = min(float(box[0]), max(0.0, w - bw))
    bars = _clip((x0, y0, x0 + bw, y0 + bh), w, h)
    return PersonLayout(state=state, face=face, face_box=box, bars=bars)


def overlay_layout(
    shape: tuple[int, ...],
    state: EmotionState | None,
    stats: OverlayStats | None = None,
    people: Sequence[EmotionState] = (),
) -> OverlayLayout:
    """The rectangles :func:`draw_overlay` draws into for a frame of ``shape`` (H, W[, C]).

    ``people``: the other tracked people's states of the same window (not the
    primary ``state``); each with a face box gets a :class:`PersonLayout`.
    """
    stats = stats or OverlayStats()
    h, w = int(shape[0]), int(shape[1])
    s = _scale(w, h)
    m = round(8 * s)
    pw = min(round(196 * s), max(1, w - 2 * m))
    ph = min(round(_panel_rows(state, s) + (14 * s if stats.note else 0)), max(1, h - 2 * m))
    box = face_box(state, w, h, stats.now)
    others = []
    primary_id = state.person_id if state is not None else ""
    for p in people:
        if primary_id and p.person_id == primary_id:
            continue  # the primary person is drawn with the panel
        lay = _person_layout(p, w, h, s, stats.now)
        if lay is not None:
            others.append(lay)
    # keep the faces visible: move the panel to the right edge when that covers less of them
    # (the primary face with its tag, every other person's box, tag and bars)
    face = _face_rect(box, state, w, h, s) if box is not None and state is not None else None
    faces = ([face] if face is not None else []) + [r for p in others for r in (p.face, p.bars) if r is not None]
    left = _clip((m, m, m + pw, m + ph), w, h) or (0, 0, max(1, w), max(1, h))
    panel = left
    hidden = sum(_overlap(left, f) for f in faces)
    if hidden > 0:
        right = _clip((w - m - pw, m, w - m, m + ph), w, h) or left
        if sum(_overlap(right, f) for f in faces) < hidden:
            panel = right
    rationale = None
    text = _rationale_text(state, stats)
    if text:
        fs = 0.42 * s
        lines = _wrap(text, w - 2 * m - 12 * s, fs)
        rh = round((len(lines) + 1) * 15 * s + 10 * s)
        rationale = _clip((m, h - m - rh, w - m, h - m), w, h)
        if rationale is not None and rationale[1] < panel[3]:  # tiny frame: panel wins
            rationale = _clip((m, panel[3], w - m, h - m), w, h)
    return OverlayLayout(scale=s, panel=panel, rationale=rationale, face=face, face_box=box, people=tuple(others))


def overlay_regions(shape: tuple[int, ...], state: EmotionState | None, stats: OverlayStats | None = None, people: Sequence[EmotionState] = ()) -> list[Rect]:
    """Rectangles outside which :func:`draw_overlay` leaves every pixel unchanged."""
    return overlay_layout(shape, state, stats, people).regions()


def regions_mask(shape: tuple[int, ...], regions: list[Rect], grow: int = 0) -> np.ndarray:
    """Boolean H x W mask of ``regions`` (each grown by ``grow`` pixels)."""
    h, w = int(shape[0]), int(shape[1])
    mask = np.zeros((h, w), dtype=bool)
    for x0, y0, x1, y1 in regions:
        mask[max(0, y0 - grow) : min(h, y1 + grow), max(0, x0 - grow) : min(w, x1 + grow)] = True
    return mask


# -- drawing ------------------------------------------------------------------------------
def _cv2():
    from emo_stream.demo.errors import import_cv2

    return import_cv2()


def _shade(roi: np.ndarray, alpha: float = PANEL_ALPHA, bgr: tuple[int, int, int] = PANEL_BGR) -> None:
    """Darken ``roi`` in place towards ``bgr`` (semi-transparent background)."""
    bg = np.asarray(bgr, dtype=np.float32)
    roi[...] = (roi.astype(np.float32) * (1.0 - alpha) + bg * alpha + 0.5).astype(np.uint8)


def _text(cv2, img, text: str, org: tuple[float, float], fs: float, color=TEXT_BGR, th: int = 1) -> None:
    cv2.putText(img, text, (round(org[0]), round(org[1])), cv2.FONT_HERSHEY_SIMPLEX, fs, color, th, cv2.LINE_AA)


def _fmt_signed(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.2f}"


def draw_overlay(
    frame: np.ndarray,
    state: EmotionState | None,
    stats: OverlayStats | None = None,
    people: Sequence[EmotionState] = (),
) -> np.ndarray:
    """A copy of ``frame`` (H x W x 3 uint8 BGR) with ``state`` drawn on it.

    ``state`` None draws the panel with "waiting for first state". ``people``:
    the other tracked people's states of the same window, each drawn compactly
    at their own face. Never raises on odd states (no valence, uniform
    probabilities, no face, tiny frames).
    """
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"draw_overlay needs an H x W x 3 uint8 BGR frame, got {frame.shape} {frame.dtype}")
    cv2 = _cv2()
    stats = stats or OverlayStats()
    out = frame.copy()
    lay = overlay_layout(out.shape, state, stats, people)
    s = lay.scale
    for person in lay.people:  # first: the primary person's face and panel are drawn over them
        _draw_face(cv2, out, person.face, person.face_box, person.state, s)
        if person.bars is not None:
            _draw_person_bars(cv2, out, person.bars, person.state, s)
    if lay.face is not None and lay.face_box is not None and state is not None:  # the layout has a face only with a state
        _draw_face(cv2, out, lay.face, lay.face_box, state, s)
    _draw_panel(cv2, out, lay.panel, state, stats, s)
    if lay.rationale is not None:
        _draw_rationale(cv2, out, lay.rationale, _rationale_text(state, stats), stats, s)
    return out


def _lighten(bgr: tuple[int, int, int], amount: float = 0.35) -> tuple[int, int, int]:
    """Mix a colour with white (dark label colours stay readable on the dark panel)."""
    return tuple(round(c + (255 - c) * amount) for c in bgr)  # type: ignore[return-value]


def _ink_on(bgr: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white text, whichever reads better on ``bgr``."""
    b, g, r = bgr
    return (0, 0, 0) if 0.114 * b + 0.587 * g + 0.299 * r > 140 else (255, 255, 255)


def _uniform(state: EmotionState) -> bool:
    p = state.probabilities
    return bool(p) and max(p) - min(p) < 1e-6


def _draw_face(cv2, out: np.ndarray, face: Rect, box: Rect, state: EmotionState, s: float) -> None:
    fx0, fy0, fx1, fy1 = face
    roi = out[fy0:fy1, fx0:fx1]  # a view: drawing cannot leave the face region
    bx0, by0, bx1, by1 = box
    color = DIM_BGR if _uniform(state) else emotion_bgr(state.top_label)
    t = max(1, round(2 * s))
    cv2.rectangle(roi, (bx0 - fx0, by0 - fy0), (bx1 - 1 - fx0, by1 - 1 - fy0), color, t, cv2.LINE_8)
    tag = face_tag(state)
    fs = 0.45 * s
    (tw, _th), _ = cv2.getTextSize(tag, cv2.FONT_HERSHEY_SIMPLEX, fs, 1)
    tag_h = round(18 * s)
    ty0 = by0 - tag_h if by0 - tag_h >= 0 else by0
    x0, y0 = bx0 - fx0, ty0 - fy0
    cv2.rectangle(roi, (x0, y0), (x0 + tw + int(8 * s), y0 + tag_h), color, -1)
    _text(cv2, roi, tag, (x0 + 4 * s, y0 + tag_h - 5 * s), fs, _ink_on(color), 1)


def _draw_person_bars(cv2, out: np.ndarray, rect: Rect, state: EmotionState, s: float) -> None:
    """A non-primary person's compact bars: a 3-letter label and one bar per label, no numbers."""
    x0, y0, x1, y1 = rect
    roi = out[y0:y1, x0:x1]
    _shade(roi)
    pad = 3 * s
    label_w = 26 * s
    bar_max = max(4.0, (x1 - x0) - label_w - 2 * pad)
    row = PERSON_ROW * s
    fs = 0.3 * s
    for i, (lab, p) in enumerate(zip(state.labels, state.probabilities)):
        cy = pad + i * row
        _text(cv2, roi, lab[:3], (pad, cy + row - 2 * s), fs, (200, 200, 200))
        bx0, by0, by1 = round(pad + label_w), round(cy + 1.5 * s), round(cy + row - 1.5 * s)
        bw = round(bar_max * min(1.0, max(0.0, p)))
        cv2.rectangle(roi, (bx0, by0), (round(pad + label_w + bar_max), by1), (70, 70, 70), 1)
        if bw > 0:
            cv2.rectangle(roi, (bx0, by0), (bx0 + bw, by1), emotion_bgr(lab), -1)


def _draw_panel(cv2, out: np.ndarray, rect: Rect, state: EmotionState | None, stats: OverlayStats, s: float) -> None:
    x0, y0, x1, y1 = rect
    roi = out[y0:y1, x0:x1]
    _shade(roi)
    pw = x1 - x0
    pad = 6 * s
    y = pad
    small = 0.4 * s
    # title: top label + confidence
    if state is None:
        _text(cv2, roi, "emo-stream", (pad, y + 18 * s), 0.6 * s, TEXT_BGR, max(1, round(1.5 * s)))
        y += 24 * s
        _text(cv2, roi, "waiting for first state...", (pad, y + 11 * s), small, DIM_BGR)
        y += 16 * s
    else:
        if _uniform(state):
            title, color = "uniform (no emotion)", DIM_BGR
            fs_title = 0.5 * s
        else:
            title, color = f"{state.top_label.upper()} {state.confidence:.2f}", _lighten(emotion_bgr(state.top_label))
            fs_title = 0.62 * s
        _text(cv2, roi, title, (pad, y + 18 * s), fs_title, color, max(1, round(1.6 * s)))
        y += 24 * s
        y = _draw_bars(cv2, roi, state, pad, y, pw, s)
        y = _draw_valence_arousal(cv2, roi, state, pad, y, s)
        y = _draw_chips(cv2, roi, state.modalities, pad, y, s)
    # stats line
    parts = []
    if stats.state_rate_hz is not None:
        parts.append(f"{stats.state_rate_hz:.1f} st/s")
    if stats.latency_ms is not None:
        parts.append(f"lat {stats.latency_ms:.0f} ms")
    if stats.fps is not None:
        parts.append(f"{stats.fps:.0f} fps")
    if stats.dropped:
        parts.append(f"drop {stats.dropped}")
    _text(cv2, roi, "  ".join(parts) or "-", (pad, y + 11 * s), small * 0.95, TEXT_BGR)
    y += 15 * s
    if state is not None and state.flags:
        _text(cv2, roi, ",".join(state.flags)[:40], (pad, y + 10 * s), small * 0.85, WARN_BGR)
        y += 14 * s
    if stats.note:
        _text(cv2, roi, stats.note[:44], (pad, y + 10 * s), small * 0.85, DIM_BGR)
    if stats.paused:
        fs = 0.45 * s
        (tw, th), _ = cv2.getTextSize("PAUSED", cv2.FONT_HERSHEY_SIMPLEX, fs, 1)
        px = pw - tw - 2 * pad
        cv2.rectangle(roi, (int(px - 3 * s), int(pad - 2 * s)), (int(pw - pad), int(pad + th + 5 * s)), (0, 0, 200), -1)
        _text(cv2, roi, "PAUSED", (px, pad + th + 1 * s), fs, (255, 255, 255), 1)


def _draw_bars(cv2, roi: np.ndarray, state: EmotionState, pad: float, y: float, pw: int, s: float) -> float:
    small = 0.4 * s
    label_w = 62 * s
    value_w = 34 * s
    bar_x0 = pad + label_w
    bar_max = max(4.0, pw - bar_x0 - value_w - pad)
    row = 15 * s
    top = state.labels.index(state.top_label) if state.top_label in state.labels else -1
    for i, (lab, p) in enumerate(zip(state.labels, state.probabilities)):
        cy = y + i * row
        color = emotion_bgr(lab)
        name_color = TEXT_BGR if i == top and not _uniform(state) else (200, 200, 200)
        _text(cv2, roi, lab[:9], (pad, cy + 11 * s), small, name_color)
        bx0, by0 = round(bar_x0), round(cy + 3 * s)
        by1 = round(cy + row - 3 * s)
        cv2.rectangle(roi, (bx0, by0), (round(bar_x0 + bar_max), by1), (70, 70, 70), 1)
        bw = round(bar_max * min(1.0, max(0.0, p)))
        if bw > 0:
            cv2.rectangle(roi, (bx0, by0), (bx0 + bw, by1), color, -1)
        _text(cv2, roi, f"{p:.2f}", (bar_x0 + bar_max + 4 * s, cy + 11 * s), small * 0.9, (220, 220, 220))
    return y + len(state.labels) * row + 4 * s


def _draw_valence_arousal(cv2, roi: np.ndarray, state: EmotionState, pad: float, y: float, s: float) -> float:
    side = 54 * s
    x0, y0 = pad, y + 2 * s
    x1, y1 = x0 + side, y0 + side
    p = lambda x, yy: (round(x), round(yy))  # noqa: E731
    cv2.rectangle(roi, p(x0, y0), p(x1, y1), (110, 110, 110), 1)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    cv2.line(roi, p(x0, cy), p(x1, cy), (80, 80, 80), 1)
    cv2.line(roi, p(cx, y0), p(cx, y1), (80, 80, 80), 1)
    v, a = state.valence, state.arousal
    tx = x1 + 8 * s
    small = 0.4 * s
    if v is not None or a is not None:
        mx = cx + (v or 0.0) * side / 2
        my = cy - (a or 0.0) * side / 2
        color = (80, 220, 80) if (v or 0.0) >= 0 else (80, 80, 230)
        cv2.circle(roi, p(mx, my), max(2, round(4 * s)), color, -1, cv2.LINE_AA)
        cv2.circle(roi, p(mx, my), max(2, round(4 * s)), (255, 255, 255), 1, cv2.LINE_AA)
    _text(cv2, roi, f"valence {_fmt_signed(v)}", (tx, y0 + 16 * s), small, TEXT_BGR)
    _text(cv2, roi, f"arousal {_fmt_signed(a)}", (tx, y0 + 34 * s), small, TEXT_BGR)
    return y + side + 6 * s


def _draw_chips(cv2, roi: np.ndarray, present: tuple[str, ...], pad: float, y: float, s: float) -> float:
    x = pad
    fs = 0.36 * s
    for mod in MODALITIES:
        label = _CHIP[mod]
        (tw, _th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, fs, 1)
        x1 = x + tw + 6 * s
        on = mod in present
        if on:
            cv2.rectangle(roi, (round(x), round(y + 1 * s)), (round(x1), round(y + 14 * s)), modality_bgr(mod), -1)
        else:
            cv2.rectangle(roi, (round(x), round(y + 1 * s)), (round(x1), round(y + 14 * s)), (90, 90, 90), 1)
        _text(cv2, roi, label, (x + 3 * s, y + 11 * s), fs, (0, 0, 0) if on else DIM_BGR)
        x = x1 + 3 * s
    return y + 16 * s


def _draw_rationale(cv2, out: np.ndarray, rect: Rect, text: str, stats: OverlayStats, s: float) -> None:
    x0, y0, x1, y1 = rect
    roi = out[y0:y1, x0:x1]
    _shade(roi)
    fs = 0.42 * s
    age = stats.rationale_age_s
    head = "rationale" + (f" ({age:.1f} s ago)" if age is not None else "") + ":"
    _text(cv2, roi, head, (6 * s, 15 * s), fs * 0.95, DIM_BGR)
    for i, line in enumerate(_wrap(text, (x1 - x0) - 12 * s, fs)):
        _text(cv2, roi, line, (6 * s, 15 * s + (i + 1) * 15 * s), fs, TEXT_BGR)


def latency_of(state: EmotionState) -> float | None:
    """The latency worth showing for a state: end-to-end when live, else the pipeline's."""
    lat: Mapping[str, float] = state.latency_ms
    for key in ("since_window_end", "pipeline", "engine"):
        if key in lat:
            return float(lat[key])
    return None
