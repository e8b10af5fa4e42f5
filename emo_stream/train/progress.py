"""Progress bars (tqdm when installed and enabled, else a no-op), without importing torch."""

from __future__ import annotations

from typing import Any


class NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, **_: Any) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int, initial: int = 0, desc: str = "", enabled: bool = True, unit: str = "it") -> Any:
    """A tqdm bar on stderr, or a :class:`NoBar` when disabled or tqdm is missing."""
    if not enabled:
        return NoBar()
    try:
        from tqdm import tqdm
    except ImportError:
        return NoBar()
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, leave=False)
