"""Durable, atomic, checksummed file writes (exports, feature caches, checkpoints, reports, bench JSON).

``os.replace`` makes a rename atomic, but only an ``fsync`` of the file and of
its directory makes it survive a power cut: without it a "complete" checkpoint
can come back empty after a crash. :func:`atomic_path` is the one way a single
output file is written: a failed or interrupted write (full disk, Ctrl-C)
leaves the previous file, if any, untouched and no half file under the name.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

#: Marks the hidden temporary name of a file being written (``.NAME.partial-PID``).
PARTIAL_MARK = ".partial-"


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


def partial_path(final: str | Path) -> Path:
    """The temporary name :func:`atomic_path` writes ``final`` under (hidden, same directory)."""
    p = Path(final)
    return p.with_name(f".{p.name}{PARTIAL_MARK}{os.getpid()}")


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path; on success it is fsynced and renamed to ``final``.

    On any exception (or KeyboardInterrupt) the temporary file is removed and
    ``final`` is untouched. The temporary file lives in ``final``'s directory so
    the rename never crosses file systems. An existing non-regular ``final``
    (device, fifo) is yielded as it is and written in place.
    """
    final = Path(final)
    if final.is_dir():
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(final))
    if final.exists() and not final.is_file():
        # A device or fifo (/dev/stdout, /dev/full, a pipe): write through it. Renaming a
        # temporary file over it would replace the device node itself (as root).
        yield final
        return
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(final)
    tmp.unlink(missing_ok=True)
    try:
        yield tmp
        if not tmp.is_file():
            raise FileNotFoundError(f"nothing was written to {tmp}")
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, final)
        fsync_path(final.parent)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through :func:`atomic_path`."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()
