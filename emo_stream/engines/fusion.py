"""Late fusion of expert evidence into one label distribution.

Each expert (facial expression net, prosody, words, the LLM reading the clues)
gives a distribution over the engine's label set. They are combined by a
weighted log-linear pool (a product of experts):

    p(label) ∝ Π_i  p̃_i(label) ^ w_i,      p̃_i = (1 - ε_i) p_i + ε_i / n

* ``ε_i`` (smoothing) is the calibration step: it caps how certain an expert can
  be, according to how reliable it is. The FER2013 mini-Xception reaches ~66 %
  test accuracy on FER2013 yet routinely outputs 0.99; mixing with uniform keeps
  one frame from vetoing every other label.
* ``w_i`` (weight) is how much the expert counts. The defaults put the face
  first (strongest single cue in video), words second, prosody third (it mostly
  tells arousal, not the category), and the 135M LLM last: it disambiguates
  between labels the experts leave close, but cannot overrule strong evidence.
  With w_llm = 0.35, even a one-hot LLM answer moves a face at 0.9 by at most a
  factor (1/ε)^w ≈ 4 in odds.
* Absent experts (no face, no speech) simply drop out: masking, not zeros.

All numbers are in :class:`FusionConfig`, documented, and overridable from the
engine's YAML options.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from emo_stream.config import build_dataclass
from emo_stream.errors import ConfigError
from emo_stream.labels import LabelSet, normalize


@dataclass(frozen=True)
class ExpertCalibration:
    """Weight and smoothing of one expert (see module docstring)."""

    weight: float
    smoothing: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.weight <= 5.0:
            raise ConfigError(f"fusion weight must be in [0, 5], got {self.weight}")
        if not 0.0 < self.smoothing < 1.0:
            raise ConfigError(f"fusion smoothing must be in (0, 1), got {self.smoothing}")


def _default_experts() -> dict[str, ExpertCalibration]:
    return {
        "face": ExpertCalibration(weight=1.0, smoothing=0.10),
        "text": ExpertCalibration(weight=0.6, smoothing=0.30),
        "voice": ExpertCalibration(weight=0.4, smoothing=0.40),
        "llm": ExpertCalibration(weight=0.35, smoothing=0.20),
    }


@dataclass(frozen=True)
class FusionConfig:
    experts: Mapping[str, ExpertCalibration] = field(default_factory=_default_experts)

    @classmethod
    def from_options(cls, options: Mapping[str, Mapping[str, float]] | None) -> FusionConfig:
        """Override some experts' ``weight``/``smoothing`` from a mapping (engine options).

        Each override goes through :func:`~emo_stream.config.build_dataclass`, the one
        options builder: unknown keys and wrong types are named with their path.
        """
        experts = dict(_default_experts())
        if options is not None and not isinstance(options, Mapping):
            raise ConfigError(f"engine.options.fusion must be a mapping of expert -> {{weight, smoothing}}, got {options!r}")
        for name, values in (options or {}).items():
            if name not in experts:
                raise ConfigError(f"unknown fusion expert {name!r}; known: {sorted(experts)}")
            if not isinstance(values, Mapping):
                raise ConfigError(f"engine.options.fusion.{name} must be a mapping with weight/smoothing, got {values!r}")
            base = experts[name]
            merged = {"weight": base.weight, "smoothing": base.smoothing, **values}
            experts[name] = build_dataclass(ExpertCalibration, merged, f"engine.options.fusion.{name}")
        return cls(experts)


def fuse(evidence: Mapping[str, np.ndarray], label_set: LabelSet, config: FusionConfig) -> np.ndarray:
    """Weighted log-linear pool of the experts present in ``evidence``.

    Args:
        evidence: expert name -> probabilities over ``label_set`` (absent experts omitted).
    Returns:
        probabilities over ``label_set`` (uniform when no expert is present).
    """
    n = len(label_set)
    logp = np.zeros(n)
    for name, probs in evidence.items():
        cal = config.experts.get(name)
        if cal is None:
            raise ConfigError(f"no calibration for expert {name!r}")
        p = normalize(probs)
        if p.shape != (n,):
            raise ValueError(f"expert {name!r} gave {p.shape[0]} probabilities for {n} labels")
        p = (1.0 - cal.smoothing) * p + cal.smoothing / n
        logp += cal.weight * np.log(p)
    logp -= logp.max()
    return normalize(np.exp(logp))


def distribution_from_coordinate(value: float, coords: np.ndarray, width: float) -> np.ndarray:
    """Soft assignment of a scalar cue (e.g. prosodic arousal) to labels by their
    circumplex coordinate: a Gaussian kernel of ``width`` around ``value``."""
    return normalize(np.exp(-0.5 * ((coords - value) / width) ** 2))
