"""Faces from an external detector: boxes and ids supplied per capture time, not detected here.

Why: an HRI robot often runs a face detector and tracker already (ROS4HRI's
``hri_face_detect`` publishes ``/humans/faces/tracked`` and one
``/humans/faces/<id>/roi`` per face). Running RetinaFace and our own tracker
beside it costs CPU twice and gives the same people two ids. With external
faces the default engine keeps everything after detection (expression per
face, mouth movement, the speaker rule, per-person fusion) and takes the boxes
and person ids from outside: person ids *are* the external face ids.

The seam is :class:`ExternalFaces`, a thread-safe store filled by whoever
receives the detector's output (the ROS node's subscriptions) and read by
:class:`ExternalFaceAnalyzer` on the engine's face worker, frame by frame:

* :meth:`ExternalFaces.set_tracked` (the tracked ids at capture time ``t``) and
  :meth:`ExternalFaces.put_roi` (one face's box at ``t``), in any order and
  any thread; times are the pipeline's capture times of the frames the
  detector saw (ROS: the same header stamps as the images).
* :meth:`ExternalFaces.at` for a frame at ``t``: waits up to ``wait_s`` for the
  detector's output for that frame (it runs beside us and is usually a few
  tens of ms behind), then takes the tracked list nearest to ``t`` within
  ``max_age_s`` and, for each listed id, its box nearest to ``t`` within
  ``max_age_s``.

Stale or missing input is a flag, never an error: no tracked list within
``max_age_s`` -> the frame has no faces and the flag ``faces_input_stale`` (on
the primary person's state); a listed id without a fresh box -> that person
has no face in the frame and their state says ``face_roi_stale`` (and
``no_face`` when the whole window lacked a box).

Appear/leave events follow the external ids: a person *appeared* when their id
first comes with a box, and *left* once the id has been neither listed nor
boxed for ``people.reid_s`` (a detector that drops a face for a frame or two
does not make it leave). ``people.max_people`` still bounds the people read
per frame (largest faces first).
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from emo_stream.errors import ConfigError
from emo_stream.perception.face import FaceBox
from emo_stream.perception.people import PeopleConfig, PeopleFaceAnalyzer, PeopleFrame, PersonEvent, _Track
from emo_stream.perception.workers import FaceResult, TimedBuffer
from emo_stream.stream.samples import VideoFrame

#: A message stamped within this of a frame's time counts as the detector's output for that frame.
SAME_FRAME_S = 1e-3


@dataclass(frozen=True)
class ExternalFacesConfig:
    """How external face input is matched to frames.

    Attributes:
        max_age_s: a tracked list or box counts for a frame when stamped within this
            of the frame's capture time (0.25 s: a detector at 4+ fps always has one).
        wait_s: the face worker waits at most this long for the detector's output of
            a frame before using what it has (the detector lags the camera a little).
            0.1 s, below the 0.125 s frame period at face_fps 8: a face that is listed but
            gets no ROIs makes every frame wait the full time, and a longer wait left the
            worker behind the windows (its stale flags never reached a state, ROS test).
        horizon_s: input older than this behind the newest is forgotten.
    """

    max_age_s: float = 0.25
    wait_s: float = 0.1
    horizon_s: float = 5.0

    def __post_init__(self) -> None:
        if not 0.0 < self.max_age_s <= 5.0:
            raise ConfigError(f"external_faces.max_age_s must be in (0, 5], got {self.max_age_s}")
        if not 0.0 <= self.wait_s <= 5.0:
            raise ConfigError(f"external_faces.wait_s must be in [0, 5], got {self.wait_s}")
        if not self.max_age_s <= self.horizon_s <= 60.0:
            raise ConfigError(f"external_faces.horizon_s must be in [max_age_s, 60], got {self.horizon_s}")


#: A face box from outside, in the frame's pixels: a :class:`FaceBox` without landmarks
#: (crops are not rotated, the mouth region is the box's lower third) and score 1.
ExternalBox = FaceBox


@dataclass(frozen=True)
class ExternalLookup:
    """What the external detector said about one frame (see :meth:`ExternalFaces.at`)."""

    faces: tuple[tuple[str, ExternalBox], ...]
    listed: tuple[str, ...]
    stale: tuple[str, ...]
    flags: tuple[str, ...]


def _nearest(times: list[float], t: float, max_age: float) -> int | None:
    """Index of the entry of sorted ``times`` nearest to ``t`` within ``max_age``."""
    i = bisect.bisect_left(times, t)
    best = None
    for j in (i - 1, i):
        if 0 <= j < len(times) and abs(times[j] - t) <= max_age and (best is None or abs(times[j] - t) < abs(times[best] - t)):
            best = j
    return best


class ExternalFaces:
    """Thread-safe store of an external detector's tracked ids and boxes by capture time."""

    def __init__(self, config: ExternalFacesConfig | None = None) -> None:
        self.config = config or ExternalFacesConfig()
        self._cond = threading.Condition()
        self.clear()

    def clear(self) -> None:
        with self._cond:
            self._list_t: list[float] = []
            self._lists: list[tuple[str, ...]] = []
            self._roi_t: dict[str, list[float]] = {}
            self._rois: dict[str, list[ExternalBox]] = {}
            self._newest = -math.inf
            self.lists_received = 0
            self.rois_received = 0

    def set_tracked(self, t: float, ids: Sequence[str]) -> None:
        """The detector tracks exactly ``ids`` at capture time ``t``."""
        with self._cond:
            k = bisect.bisect_right(self._list_t, t)
            self._list_t.insert(k, t)
            self._lists.insert(k, tuple(dict.fromkeys(str(i) for i in ids)))
            self.lists_received += 1
            self._seen(t)
            self._cond.notify_all()

    def put_roi(self, t: float, face_id: str, box: ExternalBox) -> None:
        """Face ``face_id``'s box at capture time ``t`` (pixels of the frame at ``t``)."""
        if box.w <= 0 or box.h <= 0:
            raise ValueError(f"face {face_id!r}: empty box {box.w}x{box.h}")
        with self._cond:
            times = self._roi_t.setdefault(face_id, [])
            k = bisect.bisect_right(times, t)
            times.insert(k, t)
            self._rois.setdefault(face_id, []).insert(k, box)
            self.rois_received += 1
            self._seen(t)
            self._cond.notify_all()

    def _seen(self, t: float) -> None:
        """Track the newest time and drop what fell behind the horizon (lock held)."""
        self._newest = max(self._newest, t)
        cut = self._newest - self.config.horizon_s
        k = bisect.bisect_left(self._list_t, cut)
        if k:
            del self._list_t[:k], self._lists[:k]
        for fid in list(self._roi_t):
            times = self._roi_t[fid]
            k = bisect.bisect_left(times, cut)
            if k:
                del times[:k], self._rois[fid][:k]
            if not times:
                del self._roi_t[fid], self._rois[fid]

    def _complete(self, t: float) -> bool:
        """Whether the detector's output for the frame at ``t`` is in: a list at least as
        new as the frame, and a box at least as new for every id of that list."""
        if not self._list_t or self._list_t[-1] < t - SAME_FRAME_S:
            return False
        k = _nearest(self._list_t, t, self.config.max_age_s)
        ids = self._lists[k] if k is not None else ()
        return all(self._roi_t.get(fid) and self._roi_t[fid][-1] >= t - SAME_FRAME_S for fid in ids)

    def at(self, t: float, wait: bool = True) -> ExternalLookup:
        """The faces of the frame at ``t`` (waiting up to ``wait_s`` for them when ``wait``)."""
        c = self.config
        with self._cond:
            if wait and c.wait_s > 0:
                self._cond.wait_for(lambda: self._complete(t), timeout=c.wait_s)
            k = _nearest(self._list_t, t, c.max_age_s)
            if k is None:
                return ExternalLookup((), (), (), ("faces_input_stale",))
            listed = self._lists[k]
            faces, stale = [], []
            for fid in listed:
                j = _nearest(self._roi_t.get(fid, []), t, c.max_age_s)
                if j is None:
                    stale.append(fid)
                else:
                    faces.append((fid, self._rois[fid][j]))
            return ExternalLookup(tuple(faces), listed, tuple(stale), ())


class ExternalIdTracker:
    """The tracker's job when ids come from outside: appear/leave events and the bound.

    Same interface as :class:`~emo_stream.perception.people.PersonTracker` where the
    analyzer uses it (``update``, ``reset``, ``live_ids``, ``dropped``), but it never
    assigns ids: tracks are keyed by the external id and confirmed at once (the
    external tracker has confirmed them already).
    """

    def __init__(self, config: PeopleConfig | None = None) -> None:
        self.config = config or PeopleConfig()
        self.reset()

    def reset(self) -> None:
        self._tracks: dict[str, _Track] = {}
        self._listed_t: dict[str, float] = {}
        self.dropped = 0

    @property
    def live_ids(self) -> list[str]:
        return list(self._tracks)

    def update(self, t: float, faces: Sequence[tuple[str, Any]], listed: Sequence[str] = ()) -> tuple[list[tuple[_Track, Any]], list[PersonEvent]]:
        """This frame's ``(id, box)`` faces and the ids listed without a box -> ([(track, box)], events)."""
        c = self.config
        events: list[PersonEvent] = []
        for pid in listed:
            if pid in self._tracks:
                self._listed_t[pid] = t
        for pid, tr in list(self._tracks.items()):
            if t - max(tr.t, self._listed_t.get(pid, tr.t)) > c.reid_s:
                del self._tracks[pid]
                self._listed_t.pop(pid, None)
                events.append(PersonEvent(t, pid, "left"))
        pairs: list[tuple[_Track, Any]] = []
        for pid, box in sorted(faces, key=lambda f: -f[1].w * f[1].h):
            if pid not in self._tracks:
                if len(self._tracks) >= c.max_people:
                    self.dropped += 1
                    continue
                self._tracks[pid] = _Track(pid, box, t, hits=0, confirmed=True)
                events.append(PersonEvent(t, pid, "appeared"))
            tr = self._tracks[pid]
            tr.observe(box, t)
            pairs.append((tr, box))
        return pairs, events


class ExternalFaceAnalyzer(PeopleFaceAnalyzer):
    """:class:`PeopleFaceAnalyzer` whose boxes and ids come from :class:`ExternalFaces`.

    Everything after detection is the people analyzer's (same crops, expression,
    mouth movement, primary choice), so the per-person states differ only in
    where the faces came from.
    """

    def __init__(
        self,
        faces: ExternalFaces,
        recognizer: Any,
        results: TimedBuffer[FaceResult],
        people: TimedBuffer[PeopleFrame],
        *,
        fps: float,
        config: PeopleConfig | None = None,
    ) -> None:
        self.external = faces
        super().__init__(None, recognizer, results, people, fps=fps, detect_every=1, config=config)
        self.tracker = ExternalIdTracker(config)  # type: ignore[assignment]  # same interface where used

    def reset(self) -> None:
        super().reset()  # not the store: its input may have arrived before the stream started

    def analyze(self, frame: VideoFrame) -> FaceResult:
        with self._lock:
            self._analysed += 1
        look = self.external.at(frame.t)
        boxes = [b for _, b in look.faces]
        pairs, events = self.tracker.update(frame.t, look.faces, look.listed)  # type: ignore[call-arg]
        return self._record(frame, boxes, pairs, events, tracked=False, stale_ids=look.stale, flags=look.flags)


__all__ = [
    "ExternalBox",
    "ExternalFaceAnalyzer",
    "ExternalFaces",
    "ExternalFacesConfig",
    "ExternalIdTracker",
    "ExternalLookup",
]
