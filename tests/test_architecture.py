"""Architecture checks (issue 15): layers import one way, no cycles, the ROS
package uses only the library's public parts, and the few names that sit in a
lower layer than the code they describe stay in step with it."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: What programs outside the library (the ROS package, scripts/) may import: the
#: modules whose names and behaviour are kept stable. Anything else is internal and
#: may move without notice (as stream.pipeline -> pipeline did).
PUBLIC_MODULES = {
    "emo_stream.cli_args",
    "emo_stream.config",
    "emo_stream.engines",
    "emo_stream.errors",
    "emo_stream.labels",
    "emo_stream.pipeline",
    "emo_stream.signals",
    "emo_stream.stats",
    "emo_stream.state",
    "emo_stream.structured_files",  # the one YAML/JSON reader (ROS engine_options)
    "emo_stream.perception.external_faces",  # the seam for an outside face detector (ROS4HRI input)
    "emo_stream.perception.face",
    "emo_stream.stream.downscale",
    "emo_stream.stream.samples",
    "emo_stream.stream.sinks",
    "emo_stream.stream.sources.audio_convert",
    "emo_stream.stream.sources.factory",
    "emo_stream.stream.sources.media_file",
    "emo_stream.stream.sources.push",
}


def _lint_imports() -> str:
    exe = Path(sys.executable).with_name("lint-imports")
    cmd = str(exe) if exe.exists() else shutil.which("lint-imports")
    assert cmd, "lint-imports not found: install the dev extra (pip install -e '.[dev]')"
    return cmd


def test_import_contracts_hold():
    """The [tool.importlinter] contracts in pyproject.toml: layers and acyclic siblings.
    Lazy imports inside functions count: the graph sees them too."""
    r = subprocess.run([_lint_imports(), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "2 kept, 0 broken" in r.stdout, r.stdout[-2000:]


def _emo_stream_imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, module, imported names) of every ``emo_stream`` import in a file."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "emo_stream" or node.module.startswith("emo_stream."):
                out.append((node.lineno, node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out.extend((node.lineno, a.name, []) for a in node.names if a.name.startswith("emo_stream."))
    return out


def test_ros_and_scripts_use_only_public_modules():
    files = sorted((ROOT / "ros2_ws").rglob("*.py")) + sorted((ROOT / "scripts").glob("*.py"))
    assert files, "no ROS package / scripts found"
    bad = []
    for f in files:
        for line, module, names in _emo_stream_imports(f):
            if module not in PUBLIC_MODULES:
                bad.append(f"{f.relative_to(ROOT)}:{line}: {module} is not a public module")
            bad.extend(f"{f.relative_to(ROOT)}:{line}: {module}.{n} is private" for n in names if n.startswith("_"))
    assert not bad, "\n".join(bad)


def test_config_frame_selection_names_match_the_selectors():
    """config (a contract module) validates names; stream.frame_selection holds the functions."""
    from emo_stream.config import FRAME_SELECTIONS, WindowConfig
    from emo_stream.errors import ConfigError
    from emo_stream.stream.frame_selection import FRAME_SELECTORS

    assert set(FRAME_SELECTIONS) == set(FRAME_SELECTORS)
    for name in FRAME_SELECTIONS:
        assert WindowConfig(frame_selection=name).frame_selection == name
    try:
        WindowConfig(frame_selection="nope")
    except ConfigError as exc:
        assert "uniform" in str(exc)
    else:
        raise AssertionError("an unknown frame_selection was accepted")


def test_listing_engines_imports_no_engine_module():
    """Engines are imported by name when made: listing them (argparse choices, ROS
    params) loads none, so a robot install never imports torch just to print --help."""
    code = (
        "import sys; from emo_stream.engines import engine_names; names = engine_names(); "
        "loaded = sorted(m for m in sys.modules if m.startswith('emo_stream.engines.') and m != 'emo_stream.engines.base'); "
        "print(','.join(names)); print(','.join(loaded))"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    names, loaded = r.stdout.splitlines()
    assert {"baseline", "default", "emotion-llama", "emotion-llama-export"} <= set(names.split(","))
    assert loaded == ""


def test_unknown_engine_names_the_known_ones():
    from emo_stream.config import StreamConfig
    from emo_stream.engines import engine_names, make_engine
    from emo_stream.errors import ConfigError

    cfg = StreamConfig()
    try:
        make_engine(cfg.replace(engine={"name": "nope"}))
    except ConfigError as exc:
        assert all(n in str(exc) for n in engine_names())
    else:
        raise AssertionError("an unknown engine was built")
