"""Validated configuration for a stream, loadable from YAML.

Every section is a frozen dataclass that checks itself at construction, so a bad
value fails when the config is read (with the YAML key that is wrong), not ten
minutes into a stream. Unknown keys are errors too: a typo such as ``hop: 0.5``
under ``window`` instead of ``hop_s`` must not silently fall back to a default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from emo_stream.errors import ConfigError


def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


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
        _require(0 < self.length_s <= 60, f"window.length_s must be in (0, 60], got {self.length_s}")
        _require(0 < self.hop_s <= 60, f"window.hop_s must be in (0, 60], got {self.hop_s}")
        _require(1 <= self.frames_per_window <= 256, f"window.frames_per_window must be in [1, 256], got {self.frames_per_window}")
        from emo_stream.stream.frame_selection import FRAME_SELECTORS

        _require(
            self.frame_selection in FRAME_SELECTORS,
            f"window.frame_selection must be one of {sorted(FRAME_SELECTORS)}, got {self.frame_selection!r}",
        )


@dataclass(frozen=True)
class AudioConfig:
    """Audio as every engine sees it: mono float32 at ``sample_rate``.

    Sources convert whatever they capture (44.1 kHz stereo, int16 ...) to this.
    """

    sample_rate: int = 16000
    chunk_s: float = 0.032

    def __post_init__(self) -> None:
        _require(self.sample_rate in (8000, 16000, 22050, 24000, 32000, 44100, 48000), f"audio.sample_rate {self.sample_rate} is not a supported rate")
        _require(0.005 <= self.chunk_s <= 1.0, f"audio.chunk_s must be in [0.005, 1], got {self.chunk_s}")


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
        _require(self.history_s > 0, f"buffers.history_s must be > 0, got {self.history_s}")
        _require(self.max_frames >= 1, f"buffers.max_frames must be >= 1, got {self.max_frames}")
        _require(self.max_pending_windows >= 1, f"buffers.max_pending_windows must be >= 1, got {self.max_pending_windows}")
        _require(self.capture_queue >= 1, f"buffers.capture_queue must be >= 1, got {self.capture_queue}")
        _require(self.stream_timeout_s > 0, f"buffers.stream_timeout_s must be > 0, got {self.stream_timeout_s}")


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
        _require(0 < self.speed <= 100, f"source.speed must be in (0, 100], got {self.speed}")
        _require(self.max_frame_side is None or self.max_frame_side >= 16, f"source.max_frame_side must be >= 16, got {self.max_frame_side}")
        _require(self.reconnect_s > 0, f"source.reconnect_s must be > 0, got {self.reconnect_s}")


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
    def from_dict(cls, data: Mapping[str, Any] | None) -> "StreamConfig":
        return build_dataclass(cls, data or {}, "")

    @classmethod
    def from_yaml(cls, path: str | Path) -> "StreamConfig":
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {p} is not valid YAML: {str(exc).splitlines()[0]}") from None
        if data is not None and not isinstance(data, Mapping):
            raise ConfigError(f"config file {p} must hold a mapping at the top level")
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **sections: Mapping[str, Any]) -> "StreamConfig":
        """A copy with some fields of some sections changed: ``cfg.replace(window={"hop_s": 1.0})``."""
        merged = self.to_dict()
        for name, values in sections.items():
            if name not in merged:
                raise ConfigError(f"unknown config section {name!r}")
            merged[name] = {**merged[name], **values}
        return StreamConfig.from_dict(merged)


def build_dataclass(tp: Any, data: Any, where: str = "") -> Any:
    """Build (nested) dataclass ``tp`` from a YAML mapping with clear errors.

    Unknown keys are rejected with their dotted path; scalars are type-checked
    (ints are accepted for floats, and YAML 1.1's "1e-3" strings are read as
    numbers); tuples, optionals and nested dataclasses recurse. Shared by every
    YAML config of the project (stream, training).
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where.rstrip('.') or 'config'} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(tp)
    names = {f.name for f in dataclasses.fields(tp)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(where + k for k in unknown)}; valid: {sorted(names)}")
    kwargs = {key: _coerce(value, hints[key], f"{where}{key}") for key, value in data.items()}
    try:
        return tp(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where.rstrip('.') or 'config'}: {exc}") from None


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        hint = args[0]
        origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return build_dataclass(hint, value, where + ".")
    if origin is tuple:
        (inner, *_rest) = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        return tuple(_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value))
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{where} must be a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    if hint in (int, str, bool):
        if type(value) is not hint:
            raise ConfigError(f"{where} must be {hint.__name__}, got {value!r}")
        return value
    if origin in (Mapping, dict) or hint is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        return dict(value)
    return value
