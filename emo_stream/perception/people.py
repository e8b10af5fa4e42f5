"""Several people at once: every face tracked with a stable id, voice attributed by a rule.

Why: an HRI robot rarely faces one person. The face stage used to keep only the
primary face of each frame; here every detected face of each analysed frame is
given a stable person id (``p1``, ``p2`` ... per stream) so that the engine can
emit one state per person per window (``EmotionState.person_id``) and the ROS
node can publish ROS4HRI-style per-face topics.

Tracker (:class:`PersonTracker`): a documented IoU + motion tracker, written
here because neither kept library fits: ``norfair`` (2.3) pulls in ``rich`` and
``filterpy`` and tracks points, and ``motpy`` (0.0.10, 2021) pins old
``filterpy``/``scipy`` APIs; faces at a few analysed frames per second need far
less than a Kalman filter. Per analysed frame:

1. Predict each live track's box with constant velocity from its last two
   detections (capped at one face width per frame gap: a missed frame must not
   fling the prediction away).
2. Match detections to tracks greedily by IoU with the predicted box (highest
   first, at least ``iou_match``), then the rest by centre distance below
   ``max_jump`` face widths (fast head turns shrink the IoU to 0 between
   frames several hundred ms apart).
3. Re-identification after a short occlusion: a detection left over is matched
   to a *lost* track (unseen for at most ``reid_s``) whose last box was within
   ``reid_max_dist`` face widths and of similar size (ratio <= 1.6). So a
   person who looks away or walks behind another for up to ``reid_s`` keeps
   the id; longer, and the id is retired (never reused in the stream).
4. New tracks for the remaining detections, largest faces first, while fewer
   than ``max_people`` tracks are live (the bound; extra faces are counted in
   ``dropped`` and ignored).
5. A track is *confirmed* after ``min_hits`` detections (one stray false
   positive never becomes a person); it *appeared* then, and *left* when it is
   retired. Both are :class:`PersonEvent` s, observations, never errors.

Voice attribution (:func:`attribute_speaker`): the rule is "the face whose
mouth moves while the voice is active". Mouth movement per analysed frame is
the mean absolute grey-level change of the mouth region between the person's
consecutive analysed frames, minus the change of the eye region (head motion
and lighting move both; talking moves mostly the mouth). The mouth region
comes from RetinaFace's mouth-corner landmarks, or the lower third of the box
when the detector gives none (Haar). When the voice is active and exactly one
confirmed person is present, it is theirs. With several, the one with the
largest mean mouth movement gets it if it is at least ``ratio`` times the
runner-up's and above ``min_motion``; otherwise nobody does and the states say
``speaker_unsure``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from emo_stream.errors import ConfigError
from emo_stream.perception.workers import FaceAnalyzer, FaceResult, TimedBuffer
from emo_stream.stream.samples import VideoFrame


@dataclass(frozen=True)
class PeopleConfig:
    """Multi-person tracking settings (``engine.options.people`` in the YAML config).

    Attributes:
        max_people: at most this many people tracked at once (0 turns tracking off:
            the primary face only, as before).
        iou_match: least IoU between a predicted track box and a detection to match.
        max_jump: else a match if the centres are closer than this many face widths.
        reid_s: a track unseen this long is retired (the person left).
        reid_max_dist: re-identification radius after an occlusion, in face widths.
        min_hits: detections before a track counts as a person (false-positive guard).
        speaker_ratio: the speaking face's mouth movement must be this many times the
            runner-up's.
        speaker_min_motion: and at least this (mean grey-level change, 0..1).
    """

    max_people: int = 4
    iou_match: float = 0.2
    max_jump: float = 0.75
    reid_s: float = 2.0
    reid_max_dist: float = 1.5
    min_hits: int = 2
    speaker_ratio: float = 1.5
    speaker_min_motion: float = 0.004

    def __post_init__(self) -> None:
        if not 0 <= self.max_people <= 32:
            raise ConfigError(f"people.max_people must be in [0, 32], got {self.max_people}")
        if not 0.0 < self.iou_match < 1.0:
            raise ConfigError(f"people.iou_match must be in (0, 1), got {self.iou_match}")
        if not 0.0 <= self.max_jump <= 5.0 or not 0.0 <= self.reid_max_dist <= 10.0:
            raise ConfigError("people.max_jump must be in [0, 5] and people.reid_max_dist in [0, 10] (face widths)")
        if not 0.0 < self.reid_s <= 60.0:
            raise ConfigError(f"people.reid_s must be in (0, 60], got {self.reid_s}")
        if not 1 <= self.min_hits <= 30:
            raise ConfigError(f"people.min_hits must be in [1, 30], got {self.min_hits}")
        if self.speaker_ratio < 1.0 or not 0.0 <= self.speaker_min_motion < 1.0:
            raise ConfigError("people.speaker_ratio must be >= 1 and people.speaker_min_motion in [0, 1)")


@dataclass(frozen=True)
class PersonEvent:
    """A person appeared (track confirmed) or left (track retired) at capture time ``t``."""

    t: float
    person_id: str
    kind: str  # "appeared" | "left"


@dataclass(frozen=True)
class TrackedFace:
    """One person's face in one analysed frame.

    ``probs``: FER2013 expression probabilities of the crop (None until the analyzer
    fills them); ``mouth_motion``: see the module doc (None on the person's first frame).
    """

    person_id: str
    box: Any
    confirmed: bool
    probs: np.ndarray | None = None
    mouth_motion: float | None = None


@dataclass(frozen=True)
class PeopleFrame:
    """Every tracked person of one analysed frame, and the events it caused."""

    t: float
    width: int
    height: int
    faces: tuple[TrackedFace, ...]
    events: tuple[PersonEvent, ...] = ()
    primary_id: str | None = None
    #: external faces (:mod:`~emo_stream.perception.external_faces`): ids the external
    #: tracker lists but whose box was stale or missing for this frame
    stale_ids: tuple[str, ...] = ()
    #: frame-level flags, e.g. ``faces_input_stale`` (no fresh external face list)
    flags: tuple[str, ...] = ()


def iou(a: Any, b: Any) -> float:
    """Intersection over union of two boxes with ``x, y, w, h``."""
    x0, y0 = max(a.x, b.x), max(a.y, b.y)
    x1, y1 = min(a.x + a.w, b.x + b.w), min(a.y + a.h, b.y + b.h)
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = a.w * a.h + b.w * b.h - inter
    return float(inter / union) if union > 0 else 0.0


@dataclass
class _Box:
    """A predicted box (floats); FaceBox-like for :func:`iou`."""

    x: float
    y: float
    w: float
    h: float


def _centre(b: Any) -> tuple[float, float]:
    return (b.x + b.w / 2.0, b.y + b.h / 2.0)


@dataclass
class _Track:
    person_id: str
    box: Any
    t: float
    hits: int = 1
    velocity: tuple[float, float] = (0.0, 0.0)  # centre px per second
    confirmed: bool = False
    mouth: np.ndarray | None = None
    eyes: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def observe(self, box: Any, t: float) -> None:
        """The track was seen at ``box`` at ``t``: velocity from the centre's move, one more hit."""
        dt = t - self.t
        if self.hits > 0 and dt > 1e-6:
            (cx0, cy0), (cx1, cy1) = _centre(self.box), _centre(box)
            self.velocity = ((cx1 - cx0) / dt, (cy1 - cy0) / dt)
        self.box, self.t = box, t
        self.hits += 1

    def predict(self, t: float) -> _Box:
        dt = max(0.0, t - self.t)
        dx, dy = self.velocity[0] * dt, self.velocity[1] * dt
        cap = self.box.w  # at most one face width: a missed frame must not fling it away
        norm = math.hypot(dx, dy)
        if norm > cap > 0:
            dx, dy = dx * cap / norm, dy * cap / norm
        return _Box(self.box.x + dx, self.box.y + dy, self.box.w, self.box.h)


class PersonTracker:
    """IoU + motion tracker with re-identification and a bound (see the module doc).

    Not thread-safe: one analyzer thread calls :meth:`update` in capture order.
    """

    def __init__(self, config: PeopleConfig | None = None) -> None:
        self.config = config or PeopleConfig()
        self.reset()

    def reset(self) -> None:
        self._tracks: list[_Track] = []
        self._next_id = 1
        self.dropped = 0  # faces ignored because max_people were tracked

    @property
    def live_ids(self) -> list[str]:
        return [tr.person_id for tr in self._tracks if tr.confirmed]

    def update(self, t: float, boxes: Sequence[Any]) -> tuple[list[tuple[_Track, Any]], list[PersonEvent]]:
        """Assign this frame's boxes to tracks: ([(track, box)] for every tracked box, events)."""
        c = self.config
        events: list[PersonEvent] = []
        # Retire tracks unseen for longer than reid_s (the person left).
        keep = []
        for tr in self._tracks:
            if t - tr.t > c.reid_s:
                if tr.confirmed:
                    events.append(PersonEvent(t, tr.person_id, "left"))
            else:
                keep.append(tr)
        self._tracks = keep
        pending = list(range(len(boxes)))
        free = list(self._tracks)
        pairs: list[tuple[_Track, Any]] = []

        def take(tr: _Track, i: int) -> None:
            pairs.append((tr, boxes[i]))
            free.remove(tr)
            pending.remove(i)

        # 1-2. IoU with the predicted box, best first; then centre distance.
        cands = sorted(((iou(tr.predict(t), boxes[i]), k, i) for k, tr in enumerate(free) for i in pending), reverse=True)
        order = list(free)
        for score, k, i in cands:
            tr = order[k]
            if score < c.iou_match:
                break
            if tr in free and i in pending:
                take(tr, i)
        for tr, i in self._by_distance(free, pending, boxes, t, recent_only=True):
            take(tr, i)
        # 3. re-identification of lost tracks (unseen a while, within reid_s).
        for tr, i in self._by_distance(free, pending, boxes, t, recent_only=False):
            take(tr, i)
        # 4. new tracks, largest faces first, within the bound.
        for i in sorted(pending, key=lambda j: -boxes[j].w * boxes[j].h):
            if len(self._tracks) >= c.max_people:
                self.dropped += 1
                continue
            tr = _Track(f"p{self._next_id}", boxes[i], t, hits=0)  # hit counted below like every match
            self._next_id += 1
            self._tracks.append(tr)
            pairs.append((tr, boxes[i]))
        # Update matched tracks.
        for tr, box in pairs:
            tr.observe(box, t)
            if not tr.confirmed and tr.hits >= c.min_hits:
                tr.confirmed = True
                events.append(PersonEvent(t, tr.person_id, "appeared"))
        # Unconfirmed tracks that missed a frame were most likely false positives.
        self._tracks = [tr for tr in self._tracks if tr.confirmed or tr.t == t]
        return pairs, events

    def _by_distance(self, free: list[_Track], pending: list[int], boxes: Sequence[Any], t: float, *, recent_only: bool):
        """Greedy centre-distance matches: recent tracks within ``max_jump`` widths, or
        (re-identification) any live track within ``reid_max_dist`` widths and similar size."""
        c = self.config
        out: list[tuple[_Track, int]] = []
        cands = []
        for tr in free:
            lost = t - tr.t
            if recent_only and lost > 0.6:
                continue
            limit = c.max_jump if recent_only else c.reid_max_dist
            p = tr.predict(t) if recent_only else tr.box
            for i in pending:
                b = boxes[i]
                ratio = max(b.w, p.w) / max(1e-6, min(b.w, p.w))
                if ratio > 1.6:
                    continue
                (px, py), (bx, by) = _centre(p), _centre(b)
                d = math.hypot(px - bx, py - by) / max(1.0, p.w)
                if d <= limit:
                    cands.append((d, id(tr), tr, i))
        used_t: set[int] = set()
        used_i: set[int] = set()
        for _d, key, tr, i in sorted(cands, key=lambda x: x[0]):
            if key in used_t or i in used_i:
                continue
            used_t.add(key)
            used_i.add(i)
            out.append((tr, i))
        return out


# ----------------------------------------------------------------------------- mouth movement


def _regions(gray: np.ndarray, box: Any) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Mouth and eye regions of one face, resized to fixed small patches (see module doc)."""
    h, w = gray.shape[:2]
    lm = getattr(box, "landmarks", None)
    if lm is not None and len(lm) >= 5:
        (rx, ry), (lx, ly), _nose, (mrx, mry), (mlx, mly) = lm[:5]
        span = max(4.0, math.hypot(mlx - mrx, mly - mry))
        mcx, mcy = (mrx + mlx) / 2.0, (mry + mly) / 2.0
        mouth = (mcx - 0.8 * span, mcy - 0.5 * span, mcx + 0.8 * span, mcy + 0.6 * span)
        espan = max(4.0, math.hypot(lx - rx, ly - ry))
        ecx, ecy = (rx + lx) / 2.0, (ry + ly) / 2.0
        eyes = (ecx - 0.9 * espan, ecy - 0.35 * espan, ecx + 0.9 * espan, ecy + 0.35 * espan)
    else:
        mouth = (box.x + 0.25 * box.w, box.y + 0.66 * box.h, box.x + 0.75 * box.w, box.y + 0.95 * box.h)
        eyes = (box.x + 0.15 * box.w, box.y + 0.25 * box.h, box.x + 0.85 * box.w, box.y + 0.5 * box.h)

    def patch(r: tuple[float, float, float, float], size: tuple[int, int]) -> np.ndarray | None:
        x0, y0 = max(0, int(r[0])), max(0, int(r[1]))
        x1, y1 = min(w, int(math.ceil(r[2]))), min(h, int(math.ceil(r[3])))
        if x1 - x0 < 2 or y1 - y0 < 2:
            return None
        return cv2.resize(gray[y0:y1, x0:x1], size, interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0

    return patch(mouth, (24, 12)), patch(eyes, (24, 8))


def mouth_motion(track: _Track, gray: np.ndarray, box: Any) -> float | None:
    """Mouth-region change minus eye-region change since the track's last frame (>= 0),
    None on its first frame or when a region falls outside the image."""
    mouth, eyes = _regions(gray, box)
    prev_m, prev_e = track.mouth, track.eyes
    track.mouth, track.eyes = mouth, eyes
    if mouth is None or prev_m is None:
        return None
    dm = float(np.mean(np.abs(mouth - prev_m)))
    de = float(np.mean(np.abs(eyes - prev_e))) if eyes is not None and prev_e is not None else 0.0
    return max(0.0, dm - de)


# ----------------------------------------------------------------------------- speaker rule


@dataclass(frozen=True)
class Attribution:
    """Who the voice of a window belongs to: ``person_id`` None when nobody (``unsure``
    tells whether that is because the rule could not decide)."""

    person_id: str | None
    unsure: bool
    motion: dict[str, float]


def attribute_speaker(motion: dict[str, list[float]], voice_active: bool, config: PeopleConfig | None = None) -> Attribution:
    """The documented rule of the module doc: the face whose mouth moves while the voice is active."""
    c = config or PeopleConfig()
    means = {pid: float(np.mean(v)) for pid, v in motion.items() if v}
    if not voice_active or not motion:
        return Attribution(None, False, means)
    if len(motion) == 1:
        return Attribution(next(iter(motion)), False, means)
    ranked = sorted(means.items(), key=lambda kv: -kv[1])
    if len(ranked) >= 1 and ranked[0][1] >= c.speaker_min_motion:
        second = ranked[1][1] if len(ranked) > 1 else 0.0
        if ranked[0][1] >= c.speaker_ratio * second:
            return Attribution(ranked[0][0], False, means)
    return Attribution(None, True, means)


# ----------------------------------------------------------------------------- analyzer


class PeopleFaceAnalyzer(FaceAnalyzer):
    """:class:`FaceAnalyzer` that keeps every face: tracks them and reads each one's expression.

    The primary face's :class:`FaceResult` is written to ``results`` exactly as
    :class:`FaceAnalyzer` does (same box choice, same crop), so the primary
    person's stream is unchanged; every tracked face of the frame goes to
    ``people`` as one :class:`PeopleFrame`.
    """

    def __init__(
        self,
        detector: Any,
        recognizer: Any,
        results: TimedBuffer[FaceResult],
        people: TimedBuffer[PeopleFrame],
        *,
        fps: float,
        detect_every: int = 1,
        track_max_s: float = 0.5,
        config: PeopleConfig | None = None,
    ) -> None:
        self.people = people
        self.tracker = PersonTracker(config)
        super().__init__(detector, recognizer, results, fps=fps, detect_every=detect_every, track_max_s=track_max_s)

    def reset(self) -> None:
        super().reset()
        self.tracker.reset()
        self._last_boxes: tuple[float, list[Any]] | None = None
        self.people.clear()

    def analyze(self, frame: VideoFrame) -> FaceResult:
        image = frame.image
        with self._lock:
            n = self._analysed
            self._analysed += 1
            last = self._last_boxes
        detect = n % self.detect_every == 0 or last is None or frame.t - last[0] > self.track_max_s
        if detect:
            boxes = list(self.detector.detect(image))
            self.detections += 1
            with self._lock:
                self._last_boxes = (frame.t, boxes) if boxes else None
        else:
            assert last is not None  # detect is True whenever there are no last boxes
            boxes = last[1]
        pairs, events = self.tracker.update(frame.t, boxes)
        return self._record(frame, boxes, pairs, events, tracked=not detect)

    def _record(
        self,
        frame: VideoFrame,
        boxes: Sequence[Any],
        pairs: Sequence[tuple[_Track, Any]],
        events: Sequence[PersonEvent],
        *,
        tracked: bool,
        stale_ids: Sequence[str] = (),
        flags: Sequence[str] = (),
    ) -> FaceResult:
        """Read every tracked face's expression, write the primary's FaceResult and the PeopleFrame.

        Shared by the own detector + tracker (:meth:`analyze`) and external faces
        (:class:`~emo_stream.perception.external_faces.ExternalFaceAnalyzer`): where the
        boxes and ids come from is the only difference.
        """
        from emo_stream.perception.face import crop_face, select_primary

        image = frame.image
        h, w = image.shape[:2]
        primary = select_primary(boxes, image.shape) if boxes else None
        probs_all = self.recognizer.predict([crop_face(image, b, size=64) for _, b in pairs]) if pairs else None
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 and pairs else image
        faces = []
        primary_probs, primary_id = None, None
        for k, (tr, b) in enumerate(pairs):
            probs = np.asarray(probs_all[k]) if probs_all is not None else None
            faces.append(TrackedFace(tr.person_id, b, tr.confirmed, probs, mouth_motion(tr, gray, b)))
            if b is primary:
                primary_probs, primary_id = probs, tr.person_id
        if primary is not None and primary_probs is None:  # beyond the bound: still read the primary
            primary_probs = self.recognizer.predict([crop_face(image, primary, size=64)])[0]
        result = FaceResult(frame.t, frame.index, w, h, primary, primary_probs, tracked)
        self.results.append(frame.t, result)
        self.people.append(frame.t, PeopleFrame(frame.t, w, h, tuple(faces), tuple(events), primary_id, tuple(stale_ids), tuple(flags)))
        return result


@dataclass
class PersonWindow:
    """One person's evidence over one window (what the engine fuses into their state)."""

    person_id: str
    probs: list[np.ndarray] = field(default_factory=list)
    motion: list[float] = field(default_factory=list)
    frames: int = 0
    last_box: Any = None
    width: int = 0
    height: int = 0
    events: list[str] = field(default_factory=list)
    #: conditions of this window, reported in every window they hold (unlike ``events``,
    #: which are reported once): ``face_roi_stale`` (external faces: listed, no fresh box)
    flags: list[str] = field(default_factory=list)


def window_flags(frames: Sequence[PeopleFrame]) -> list[str]:
    """Frame-level flags of the window's frames (each once, first-seen order): they go on
    the primary person's state, e.g. ``faces_input_stale``."""
    return list(dict.fromkeys(f for fr in frames for f in fr.flags))


def summarize_window(frames: Sequence[PeopleFrame]) -> tuple[dict[str, PersonWindow], str | None, list[PersonEvent]]:
    """Per confirmed person: their crops' probabilities, mouth movement and events in the
    window; the primary person's id (of the window's last frame with one); every event."""
    people: dict[str, PersonWindow] = {}
    events: list[PersonEvent] = []
    primary = None
    for fr in frames:
        for ev in fr.events:
            events.append(ev)
            people.setdefault(ev.person_id, PersonWindow(ev.person_id)).events.append(f"person_{ev.kind}")
        for f in fr.faces:
            if not f.confirmed:
                continue
            pw = people.setdefault(f.person_id, PersonWindow(f.person_id))
            pw.frames += 1
            if f.probs is not None:
                pw.probs.append(f.probs)
            if f.mouth_motion is not None:
                pw.motion.append(f.mouth_motion)
            pw.last_box, pw.width, pw.height = f.box, fr.width, fr.height
        for pid in fr.stale_ids:
            pw = people.setdefault(pid, PersonWindow(pid))
            if "face_roi_stale" not in pw.flags:
                pw.flags.append("face_roi_stale")
        if fr.primary_id is not None and any(f.person_id == fr.primary_id and f.confirmed for f in fr.faces):
            primary = fr.primary_id
    return people, primary, events
