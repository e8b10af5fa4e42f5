"""Durability helper for atomic writes (exports, feature caches, checkpoints).

``os.replace`` makes a rename atomic, but only an ``fsync`` of the file and of
its directory makes it survive a power cut: without it a "complete" checkpoint
can come back empty after a crash.
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_path(path: str | Path) -> None:
    """fsync a file or a directory; silently a no-op where the OS does not allow it."""
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
