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
    return MissingDependencyError(f"{purpose} needs the Python package '{module}', which is not installed; run: pip install 'emo-stream[{extra}]'")


#: Top-level import name of each optional package -> the extra that installs it.
OPTIONAL_MODULES: dict[str, str] = {
    **dict.fromkeys(("torch", "transformers", "peft", "safetensors", "onnxscript", "sentencepiece"), "torch"),
    **dict.fromkeys(("llama_cpp", "faster_whisper", "ctranslate2", "h5py", "vaderSentiment", "gguf", "tokenizers"), "engine"),
    "onnx": "robot",
    "onnxruntime": "cpu",
    "cv2": "headless",
    "pyaudio": "audio",
    "sounddevice": "audio",
    "tensorrt": "tensorrt",
    "matplotlib": "viz",
    "tqdm": "train",
    "skimage": "train",
}


def missing_module_error(exc: BaseException) -> MissingDependencyError | None:
    """The one-line error for a ModuleNotFoundError of an optional package, else None (a real bug).

    The CLI's safety net: a lazy import that no caller wrapped still ends as
    ``emo-stream: error: ... pip install 'emo-stream[X]'`` instead of a traceback.
    """
    name = getattr(exc, "name", None)
    if not isinstance(exc, ModuleNotFoundError) or not name:
        return None
    extra = OPTIONAL_MODULES.get(name.split(".")[0])
    if extra is None:
        return None
    return MissingDependencyError(f"this needs the Python package '{name.split('.')[0]}', which is not installed; run: pip install 'emo-stream[{extra}]'")
