"""ROS4HRI face input (``faces_from: ros4hri``): the node behind an existing face detector.

Why: a robot running ROS4HRI already detects and tracks faces
(``hri_face_detect`` and the like). With this input the node runs no face
detector of its own: it reads the detector's REP 155 topics and hands their
boxes and ids to the engine's external-faces seam
(:class:`emo_stream.perception.external_faces.ExternalFaces`), so the person
ids of its states and of ``/humans/faces/<id>/expression`` *are* the
detector's face ids.

* ``/humans/faces/tracked`` (``hri_msgs/IdsList``): the ids tracked at the
  header stamp. A subscription to ``/humans/faces/<id>/roi``
  (``hri_msgs/RegionOfInterestStamped``) is made for each new id and removed
  when the id leaves the list.
* Stamps are the images' (the detector stamps its output with the stamp of the
  image it saw): both go through the node's one :class:`StampOrigin`, so a
  frame and the boxes found in it meet at the same capture time.
* ROIs are in the pixels of the published image; frames the node downscales
  (``max_frame_side``) get the box scaled alike and clipped to the image.

Bad input never stops the node: an id that is no ROS name token, an empty or
off-image ROI, or a message of a face no longer tracked is counted
(``faces_rejected_<reason>`` in the diagnostics) and skipped; late or missing
messages are flags in the states (see the external-faces module).
"""

from __future__ import annotations

import collections
import re
from collections.abc import Callable
from typing import Any

from emo_stream.perception.external_faces import ExternalBox, ExternalFaces
from emo_stream_ros.conversions import stamp_to_ns
from emo_stream_ros.inputs import StampOrigin
from emo_stream_ros.people import FACES_TRACKED

#: An id usable as one topic-name token (the person id rule of emo_stream.state).
_ID = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")


def roi_topic(face_id: str) -> str:
    return f"/humans/faces/{face_id}/roi"


class Ros4hriFaces:
    """Subscriptions to one external face detector, filling ``store`` (executor thread only).

    Args:
        node: the node (``create_subscription`` / ``destroy_subscription``).
        store: the engine's external faces.
        origin: the node's stamp origin (shared with the image input).
        image_geometry: ``() -> (scale, width, height)`` of the latest image as the
            pipeline gets it (scale: pipeline pixels per message pixel).
        qos: subscription QoS.
        warn: called once per kind of rejection.
    """

    def __init__(
        self,
        node: Any,
        store: ExternalFaces,
        origin: StampOrigin,
        image_geometry: Callable[[], tuple[float, int, int]],
        qos: Any,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        from hri_msgs.msg import IdsList

        self.node, self.store, self.origin, self._geometry, self._qos = node, store, origin, image_geometry, qos
        self._warn = warn or (lambda msg: None)
        self.lists = 0
        self.rois = 0
        self.rejected: collections.Counter[str] = collections.Counter()
        self.last_error = ""
        self._roi_subs: dict[str, Any] = {}
        self._tracked_sub = node.create_subscription(IdsList, FACES_TRACKED, self.on_tracked, qos)

    @property
    def face_ids(self) -> list[str]:
        """Ids whose ROI topic is subscribed."""
        return list(self._roi_subs)

    def on_tracked(self, msg: Any) -> None:
        t = self.origin.to_seconds(stamp_to_ns(msg.header.stamp))
        ids = []
        for fid in msg.ids:
            if _ID.fullmatch(fid):
                ids.append(fid)
            else:
                self._reject("id", f"face id {fid!r} is not a ROS name token (a letter, then letters, digits or '_')")
        self.lists += 1
        self.store.set_tracked(t, ids)
        for fid in ids:
            if fid not in self._roi_subs:
                from hri_msgs.msg import RegionOfInterestStamped

                self._roi_subs[fid] = self.node.create_subscription(RegionOfInterestStamped, roi_topic(fid), lambda m, fid=fid: self.on_roi(fid, m), self._qos)
        for fid in [f for f in self._roi_subs if f not in ids]:
            self.node.destroy_subscription(self._roi_subs.pop(fid))

    def on_roi(self, face_id: str, msg: Any) -> None:
        if face_id not in self._roi_subs:
            self._reject("untracked", f"ROI of face {face_id!r}, which is no longer tracked")
            return
        r = msg.roi
        if r.width <= 0 or r.height <= 0:
            self._reject("empty", f"face {face_id!r}: empty ROI {r.width}x{r.height}")
            return
        scale, width, height = self._geometry()
        x0, y0 = r.x_offset * scale, r.y_offset * scale
        x1, y1 = (r.x_offset + r.width) * scale, (r.y_offset + r.height) * scale
        if width and height:  # clip to the image (none seen yet: as given)
            x0, y0, x1, y1 = max(0.0, x0), max(0.0, y0), min(float(width), x1), min(float(height), y1)
        if x1 - x0 < 2 or y1 - y0 < 2:
            self._reject("outside", f"face {face_id!r}: ROI ({r.x_offset}, {r.y_offset}, {r.width}x{r.height}) lies outside the image")
            return
        t = self.origin.to_seconds(stamp_to_ns(msg.header.stamp))
        self.rois += 1
        self.store.put_roi(t, face_id, ExternalBox(int(x0), int(y0), int(round(x1 - x0)), int(round(y1 - y0))))

    def _reject(self, reason: str, detail: str) -> None:
        first = self.rejected[reason] == 0
        self.rejected[reason] += 1
        self.last_error = f"faces: {detail}"
        if first:
            self._warn(f"skipping ROS4HRI face input ({detail}); further ones are only counted in diagnostics")

    def diagnostics(self) -> dict[str, Any]:
        return {
            "faces_from": "ros4hri",
            "faces_lists_received": self.lists,
            "faces_rois_received": self.rois,
            "faces_tracked_ids": ",".join(self._roi_subs),
            **{f"faces_rejected_{k}": v for k, v in sorted(self.rejected.items())},
        }

    def close(self) -> None:
        for sub in [self._tracked_sub, *self._roi_subs.values()]:
            if sub is not None:
                self.node.destroy_subscription(sub)
        self._roi_subs.clear()
        self._tracked_sub = None
