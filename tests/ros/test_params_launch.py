"""Parameters are declared, documented and validated; launch files only set declared parameters
and name executables that exist. The node runs in-process here (real rclpy, no peers needed).

The ``launch``/``launch_ros`` packages have no wheel: the launch files are thin, and are
loaded here against small stand-ins of the few launch classes they use, so what they
would pass to the node can be checked without launching anything.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import rclpy
import yaml
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.signals import SignalHandlerOptions
from ros_helpers import BIN, REPO

from emo_stream_ros import params as P
from emo_stream_ros.clip_publisher import build_parser as clip_parser
from emo_stream_ros.node import EmotionNode

pytestmark = pytest.mark.ros  # rclpy: runs in .venv-ros (scripts/ros_test.sh)

LAUNCH_DIR = REPO / "launch"
LAUNCH_FILES = sorted(LAUNCH_DIR.glob("*.launch.py"))


@pytest.fixture
def ctx(domain_id):
    c = rclpy.Context()
    rclpy.init(context=c, domain_id=domain_id, signal_handler_options=SignalHandlerOptions.NO)
    yield c
    c.try_shutdown()


@pytest.fixture
def node(ctx):
    n = EmotionNode(context=ctx)
    yield n
    n.close()
    n.destroy_node()


def _set(node, **values) -> list:
    return node.set_parameters([Parameter(k, value=v) for k, v in values.items()])


# -- parameters ----------------------------------------------------------------------------------------
def test_every_parameter_is_declared_with_a_description(node):
    for p in P.PARAMS:
        assert node.has_parameter(p.name), p.name
        assert node.get_parameter(p.name).value == p.default
        desc = node.describe_parameter(p.name)
        assert len(desc.description) > 20, p.name
    # privacy defaults
    assert node.get_parameter("publish_rationale").value is False
    assert node.get_parameter("publish_transcript").value is False


def test_parameters_are_documented_in_the_readme():
    readme = (REPO / "ros2_ws" / "README.md").read_text()
    for p in P.PARAMS:
        assert f"`{p.name}`" in readme, p.name


@pytest.mark.parametrize(
    "name,value,why",
    [
        ("hop_s", 0.0, "hop_s"),
        ("hop_s", 120.0, "hop_s"),
        ("window_s", -1.0, "window_s"),
        ("frames_per_window", 0, "frames_per_window"),
        ("engine", "no-such-engine", "unknown engine"),
        ("label_set", "klingon", "unknown label set"),
        ("engine_options", "[1, 2]", "mapping"),
        ("engine_options", "{a: [", "not valid YAML"),
        ("config_file", "/no/such/file.yaml", "not found"),
        ("input_mode", "carrier-pigeon", "input_mode"),
        ("image_transport", "theora", "image_transport"),
        ("mic_backend", "jack", "mic_backend"),
        ("max_frame_side", 5, "max_frame_side"),
        ("diagnostics_period_s", 0.0, "diagnostics_period_s"),
        ("state_qos_depth", 0, "state_qos_depth"),
    ],
)
def test_invalid_values_are_refused_with_the_reason(node, name, value, why):
    (res,) = _set(node, **{name: value})
    assert not res.successful and why in res.reason, res.reason
    assert node.get_parameter(name).value == P._BY_NAME[name].default  # unchanged


def test_wrong_types_and_combinations_are_refused(node):
    (res,) = _set(node, hop_s="fast")
    assert not res.successful
    (res,) = _set(node, hop_s=1)  # an integer for a double: rclpy refuses it too (write 1.0)
    assert not res.successful
    res = node.set_parameters_atomically([Parameter("image_topic", value=""), Parameter("audio_topic", value="")])
    assert not res.successful and "needs image_topic" in res.reason
    res = node.set_parameters_atomically([Parameter("input_mode", value="direct"), Parameter("input", value="  ")])
    assert not res.successful and "needs input" in res.reason
    assert all(r.successful for r in _set(node, hop_s=0.25, window_s=10.0, label_set="merr", engine_options="{a: 1}"))


def test_configure_fails_cleanly_on_a_bad_config_file(ctx, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("window:\n  hop: 1.0\n")  # 'hop' is not a key (hop_s is)
    n = EmotionNode(context=ctx, parameter_overrides=[Parameter("config_file", value=str(bad)), Parameter("engine", value="baseline")])
    try:
        assert n.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert n._state_machine.current_state[1] == "unconfigured"
        (res,) = _set(n, config_file=str(bad))
        assert not res.successful and "window.hop" in res.reason
        good = tmp_path / "good.yaml"
        good.write_text("buffers:\n  max_frames: 100\n")
        assert all(r.successful for r in _set(n, config_file=str(good)))
        assert n.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert n.config.buffers.max_frames == 100 and n.engine.model_id.startswith("baseline")
        assert n.trigger_cleanup() == TransitionCallbackReturn.SUCCESS and n.engine is None
    finally:
        n.close()
        n.destroy_node()


# -- launch files -----------------------------------------------------------------------------------------
class _LaunchConfiguration:
    def __init__(self, name: str, default: Any = None) -> None:
        self.name = name


class _Declare:
    def __init__(self, name: str, default_value: Any = None, choices: list | None = None, description: str = "") -> None:
        self.name, self.default_value, self.choices, self.description = name, default_value, choices, description


class _SetEnv:
    def __init__(self, name: str, value: Any) -> None:
        self.name, self.value = name, value


class _Node:
    def __init__(self, **kw: Any) -> None:
        self.kw = kw


class _LaunchDescription:
    def __init__(self, entities: list) -> None:
        self.entities = list(entities)


def _stub_modules() -> dict[str, types.ModuleType]:
    launch = types.ModuleType("launch")
    launch.LaunchDescription = _LaunchDescription
    actions = types.ModuleType("launch.actions")
    actions.DeclareLaunchArgument = _Declare
    actions.SetEnvironmentVariable = _SetEnv
    subs = types.ModuleType("launch.substitutions")
    subs.LaunchConfiguration = _LaunchConfiguration
    launch.actions, launch.substitutions = actions, subs
    launch_ros = types.ModuleType("launch_ros")
    ros_actions = types.ModuleType("launch_ros.actions")
    ros_actions.Node = _Node
    launch_ros.actions = ros_actions
    return {"launch": launch, "launch.actions": actions, "launch.substitutions": subs, "launch_ros": launch_ros, "launch_ros.actions": ros_actions}


def _resolve(value: Any, args: dict[str, str]) -> str:
    if isinstance(value, (list, tuple)):
        return "".join(_resolve(v, args) for v in value)
    if isinstance(value, _LaunchConfiguration):
        return args[value.name]
    assert isinstance(value, str), f"unsupported substitution {value!r}: keep launch files to the stubbed classes"
    return value


def _load(path: Path, monkeypatch) -> _LaunchDescription:
    for name, mod in _stub_modules().items():
        monkeypatch.setitem(sys.modules, name, mod)
    spec = importlib.util.spec_from_file_location(f"launchfile_{path.stem.replace('.', '_')}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.generate_launch_description()


def _variants(ld: _LaunchDescription, media: Path) -> list[dict[str, str]]:
    """Every combination of the choice-arguments, other arguments at their defaults."""
    base: dict[str, Any] = {}
    choices: dict[str, list] = {}
    for e in ld.entities:
        if isinstance(e, _Declare):
            if e.choices:
                choices[e.name] = e.choices
            base[e.name] = e.default_value if e.default_value is not None else str(media / "astronaut_speech.mp4")
    out = [{}]
    for name, opts in choices.items():
        out = [{**o, name: c} for o in out for c in opts]
    resolved = []
    for o in out:
        args = {**{k: v for k, v in base.items() if not isinstance(v, (list, _LaunchConfiguration))}, **o}
        for k, v in base.items():  # defaults that are substitutions of other arguments
            if k not in args:
                args[k] = _resolve(v, args)
        resolved.append(args)
    return resolved


def _console_scripts() -> dict[str, Any]:
    return {ep.name: ep for ep in importlib.metadata.distribution("emo_stream_ros").entry_points if ep.group == "console_scripts"}


def test_launch_files_exist():
    names = {p.name for p in LAUNCH_FILES}
    assert {"emo_stream.launch.py", "emo_stream_clip_demo.launch.py"} <= names


@pytest.mark.parametrize("launch_file", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_sets_only_declared_parameters_and_names_existing_executables(launch_file, node, media, monkeypatch):
    ld = _load(launch_file, monkeypatch)
    nodes = [e for e in ld.entities if isinstance(e, _Node)]
    assert nodes, "no Node in the launch file"
    scripts = _console_scripts()
    checked_params = 0
    for args in _variants(ld, media):
        for e in ld.entities:
            if isinstance(e, _SetEnv) and e.name in ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE"):
                assert Path(_resolve(e.value, args)).is_file()
        for n in nodes:
            kw = n.kw
            assert kw["package"] == "emo_stream_ros"
            exe = kw["executable"]
            assert exe in scripts, f"{exe} is not a console script of emo_stream_ros"
            assert callable(scripts[exe].load()) and (BIN / exe).is_file(), exe
            if exe == "clip_publisher":
                clip_parser().parse_args([_resolve(a, args) for a in kw.get("arguments", [])])
            for entry in kw.get("parameters", []):
                if isinstance(entry, dict):
                    values = entry
                else:
                    pfile = Path(_resolve(entry, args))
                    assert pfile.is_file(), pfile
                    data = yaml.safe_load(pfile.read_text())
                    values = {}
                    for key, section in data.items():
                        assert key in ("/**", kw.get("name")), f"{pfile}: section {key!r} would not reach node {kw.get('name')!r}"
                        values.update(section["ros__parameters"])
                assert exe == "emo_stream_node", f"{exe} takes no parameters"
                undeclared = sorted(k for k in values if not node.has_parameter(k))
                assert not undeclared, f"{launch_file.name} {args}: undeclared parameters {undeclared}"
                # the values are accepted by the node: right types, valid, consistent
                res = node.set_parameters_atomically([Parameter(k, value=v) for k, v in values.items()])
                assert res.successful, f"{launch_file.name} {args}: {res.reason}"
                checked_params += len(values)
    assert checked_params > 0


@pytest.mark.parametrize("spec,why", [("/no/such/clip.mp4", "not found"), ("camera:97", "camera")])
def test_direct_input_that_cannot_open_fails_the_activation(ctx, spec, why):
    n = EmotionNode(
        context=ctx, parameter_overrides=[Parameter("engine", value="baseline"), Parameter("input_mode", value="direct"), Parameter("input", value=spec)]
    )
    try:
        assert n.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert n.trigger_activate() == TransitionCallbackReturn.FAILURE
        assert why in n.activate_error.lower(), n.activate_error
        assert n._state_machine.current_state[1] == "inactive"
        assert n._thread is None and not n._active
        assert n.trigger_shutdown() == TransitionCallbackReturn.SUCCESS
        assert n.finalized and n.engine is None
    finally:
        n.close()
        n.destroy_node()
