"""A missing optional package is one line naming the extra to install, never a traceback (issue 15)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from emo_stream.errors import EmoStreamError, MissingDependencyError, missing_dependency, missing_module_error


def test_missing_dependency_names_the_package_and_the_extra() -> None:
    err = missing_dependency("onnx", "writing the expression ONNX", "robot")
    assert isinstance(err, EmoStreamError) and isinstance(err, ImportError)
    assert str(err) == ("writing the expression ONNX needs the Python package 'onnx', which is not installed; run: pip install 'emo-stream[robot]'")


@pytest.mark.parametrize(
    ("module", "extra"), [("torch", "torch"), ("torch.nn", "torch"), ("peft", "torch"), ("llama_cpp", "engine"), ("cv2", "headless"), ("onnxruntime", "cpu")]
)
def test_optional_modules_map_to_their_extra(module: str, extra: str) -> None:
    err = missing_module_error(ModuleNotFoundError(f"No module named {module!r}", name=module))
    assert isinstance(err, MissingDependencyError)
    assert f"'{module.split('.')[0]}'" in str(err) and f"pip install 'emo-stream[{extra}]'" in str(err)


def test_project_modules_and_other_errors_stay_bugs() -> None:
    assert missing_module_error(ModuleNotFoundError("No module named 'emo_stream.nope'", name="emo_stream.nope")) is None
    assert missing_module_error(ImportError("cannot import name 'x'")) is None
    assert missing_module_error(ValueError("torch")) is None


def test_cli_without_torch_is_one_line(media) -> None:
    """The torch engine in a process where torch cannot be imported: exit 2 and one line, no traceback."""
    code = (
        "import sys\n"
        "sys.modules['torch'] = None\n"
        "from emo_stream.cli import main\n"
        f"sys.exit(main(['run', '--input', {str(media / 'astronaut_3s_noaudio.mp4')!r}, '--engine', 'emotion-llama',"
        " '-o', 'tiny=true', '--max-states', '1', '--quiet']))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "emo-stream: error: this needs the Python package 'torch', which is not installed; run: pip install 'emo-stream[torch]'"
    ]


@pytest.mark.parametrize(
    ("module", "names"),
    [
        pytest.param("llama_cpp", "llama-cpp-python", marks=pytest.mark.slow),  # these three load the rest of the engine first
        pytest.param("faster_whisper", "'faster-whisper'", marks=pytest.mark.slow),
        pytest.param("vaderSentiment", "'vaderSentiment'", marks=pytest.mark.slow),
        ("onnx", "pip install 'emo-stream[robot]'"),
        ("onnxruntime", "pip install 'emo-stream[cpu]'"),
    ],
)
def test_default_engine_without_an_optional_package_is_one_line(media, tmp_path, module: str, names: str) -> None:
    """Every lazy import of the default engine's robot path, one at a time: exit 2 and one line naming the fix."""
    code = (
        "import sys\n"
        f"sys.modules[{module!r}] = None\n"
        "from emo_stream.cli import main\n"
        f"sys.exit(main(['run', '--input', {str(media / 'astronaut_speech.mp4')!r}, '--max-states', '1', '--quiet']))\n"
    )
    env = {**os.environ, "EMO_STREAM_CACHE": str(tmp_path)}  # clean cache: the expression ONNX must be built
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, env=env)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2, out.stderr
    assert len(lines) == 1 and lines[0].startswith("emo-stream: error: ") and names in lines[0], out.stderr
