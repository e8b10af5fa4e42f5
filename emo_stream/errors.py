"""Exceptions that mean "the user asked for something that cannot work".

The CLI prints these as one line (no traceback) and exits non-zero; anything else
is a bug and keeps its traceback. Keep messages actionable: say what is wrong and
what to do about it.
"""

from __future__ import annotations


class EmoStreamError(Exception):
    """Base class for user-facing errors (bad paths, bad config, missing models)."""


class ConfigError(EmoStreamError, ValueError):
    """A configuration value or file is invalid."""


class SourceError(EmoStreamError):
    """An input (file, camera, microphone) cannot be opened or read."""


class ModelFileError(EmoStreamError):
    """A model file is missing, truncated or of the wrong format."""


class OutputError(EmoStreamError):
    """An output (states file, report, checkpoint, bench JSON) cannot be written,
    or would overwrite one of the inputs."""


class MissingDependencyError(EmoStreamError, ImportError):
    """An optional package (an extra) is not installed; the message names the extra to install.

    Also an ImportError, so code that already falls back on ImportError keeps doing so.
    """


def missing_dependency(module: str, purpose: str, extra: str) -> MissingDependencyError:
    """The one wording of "optional package missing": what needed it and the pip line that fixes it.

    Lazy imports on the robot path raise this (``raise missing_dependency(...) from exc``)
    so the CLI prints one line instead of a ModuleNotFoundError traceback.
    """
    return MissingDependencyError(
        f"{purpose} needs the Python package '{module}', which is not installed; run: pip install 'emo-stream[{extra}]'"
    )
