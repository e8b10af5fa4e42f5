"""Validated configuration for a stream, loadable from YAML.

Every section is a frozen dataclass that checks itself at construction, so a bad
value fails when the config is read (with the YAML key that is wrong), not ten
minutes into a stream. Unknown keys are errors too: a typo such as ``hop: 0.5``
under ``window`` instead of ``hop_s`` must not silently fall back to a default.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import enum
import math
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emo_stream.errors import ConfigError
from emo_stream.structured_files import read_yaml


def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


#: Smallest hop (and window) allowed, seconds. 20 states a second is already
#: faster than any engine here produces them and than a robot's behaviour layer
#: consumes them; a smaller hop only cuts windows that are dropped unprocessed,
#: and a typo such as ``hop_s: 0.000001`` would cut millions of windows from a
#: short file (issue 13). 50 ms is also about one video frame period (25 fps).
MIN_HOP_S = 0.05
#: Names of the window frame selectors (the functions live in stream.frame_selection,
#: a layer above this contract module).
FRAME_SELECTIONS = ("uniform", "latest")

#: Supported ``audio.sample_rate`` range, Hz. Sources convert captured audio to
#: this rate and engines whose models need 16 kHz resample from it, so any rate
#: in the range works; outside it is not a real audio rate (or is a typo).
MIN_SAMPLE_RATE = 8000
MAX_SAMPLE_RATE = 192000

#: Upper bound of ``buffers.history_s``: the timeline never needs more than
#: ``length_s + hop_s`` (each at most 60 s); beyond this only memory grows
#: (1.5 x history x rate audio samples are held).
MAX_HISTORY_S = 300.0


@dataclass(frozen=True)
class WindowConfig:
    """How windows are cut from the timeline.

    ``length_s`` is W, ``hop_s`` is H: every H seconds of capture time the window
    [t - W, t] is cut. ``frames_per_window`` is K, the frames handed to the
    engine (selected by ``frame_selection``). With ``emit_partial`` the first
    windows of a stream are emitted before W seconds exist (they cover
    [stream start, t]), so a robot gets its first state after H, not W.
    """

    length_s: float = 2.0
    hop_s: float = 0.5
    frames_per_window: int = 8
    frame_selection: str = "uniform"
    emit_partial: bool = True

    def __post_init__(self) -> None:
        check_range("window.length_s", self.length_s, MIN_HOP_S, 60)
        check_range("window.hop_s", self.hop_s, MIN_HOP_S, 60)
        check_range("window.frames_per_window", self.frames_per_window, 1, 256)
        _require(
            self.frame_selection in FRAME_SELECTIONS,
            f"window.frame_selection must be one of {sorted(FRAME_SELECTIONS)}, got {self.frame_selection!r}",
        )


@dataclass(frozen=True)
class AudioConfig:
    """Audio as every engine sees it: mono float32 at ``sample_rate``.

    Sources convert whatever they capture (44.1 kHz stereo, int16 ...) to this.
    Any integer rate in [8000, 192000] Hz is accepted: engines whose models
    need 16 kHz (speech, vocal-emotion experts) resample from it, so 16000
    (the default) merely saves that step.
    """

    sample_rate: int = 16000
    chunk_s: float = 0.032

    def __post_init__(self) -> None:
        check_range("audio.sample_rate", self.sample_rate, MIN_SAMPLE_RATE, MAX_SAMPLE_RATE)
        check_range("audio.chunk_s", self.chunk_s, 0.005, 1.0)


@dataclass(frozen=True)
class BufferConfig:
    """Bounds on every queue and buffer, so memory never grows with stream length.

    ``history_s``: how much capture time the timeline keeps (at least one window
    plus one hop). ``max_frames``: hard cap on frames held. ``max_pending_windows``:
    windows waiting for the engine; when full the oldest is dropped (latest wins)
    and counted. ``capture_queue``: samples a live capture thread may hold before
    it drops the oldest. ``stream_timeout_s``: a live stream silent this long is
    treated as absent so an unplugged microphone does not stall the states.
    """

    history_s: float = 6.0
    max_frames: int = 300
    max_pending_windows: int = 2
    capture_queue: int = 256
    stream_timeout_s: float = 1.0

    def __post_init__(self) -> None:
        check_range("buffers.history_s", self.history_s, 0, MAX_HISTORY_S, low_open=True)
        check_range("buffers.max_frames", self.max_frames, 1, 10000)
        check_range("buffers.max_pending_windows", self.max_pending_windows, 1, 64)
        check_range("buffers.capture_queue", self.capture_queue, 1, 65536)
        check_range("buffers.stream_timeout_s", self.stream_timeout_s, 0, 3600, low_open=True)


@dataclass(frozen=True)
class SourceConfig:
    """Input behaviour.

    ``realtime``: pace a file at ``speed`` x its media rate, as a camera would
    deliver it (windows may then be dropped under load, like live input).
    ``max_frame_side``: downscale frames whose longer side exceeds this (None keeps them).
    ``reconnect_s``: wait between attempts to reopen a lost camera or microphone.
    """

    realtime: bool = False
    speed: float = 1.0
    max_frame_side: int | None = None
    reconnect_s: float = 1.0

    def __post_init__(self) -> None:
        check_range("source.speed", self.speed, 0, 100, low_open=True)
        if self.max_frame_side is not None:
            check_range("source.max_frame_side", self.max_frame_side, 16, 16384)
        check_range("source.reconnect_s", self.reconnect_s, 0, 3600, low_open=True)


@dataclass(frozen=True)
class EngineConfig:
    """Which engine turns windows into states, its label set, and engine-specific options."""

    name: str = "default"
    label_set: str = "mer2023"
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from emo_stream.labels import get_label_set

        _require(bool(self.name), "engine.name must not be empty")
        get_label_set(self.label_set)
        _require(isinstance(self.options, Mapping), "engine.options must be a mapping")


@dataclass(frozen=True)
class StreamConfig:
    """Everything a pipeline needs, one section per concern."""

    window: WindowConfig = field(default_factory=WindowConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    buffers: BufferConfig = field(default_factory=BufferConfig)
    source: SourceConfig = field(default_factory=SourceConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)

    def __post_init__(self) -> None:
        need = self.window.length_s + self.window.hop_s
        _require(
            self.buffers.history_s >= need,
            f"buffers.history_s ({self.buffers.history_s}) must be >= window.length_s + window.hop_s ({need})",
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> StreamConfig:
        return build_dataclass(cls, data or {}, "")

    @classmethod
    def from_yaml(cls, path: str | Path) -> StreamConfig:
        p = Path(path)
        data = read_yaml(p, what="config file")
        if data is not None and not isinstance(data, Mapping):
            raise ConfigError(f"config file {p} must hold a mapping at the top level")
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **sections: Mapping[str, Any]) -> StreamConfig:
        """A copy with some fields of some sections changed: ``cfg.replace(window={"hop_s": 1.0})``."""
        merged = self.to_dict()
        for name, values in sections.items():
            if name not in merged:
                raise ConfigError(f"unknown config section {name!r}")
            merged[name] = {**merged[name], **values}
        return StreamConfig.from_dict(merged)


def build_dataclass(tp: Any, data: Any, where: str = "") -> Any:
    """Build the (nested) dataclass ``tp`` from a parsed YAML/JSON mapping, or raise ConfigError.

    The one validated builder of the project: stream config, training config
    and engine options (``build_dataclass(MyOptions, options, "engine.options")``)
    all go through it, so every user-supplied value is checked the same way
    against the field's annotation before ``tp.__post_init__`` checks ranges:

    * ``bool`` must be a real YAML boolean: the string ``'false'`` is refused
      (it is truthy in Python, so accepting it would silently mean *true*);
    * ``int`` refuses floats and bools (``8.0`` frames is a typo, not 8);
    * ``float`` accepts ints and YAML 1.1's exponent strings (``1e-3``, read by
      PyYAML as a string) and must be finite: ``.inf``/``.nan`` are refused;
    * ``str``, ``Path``, ``Literal[...]``, ``X | None`` and other unions,
      ``tuple[X, ...]``/``tuple[X, Y]``, ``list[X]``, ``Mapping[K, V]`` and
      nested dataclasses recurse with the key path extended (``stages[2].lr``);
    * unknown keys and missing required keys are named with their full path.

    ``where`` is the key path of ``data`` in the file (``""`` for the top
    level; a trailing dot is optional). Errors are one line and name the path.
    """
    prefix = where if (not where or where.endswith(".")) else where + "."
    if isinstance(tp, type) and isinstance(data, tp):
        return data
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {_show(data)}")
    fields = [f for f in dataclasses.fields(tp) if f.init]
    hints = typing.get_type_hints(tp)
    names = {f.name for f in fields}
    unknown = sorted(str(k) for k in data if k not in names)
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(prefix + k for k in unknown)}; valid: {sorted(names)}")
    missing = [f.name for f in fields if f.name not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"missing key(s) {', '.join(prefix + k for k in missing)}")
    kwargs = {key: check_value(value, hints[key], f"{prefix}{key}") for key, value in data.items()}
    try:
        return tp(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: {exc}") from None


#: What a number-like string may look like to be read as a float (YAML 1.1 reads
#: ``1e-3`` without a dot as a string); "inf", "nan" and words are not numbers here.
_NUMBER_STRING = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _show(value: Any) -> str:
    """``value`` for an error message, saying when it is a string (``'false'`` vs ``false``)."""
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} (a string)" if isinstance(value, str) else text


def check_value(value: Any, hint: Any, where: str) -> Any:
    """``value`` checked against (and converted to) the annotation ``hint``; ``where`` names it in errors.

    Public for values that are not dataclass fields (one ``--option`` value);
    see :func:`build_dataclass` for the rules.
    """
    if hint is Any or hint is object:
        return value
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Annotated:
        return check_value(value, args[0], where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return check_value(value, options[0], where)
        for option in options:
            try:
                return check_value(value, option, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where} must be {' or '.join(_describe(o) for o in options)}, got {_show(value)}")
    if origin is typing.Literal:
        for allowed in args:
            if type(value) is type(allowed) and value == allowed:
                return value
        raise ConfigError(f"{where} must be one of {list(args)}, got {_show(value)}")
    if dataclasses.is_dataclass(hint):
        return build_dataclass(hint, value, where)
    if hint is bool:
        if type(value) is not bool:
            raise ConfigError(f"{where} must be true or false, got {_show(value)}")
        return value
    if hint is int:
        if type(value) is not int:
            raise ConfigError(f"{where} must be an integer, got {_show(value)}")
        return value
    if hint is float:
        if isinstance(value, str) and _NUMBER_STRING.fullmatch(value.strip()):
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {_show(value)}")
        if not math.isfinite(value):
            raise ConfigError(f"{where} must be a finite number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {_show(value)}")
        return value
    if hint is Path:
        if not isinstance(value, (str, Path)) or not str(value):
            raise ConfigError(f"{where} must be a path, got {_show(value)}")
        return Path(value)
    if origin is tuple or hint is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {_show(value)}")
        if not args or (len(args) == 2 and args[1] is Ellipsis):
            inner = args[0] if args else Any
            return tuple(check_value(v, inner, f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where} must be a list of {len(args)} items, got {len(value)}")
        return tuple(check_value(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin in (list, collections.abc.Sequence) or hint in (list, collections.abc.Sequence):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {_show(value)}")
        inner = args[0] if args else Any
        return [check_value(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin in (dict, collections.abc.Mapping) or hint in (dict, Mapping, collections.abc.Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a mapping, got {_show(value)}")
        key_t, val_t = args if args else (Any, Any)
        out = {}
        for k, v in value.items():
            check_value(k, key_t, f"{where} key {k!r}")
            out[k] = check_value(v, val_t, f"{where}.{k}")
        return out
    if isinstance(hint, type):
        if issubclass(hint, enum.Enum):
            try:
                return hint(value)
            except ValueError:
                raise ConfigError(f"{where} must be one of {[m.value for m in hint]}, got {_show(value)}") from None
        if not isinstance(value, hint):
            raise ConfigError(f"{where} must be {_describe(hint)}, got {_show(value)}")
        return value
    raise TypeError(f"build_dataclass cannot check the annotation {hint!r} of {where}")  # a bug in the dataclass


def _describe(hint: Any) -> str:
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", Path: "a path"}
    if hint in names:
        return names[hint]
    if dataclasses.is_dataclass(hint):
        return "a mapping"
    origin = typing.get_origin(hint)
    if origin in (tuple, list) or hint in (tuple, list):
        return "a list"
    if origin in (dict, collections.abc.Mapping):
        return "a mapping"
    return getattr(hint, "__name__", str(hint))


def check_range(where: str, value: float, low: float | None = None, high: float | None = None, *, low_open: bool = False, high_open: bool = False) -> None:
    """Refuse a non-finite ``value`` or one outside the interval, naming ``where`` and the interval.

    For ``__post_init__`` range checks, so every section reports bounds alike:
    ``check_range("window.hop_s", v, MIN_HOP_S, 60)`` -> "window.hop_s must be in [0.05, 60], got 0.001".
    """
    lo = "(" if low_open else "["
    hi = ")" if high_open else "]"
    interval = f"{lo}{'-inf' if low is None else low}, {'inf' if high is None else high}{hi}"
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        raise ConfigError(f"{where} must be in {interval}, got {value!r}")
