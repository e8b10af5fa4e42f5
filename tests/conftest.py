"""Shared fixtures: real test media (fetched by scripts/fetch_test_media.sh)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def media_dir() -> Path:
    return Path(os.environ.get("EMO_STREAM_MEDIA", REPO / ".cache" / "media"))


@pytest.fixture(scope="session")
def media() -> Path:
    """Directory of real media; fails (never skips) when it was not fetched."""
    d = media_dir()
    if not (d / "megamind.avi").is_file():
        pytest.fail(f"test media missing in {d}: run scripts/fetch_test_media.sh (make test does)")
    return d
