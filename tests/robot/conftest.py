"""The robot install's tests: they run only in the torch-free .venv-robot (scripts/robot_test.sh).

In the main .venv torch is installed, so "torch is never imported" would prove
nothing there: every test here is skipped with that reason, and the main suite
does not run them twice.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from tests.robot.robot_helpers import TRAINING_STACK

#: Set by scripts/robot_test.sh: an export (ONNX + GGUF of the tiny model) made by the full venv.
ENV_EXPORT = "EMO_STREAM_ROBOT_EXPORT"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    installed = [m for m in TRAINING_STACK if importlib.util.find_spec(m) is not None]
    if not installed:
        return
    skip = pytest.mark.skip(reason=f"robot-install test: runs in the torch-free .venv-robot (scripts/robot_test.sh); {', '.join(installed)} installed here")
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def export_dir() -> Path:
    d = os.environ.get(ENV_EXPORT)
    if not d or not (Path(d) / "manifest.json").is_file():
        pytest.fail(f"{ENV_EXPORT} must name an export directory made by the full venv (scripts/robot_test.sh does)")
    return Path(d)
