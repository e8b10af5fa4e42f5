"""Per-person outputs of the node: its own ``~/persons/state`` and ROS4HRI (REP 155) topics.

Why: HRI stacks expect one stable id per person and per-face topics, which is
where ros4hri's own emotion recognizer publishes. The engine gives, per window,
the primary person's state (``~/state``, unchanged) and one state per other
tracked person (``EmotionState.person_id``). Per window this module publishes:

* ``~/persons/state`` (``emo_msgs/EmotionState``): every tracked person's state,
  the primary person's included, each with its ``person_id``;
* when the ``hri_msgs`` interfaces are importable (a ROS4HRI install, or the
  test-only package built from the REP in ``tests/ros/hri_msgs``):
  ``/humans/faces/tracked`` (``hri_msgs/IdsList``: the ids of the window's
  tracked faces, the person id doubling as the face id) and
  ``/humans/faces/<id>/expression`` (``hri_msgs/Expression``: the REP's
  expression name for the top label, valence, arousal, confidence). A
  per-face publisher is created when its id first appears and destroyed when
  the person's state says ``person_left``.

States without a person id (engines that track no one) go to ``~/persons/state``
only: REP 155 topics need an id. Behind an external ROS4HRI face detector
(``faces_from: ros4hri``, :mod:`emo_stream_ros.faces_in`) the ids are the
detector's and so is ``/humans/faces/tracked``: the node then publishes only
the per-face expressions (``publish_tracked=False``), never a second tracked list.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from emo_stream.labels import canonical
from emo_stream.state import EmotionState

#: The engine's canonical labels -> REP 155 ``Expression`` names ("" where the REP
#: has none; valence and arousal still say where the person is).
REP155_EXPRESSION = {
    "neutral": "neutral",
    "angry": "angry",
    "happy": "happy",
    "sad": "sad",
    "surprise": "surprised",
    "disgust": "disgusted",
    "fear": "scared",
    "worried": "scared",
    "contempt": "annoyed",
}

FACES_TRACKED = "/humans/faces/tracked"


def hri_available() -> bool:
    """Whether the ROS4HRI interfaces (``hri_msgs``) can be imported here."""
    try:
        from hri_msgs.msg import Expression, IdsList  # noqa: F401
    except ImportError:
        return False
    return True


def expression_name(label: str) -> str:
    from emo_stream.errors import ConfigError

    try:
        return REP155_EXPRESSION.get(canonical(label), "")
    except ConfigError:  # a label set's own label the circumplex does not know
        return ""


def expression_msg(state: EmotionState, stamp: Any, frame_id: str) -> Any:
    """``hri_msgs/Expression`` of one person's state (unknown valence/arousal: 0 with the
    state's confidence; REP 155 has no "unknown" value)."""
    from hri_msgs.msg import Expression

    msg = Expression()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.expression = expression_name(state.top_label)
    msg.valence = 0.0 if state.valence is None or not math.isfinite(state.valence) else float(state.valence)
    msg.arousal = 0.0 if state.arousal is None or not math.isfinite(state.arousal) else float(state.arousal)
    msg.confidence = float(state.confidence)
    return msg


class PeoplePublisher:
    """Publishes one window's per-person states (see the module doc); pipeline thread only.

    ``create_publisher(msg_type, topic, qos)`` / ``destroy_publisher(pub)`` are the
    node's (plain publishers: per-face ones appear while the node is active).
    """

    def __init__(
        self, create_publisher: Callable[..., Any], destroy_publisher: Callable[[Any], Any], qos: Any, hri: bool | None = None, publish_tracked: bool = True
    ) -> None:
        from emo_msgs.msg import EmotionState as EmotionStateMsg

        self._create, self._destroy, self._qos = create_publisher, destroy_publisher, qos
        self.states_pub = create_publisher(EmotionStateMsg, "~/persons/state", qos)
        self.hri = hri_available() if hri is None else hri
        self._tracked_pub = None
        self._faces: dict[str, Any] = {}
        if self.hri and publish_tracked:
            from hri_msgs.msg import IdsList

            self._tracked_pub = create_publisher(IdsList, FACES_TRACKED, qos)
        self._window: list[tuple[EmotionState, Any]] = []

    def add(self, state: EmotionState, msg: Any) -> None:
        """One person's state of the current window (the primary's first) and its message."""
        self.states_pub.publish(msg)
        self._window.append((state, msg))

    def end_window(self) -> None:
        """Every state of the window was added: the ROS4HRI topics."""
        window, self._window = self._window, []
        if not self.hri or not window:
            return
        from hri_msgs.msg import Expression, IdsList

        header = window[0][1].header
        ids = IdsList()
        ids.header = header
        for state, msg in window:
            pid = state.person_id
            if not pid:
                continue
            if "person_left" in state.flags:
                pub = self._faces.pop(pid, None)
                if pub is not None:
                    self._destroy(pub)
                continue
            ids.ids.append(pid)
            pub = self._faces.get(pid)
            if pub is None:
                pub = self._faces[pid] = self._create(Expression, f"/humans/faces/{pid}/expression", self._qos)
            pub.publish(expression_msg(state, msg.header.stamp, msg.header.frame_id))
        if self._tracked_pub is not None:
            self._tracked_pub.publish(ids)

    def close(self) -> None:
        for pub in [self.states_pub, self._tracked_pub, *self._faces.values()]:
            if pub is not None:
                self._destroy(pub)
        self._faces.clear()
        self.states_pub = self._tracked_pub = None
