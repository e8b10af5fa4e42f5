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
