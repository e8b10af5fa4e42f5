"""Rules every command follows for the files it writes.

Two failures lose a user's data and must never happen silently:

* **an output that is one of the inputs.** ``run --input X --jsonl X`` used to
  truncate X before reading it. :func:`refuse_alias` compares paths by
  identity (the same device and inode, so symlinks and hard links count; the
  resolved path when the output does not exist yet) and refuses in one line
  before anything is opened for writing.
* **a write that fails half way** (full disk, read-only directory, closed
  pipe). :func:`writing` turns the ``OSError`` into one line
  ``cannot write X: <reason>`` (:class:`~emo_stream.errors.OutputError`, exit 2
  from the CLI); :func:`atomic_output` additionally writes single-file outputs
  under a temporary name and renames on success, so the previous file (if any)
  stays intact and no half file appears under the final name. Line-oriented
  outputs (JSONL states) are flushed per line instead, so a failure keeps every
  complete line written before it.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Union

from emo_stream.durable import atomic_path
from emo_stream.errors import OutputError

PathLike = Union[str, "os.PathLike[str]"]


def reason(exc: BaseException) -> str:
    """The human part of an ``OSError`` ("No space left on device"), else its text."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def write_error(what: PathLike, exc: BaseException) -> OutputError:
    """The one-line error for a failed write of ``what`` (a path or a name like ``stdout``)."""
    if isinstance(exc, FileExistsError) and exc.filename:
        # mkdir -p through a regular file: "File exists" would hide what is wrong.
        return OutputError(f"cannot write {what}: {exc.filename} exists and is not a directory")
    return OutputError(f"cannot write {what}: {reason(exc)}")


def same_file(a: PathLike, b: PathLike) -> bool:
    """True when ``a`` and ``b`` name the same file: same inode (symlinks and hard
    links included) when both exist, else the same fully resolved path."""
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        pass
    try:
        return os.path.realpath(a) == os.path.realpath(b)
    except (OSError, ValueError):
        return False


def refuse_alias(outputs: Mapping[str, PathLike | None], inputs: Mapping[str, PathLike | None]) -> None:
    """Refuse (:class:`OutputError`) when an output is an input or another output.

    ``outputs`` and ``inputs`` map the option that named each path (``"--jsonl"``,
    ``"--input"``) to the path; ``None`` entries are skipped, so callers can pass
    optional flags as they are. Inputs that are not files (``camera:0``) simply
    never match. Call it before opening any output for writing.
    """
    ins = [(flag, p) for flag, p in inputs.items() if p is not None and str(p) != ""]
    seen: list[tuple[str, PathLike]] = []
    for oflag, out in outputs.items():
        if out is None or str(out) == "":
            continue
        for kind, others in (("input", ins), ("output", seen)):
            for flag, other in others:
                if same_file(out, other):
                    raise OutputError(
                        f"{oflag} {out} is the same file as {flag} {other}; refusing to overwrite "
                        f"{'an input' if kind == 'input' else 'another output'} (choose another path)"
                    )
        seen.append((oflag, out))


@contextlib.contextmanager
def writing(what: PathLike, also: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """Turn an ``OSError`` raised inside the block into ``cannot write WHAT: <reason>``.

    ``also`` adds writer-specific error types that wrap an I/O failure without
    being an ``OSError`` (safetensors' ``SafetensorError``); prefer serialising
    to bytes and writing them with plain file I/O, which keeps the real reason.
    """
    try:
        yield
    except OutputError:
        raise
    except (OSError, *also) as exc:  # type: ignore[misc]  # mypy cannot type a starred tuple of exception types
        raise write_error(what, exc) from None


@contextlib.contextmanager
def atomic_output(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s content to; renamed over ``path`` on success.

    A failure inside the block or while finishing the file (full disk, no
    permission) raises ``cannot write PATH: <reason>`` and leaves whatever was at
    ``path`` before untouched.
    """
    with writing(path), atomic_path(path) as tmp:
        yield tmp


def write_text(path: PathLike, text: str) -> Path:
    """Write a whole text file atomically (see :func:`atomic_output`)."""
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def make_dir(path: PathLike, what: str = "") -> Path:
    """``mkdir -p`` for an output directory, failing as ``cannot write DIR: <reason>``."""
    p = Path(path)
    with writing(what or p):
        p.mkdir(parents=True, exist_ok=True)
        if not os.access(p, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(p))
    return p


def check_writable(path: PathLike) -> Path:
    """Fail early (before models load) when ``path`` cannot be created or replaced.

    Creates the parent directory; does not touch ``path`` itself, so an existing
    file survives a run that fails before its first write. Permission bits are
    only advisory for root: the real open still reports its own error.
    """
    p = Path(path)
    if p.is_dir():
        raise OutputError(f"cannot write {p}: it is a directory")
    make_dir(p.parent if str(p.parent) else ".", str(p))
    if p.exists() and not os.access(p, os.W_OK):
        raise write_error(p, PermissionError(errno.EACCES, os.strerror(errno.EACCES)))
    return p
