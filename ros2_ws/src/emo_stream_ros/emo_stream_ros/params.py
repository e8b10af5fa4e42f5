"""The node's parameters: one table that declares, documents and validates them.

Every parameter is declared from :data:`PARAMS` with its description (visible
through ``ros2 param describe``), its type fixed by the default (so a string
where a number belongs is rejected by rclpy itself), and a check. Values are
validated twice: when set at run time (the set is refused with the reason) and
when the node configures (an invalid combination fails the ``configure``
transition with the reason in the log). Values are *applied* at ``configure``:
to change them on a running node, deactivate, clean up, set, configure and
activate (diagnostics show ``pending_reconfigure`` meanwhile).

Doubles must be written as doubles (``hop_s: 1.0``, not ``1``): ROS 2 does not
convert an integer to a double parameter.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emo_stream.config import StreamConfig
from emo_stream.errors import ConfigError, EmoStreamError
from emo_stream.structured_files import parse_yaml_text

INPUT_MODES = ("topics", "direct")
IMAGE_TRANSPORTS = ("raw", "compressed")
MIC_BACKENDS = ("pyaudio", "sounddevice")
FACES_FROM = ("own", "ros4hri")


@dataclass(frozen=True)
class Param:
    """One parameter: name, default (fixes the type), description, optional choices and check."""

    name: str
    default: Any
    description: str
    choices: tuple[str, ...] | None = None
    check: Callable[[Any], str | None] | None = None

    def validate(self, value: Any) -> str | None:
        if self.choices is not None and value not in self.choices:
            return f"{self.name} must be one of {', '.join(self.choices)}; got {value!r}"
        return self.check(value) if self.check else None


def _range(lo: float, hi: float, lo_open: bool = True) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        ok = (v > lo if lo_open else v >= lo) and v <= hi
        return None if ok else f"must be in {'(' if lo_open else '['}{lo}, {hi}], got {v}"

    return check


def _engine_ok(v: str) -> str | None:
    from emo_stream.engines import engine_names

    names = engine_names()
    return None if v in names else f"unknown engine {v!r}; available: {', '.join(names)}"


def _label_set_ok(v: str) -> str | None:
    from emo_stream.labels import LABEL_SETS

    return None if v.lower() in LABEL_SETS else f"unknown label set {v!r}; choose one of {', '.join(sorted(LABEL_SETS))}"


def _options_ok(v: str) -> str | None:
    try:
        parse_options(v)
    except ConfigError as exc:
        return str(exc)
    return None


def _file_ok(v: str) -> str | None:
    return None if not v or Path(v).expanduser().is_file() else f"file not found: {v}"


PARAMS: tuple[Param, ...] = (
    Param("autostart", True, "Configure and activate at startup (no lifecycle manager needed). false: wait for lifecycle transitions."),
    Param(
        "input_mode", "topics", "Where inputs come from: 'topics' (image/audio subscriptions) or 'direct' (camera/mic/file opened by the node).", INPUT_MODES
    ),
    Param(
        "image_topic",
        "image",
        "topics mode: sensor_msgs/Image topic (with image_transport 'compressed': sensor_msgs/CompressedImage on <image_topic>/compressed). Empty: no video.",
    ),
    Param(
        "image_transport", "raw", "topics mode: 'raw' (sensor_msgs/Image) or 'compressed' (sensor_msgs/CompressedImage, decoded with OpenCV).", IMAGE_TRANSPORTS
    ),
    Param("audio_topic", "audio", "topics mode: emo_msgs/AudioDataStamped topic (any rate/channels, raw PCM). Empty: no audio."),
    Param("input", "camera", "direct mode: 'camera', 'camera:N', 'camera:URL' or a media file path (played at real time)."),
    Param("mic", "", "direct mode with a camera: microphone device ('default', an index or a name substring). Empty: no microphone."),
    Param("mic_backend", "pyaudio", "direct mode: microphone backend.", MIC_BACKENDS),
    # Ranges of the stream settings are StreamConfig's (checked when validate() builds it;
    # its messages are given with the parameter's name, see CONFIG_KEYS): not re-checked here.
    Param("window_s", 2.0, "Window length W in seconds: each state describes [t - W, t]."),
    Param("hop_s", 0.5, "Hop H in seconds: one state every H seconds of input time."),
    Param("frames_per_window", 8, "Frames handed to the engine per window."),
    Param("emit_partial", True, "Emit the first windows before W seconds of input exist (first state after H)."),
    Param(
        "engine",
        "default",
        "emo_stream engine: 'default' (real models), 'baseline' (no models; signal statistics, not an emotion model) or 'emotion-llama'.",
        check=_engine_ok,
    ),
    Param("label_set", "mer2023", "Label set of the probabilities (mer2023, merr, dfew, meld, fer2013).", check=_label_set_ok),
    Param("engine_options", "", 'Engine options as a YAML/JSON mapping string, e.g. "{weights: /path/ckpt}". Empty: none.', check=_options_ok),
    Param(
        "config_file", "", "emo_stream YAML config used as the base for settings without a parameter (buffers, audio); parameters override it.", check=_file_ok
    ),
    Param("max_frame_side", 0, "Downscale frames whose longer side exceeds this many pixels. 0: keep."),
    Param(
        "faces_from",
        "own",
        "Where face boxes and person ids come from: 'own' (the engine's detector and tracker) or 'ros4hri' "
        "(an external ROS4HRI face detector: /humans/faces/tracked and /humans/faces/<id>/roi, stamped like the images; "
        "person ids are its face ids; topics mode, default engine, hri_msgs needed).",
        FACES_FROM,
    ),
    Param("frame_id", "", "header.frame_id of published states. Empty: the input image's frame_id."),
    Param("publish_rationale", False, "Publish the natural-language rationale (personal data: off by default)."),
    Param("publish_transcript", False, "Publish what was said (speech is personal data: off by default)."),
    Param("state_qos_depth", 10, "History depth of the ~/state publisher (reliable, keep-last).", check=_range(1, 1000, lo_open=False)),
    Param("input_qos_depth", 5, "History depth of the input subscriptions (sensor-data QoS: best effort, keep-last).", check=_range(1, 1000, lo_open=False)),
    Param("diagnostics_period_s", 1.0, "Period of diagnostic_msgs/DiagnosticArray on /diagnostics.", check=_range(0.05, 60.0, lo_open=False)),
)

PARAM_NAMES = frozenset(p.name for p in PARAMS)
#: Parameter -> the StreamConfig key it sets: config errors name the parameter.
CONFIG_KEYS = {
    "window_s": "window.length_s",
    "hop_s": "window.hop_s",
    "frames_per_window": "window.frames_per_window",
    "max_frame_side": "source.max_frame_side",
}
_BY_NAME = {p.name: p for p in PARAMS}


def parse_options(text: str) -> dict[str, Any]:
    """``engine_options`` text -> mapping ('' -> {}); raises ``ConfigError`` naming the parameter.

    Read with the project's one YAML reader (:func:`emo_stream.structured_files.parse_yaml_text`):
    a parameter is user input like a config file, so the same limits apply (alias bombs,
    nesting, duplicate keys refused).
    """
    if not text.strip():
        return {}
    data = parse_yaml_text(text, "engine_options")
    if not isinstance(data, Mapping):
        raise ConfigError(f"engine_options must be a mapping, got {text!r}")
    return dict(data)


def stream_config(values: Mapping[str, Any]) -> StreamConfig:
    """Build the validated :class:`StreamConfig` the parameters describe (raises ``EmoStreamError``)."""
    base = StreamConfig.from_yaml(values["config_file"]) if values["config_file"] else StreamConfig()
    w, h = float(values["window_s"]), float(values["hop_s"])
    history = max(base.buffers.history_s, w + h + 1.0)
    return base.replace(
        window={"length_s": w, "hop_s": h, "frames_per_window": int(values["frames_per_window"]), "emit_partial": bool(values["emit_partial"])},
        engine={"name": values["engine"], "label_set": values["label_set"], "options": parse_options(values["engine_options"])},
        buffers={"history_s": history},
        source={"realtime": True, "max_frame_side": int(values["max_frame_side"]) or None},
    )


def validate(values: Mapping[str, Any]) -> list[str]:
    """Every problem with a full set of parameter values (empty list: valid)."""
    errors = []
    for name, value in values.items():
        p = _BY_NAME.get(name)
        if p is None:
            continue
        msg = p.validate(value)
        if msg:
            errors.append(msg if msg.startswith(name) else f"{name} {msg}")
    if errors:
        return errors
    if values["input_mode"] == "topics" and not (values["image_topic"] or values["audio_topic"]):
        errors.append("input_mode 'topics' needs image_topic and/or audio_topic")
    if values["input_mode"] == "direct" and not str(values["input"]).strip():
        errors.append("input_mode 'direct' needs input ('camera', 'camera:N' or a file)")
    if values["faces_from"] == "ros4hri":
        errors.extend(_ros4hri_faces_errors(values))
    try:
        stream_config(values)
    except (EmoStreamError, ValueError) as exc:
        msg = str(exc)
        for name, key in CONFIG_KEYS.items():
            msg = msg.replace(key, f"{name} ({key})")
        errors.append(msg)
    return errors


def _ros4hri_faces_errors(values: Mapping[str, Any]) -> list[str]:
    """Why ``faces_from: ros4hri`` cannot work with these values: the external detector
    must see the images the node reads (topics), its ROIs need the default engine's
    expression stage, and the messages need hri_msgs."""
    from emo_stream_ros.people import hri_available

    errors = []
    if values["input_mode"] != "topics" or not values["image_topic"]:
        errors.append("faces_from 'ros4hri' needs input_mode 'topics' with an image_topic (the face detector must see the same images)")
    if values["engine"] != "default":
        errors.append(f"faces_from 'ros4hri' needs engine 'default' (engine {values['engine']!r} reads no external faces)")
    if not hri_available():
        errors.append("faces_from 'ros4hri' needs the hri_msgs interfaces, which are not importable here")
    return errors


def describe_markdown() -> str:
    """The parameter table as Markdown (README and tests use it)."""
    rows = ["| parameter | default | description |", "| --- | --- | --- |"]
    for p in PARAMS:
        rows.append(f"| `{p.name}` | `{p.default!r}` | {p.description} |")
    return "\n".join(rows)
