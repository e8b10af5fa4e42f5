"""Percentiles of latency samples: the one helper every report uses (the pipeline's
summary, ``report``, ``bench``, the GPU check, the soak and latency scripts).

One place so that every number called "p95" is computed the same way (numpy's
linear interpolation) and an empty sample is ``None``, never a numpy warning or NaN
that a JSON writer would reject.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np


def percentile(values: Iterable[float], q: float, ndigits: int | None = None) -> float | None:
    """The ``q``-th percentile (0-100) of ``values``; ``None`` when there are none."""
    a = np.asarray(list(values), dtype=np.float64)
    if a.size == 0:
        return None
    v = float(np.percentile(a, q))
    return round(v, ndigits) if ndigits is not None else v


def percentiles(values: Iterable[float], qs: Sequence[float] = (50, 95, 99), *, suffix: str = "", ndigits: int | None = None) -> dict[str, float | None]:
    """``{"p50<suffix>": ..., "p95<suffix>": ...}`` for ``qs``; ``None`` values when empty."""
    a = list(values)
    return {f"p{q:g}{suffix}": percentile(a, q, ndigits) for q in qs}
