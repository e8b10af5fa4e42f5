"""The engine interface: one window in, one engine output out.

An engine owns its perception stages and models; the pipeline owns timing,
sequence numbers and sinks. Keeping ``process`` synchronous and single-window
makes every engine testable with recorded windows and a fake clock, and lets
the pipeline decide the threading and drop policy once for all engines.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from emo_stream.config import StreamConfig
from emo_stream.errors import ConfigError
from emo_stream.labels import LabelSet
from emo_stream.stream.samples import Sample
from emo_stream.stream.scheduler import Window


@dataclass
class EngineOutput:
    """What an engine knows about one window; the pipeline turns it into an ``EmotionState``.

    ``rationale_stamp`` is the window end the rationale was written for (it may
    be older than this window when rationales are generated off the hot path);
    None means no rationale accompanies this output.
    """

    probabilities: np.ndarray
    valence: float | None = None
    arousal: float | None = None
    modalities: set[str] = field(default_factory=set)
    rationale: str = ""
    rationale_stamp: float | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    signals: dict[str, float] = field(default_factory=dict)
    transcript: str = ""
    #: The tracked person this output is about ("" when the engine tracks no one).
    person_id: str = ""
    #: One output per OTHER tracked person of the window (each with its person_id);
    #: the pipeline sends them to sinks' ``write_person``. Empty for single-person engines.
    people: list[EngineOutput] = field(default_factory=list)


@dataclass
class EngineFeatures:
    """What an engine's learned encoders made of one window: the input of its head.

    ``features`` maps a modality to the engine's own encoder output (its type is
    the engine's: the trainer that reads it knows the engine it built). The
    flags, modalities and latencies are the ones :meth:`Engine.process` would
    report for the same window up to the head.
    """

    features: dict[str, Any] = field(default_factory=dict)
    modalities: set[str] = field(default_factory=set)
    flags: list[str] = field(default_factory=list)
    latency_ms: dict[str, float] = field(default_factory=dict)


class Engine(ABC):
    """Turns windows into :class:`EngineOutput`.

    Attributes:
        model_id: names what produced the states (engine, weights, label set).
        label_set: the labels its probabilities are over.
    """

    model_id: str
    label_set: LabelSet

    @abstractmethod
    def process(self, window: Window) -> EngineOutput:
        """Analyse one window. Must not raise on bad *input* (flag it instead)."""

    def features(self, window: Window) -> EngineFeatures:
        """The features of this window that the engine's head reads, without running the head.

        The seam a trainer uses to cache encoder outputs (``emo-stream features``)
        through exactly the preprocessing and encoders the stream runs, and to
        skip the (expensive, not yet trained) head. Engines with learned
        encoders override it and build :meth:`process` on it. Default, right for
        engines without learned features (rules, fused off-the-shelf
        classifiers): no features, the window's own modalities and flags.
        """
        return EngineFeatures(modalities=set(window.modalities), flags=list(window.flags))

    def prepare(self, *, realtime: bool) -> None:
        """The pipeline is about to stream (called after :meth:`reset`).

        ``realtime`` (live or paced input) means the engine must never make a
        window wait for slow work; otherwise (lossless file mode) it should
        wait and stay deterministic. After ``prepare`` the pipeline passes every
        sample to :meth:`observe`. Engines that are not told (driven directly,
        or wrapped) decide from the first window instead.
        """

    def observe(self, sample: Sample) -> None:
        """One sample, right after it entered the timeline (every sample, in capture order per stream).

        Lets an engine analyse samples incrementally as they arrive instead of
        when a window is cut. Called from the thread that pumps the sample's
        source: in real time it must return at once (queue, never compute); in
        lossless mode it may block briefly for back-pressure. Default: ignore
        (the engine reads the samples from :meth:`process`'s window).
        """

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds used so far per stage by the engine's own threads
        (see :mod:`emo_stream.threads`); empty when not measured."""
        return {}

    def reset(self) -> None:
        """Forget per-stream state (caches keyed by capture time, speaker
        baselines) so the same loaded models can serve a new stream. The
        pipeline calls it at the start of every run."""

    def close(self) -> None:
        """Release models and worker threads."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


EngineFactory = Callable[[StreamConfig], Engine]
_ENGINES: dict[str, EngineFactory] = {}

#: The built-in engines by name -> the module that registers it. Imported only
#: when that engine is asked for: listing names (argparse choices, ROS params)
#: imports no engine module (so no torch on a robot install), and this module
#: need not import the package that imports it back (no engines <-> base cycle).
BUILTIN_ENGINES: dict[str, str] = {
    "baseline": "emo_stream.engines.baseline",
    "default": "emo_stream.engines.default",
    "emotion-llama": "emo_stream.engines.emotion_llama",
    "emotion-llama-export": "emo_stream.engines.emotion_llama_export",
}


def register_engine(name: str) -> Callable[[EngineFactory], EngineFactory]:
    """Decorator: make an engine constructible by name from the CLI and configs."""

    def deco(factory: EngineFactory) -> EngineFactory:
        _ENGINES[name] = factory
        return factory

    return deco


def make_engine(config: StreamConfig) -> Engine:
    """Build the engine named by ``config.engine.name``."""
    name = config.engine.name
    if name not in _ENGINES and name in BUILTIN_ENGINES:
        importlib.import_module(BUILTIN_ENGINES[name])  # registers it
    if name not in _ENGINES:
        raise ConfigError(f"unknown engine {name!r}; available: {', '.join(engine_names())}")
    return _ENGINES[name](config)


def engine_names() -> list[str]:
    """Every engine a config may name: the built-ins and any registered since."""
    return sorted(set(_ENGINES) | set(BUILTIN_ENGINES))
