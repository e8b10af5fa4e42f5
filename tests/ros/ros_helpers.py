"""Fixtures and helpers for the ROS 2 tests (imported by conftest.py in .venv-ros only).

* ``domain_id``: a ROS_DOMAIN_ID of its own per test (never shared with the
  previous test, so late messages of a dying process cannot leak in).
* ``harness``: an in-process rclpy context + node spun on a thread: state and
  diagnostics subscriptions, lifecycle/parameter service calls, waits on
  conditions (never fixed sleeps for discovery: matches are waited for).
* ``procs``: spawns ROS processes (node, clip publisher, bag replay) in their
  own process groups with the test's environment; at teardown they are
  stopped (SIGINT, then SIGKILL of the group) and Fast DDS shared-memory files
  they left behind are removed.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import rclpy
import yaml
from diagnostic_msgs.msg import DiagnosticArray
from emo_msgs.msg import EmotionState
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.srv import SetParameters
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions

from emo_stream_ros.conversions import diagnostic_values

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PROFILE = REPO / "ros2_ws" / "src" / "emo_stream_ros" / "config" / "fastdds_shm.xml"
MEDIA_FILES = ("astronaut_speech.mp4", "silence_noface_3s.mp4", "speech_stereo_44k.wav", "librivox_0870.wav", "astronaut_512.rgb")

TRANSITIONS = {
    "configure": Transition.TRANSITION_CONFIGURE,
    "activate": Transition.TRANSITION_ACTIVATE,
    "deactivate": Transition.TRANSITION_DEACTIVATE,
    "cleanup": Transition.TRANSITION_CLEANUP,
}

_domain_counter = itertools.count((os.getpid() % 40) * 2 + 1)


def _shm_files() -> set[str]:
    d = Path("/dev/shm")
    return {p.name for p in d.iterdir() if p.name.startswith(("fastdds", "fastrtps", "sem.fastdds", "sem.fastrtps"))} if d.is_dir() else set()


def _files_in_use() -> set[str]:
    """Names of /dev/shm files mapped or opened by any live process."""
    used: set[str] = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/maps", encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    if "/dev/shm/" in line:
                        used.add(line.rsplit("/dev/shm/", 1)[1].split()[0])
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("/dev/shm/"):
                    used.add(target[len("/dev/shm/") :].split()[0])
        except OSError:
            continue
    return used


def cleanup_shm(before: set[str]) -> list[str]:
    """Remove Fast DDS /dev/shm files created since ``before`` that no live process uses.

    A SIGKILLed participant cannot unlink its segments; other workers' live
    segments (in use) and files that existed before are never touched.
    """
    new = _shm_files() - before
    if not new:
        return []
    used = _files_in_use()
    removed = []
    for name in sorted(new - used):
        try:
            os.unlink(f"/dev/shm/{name}")
            removed.append(name)
        except OSError:
            pass
    return removed


@pytest.fixture
def media() -> Path:  # overrides tests/conftest.py's: checks the files these tests use
    root = Path(os.environ.get("EMO_STREAM_MEDIA") or REPO / ".cache" / "media")
    missing = [n for n in MEDIA_FILES if not (root / n).is_file()]
    if missing:
        pytest.fail(f"test media missing in {root} ({', '.join(missing)}): run scripts/fetch_test_media.sh", pytrace=False)
    return root


@pytest.fixture
def domain_id(monkeypatch) -> int:
    did = next(_domain_counter) % 100 + 1
    monkeypatch.setenv("ROS_DOMAIN_ID", str(did))
    return did


def ros_env(domain_id: int, log_dir: Path, profile: bool = True) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        ROS_DOMAIN_ID=str(domain_id),
        ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
        ROS_LOG_DIR=str(log_dir),
        PYTHONUNBUFFERED="1",
        RCUTILS_COLORIZED_OUTPUT="0",
    )
    if profile:
        # Fast DDS 3 (Kilted) reads FASTDDS_...; Fast DDS 2.14 (Jazzy) only the old FASTRTPS_... name.
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = env["FASTRTPS_DEFAULT_PROFILES_FILE"] = str(PROFILE)
    else:
        env.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)
        env.pop("FASTRTPS_DEFAULT_PROFILES_FILE", None)
    return env


class Proc:
    """A child process in its own process group, output to a log file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name, self.argv, self.log = name, argv, log
        self._fh = open(log, "wb")
        self.p = subprocess.Popen(argv, env=env, stdout=self._fh, stderr=subprocess.STDOUT, start_new_session=True)

    def alive(self) -> bool:
        return self.p.poll() is None

    def output(self) -> str:
        if not self._fh.closed:
            self._fh.flush()
        return self.log.read_text(errors="replace")

    def wait(self, timeout: float) -> int:
        try:
            return self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} did not exit within {timeout} s; output:\n{self.output()[-3000:]}") from None

    def json_summary(self) -> dict:
        """The last JSON line the process printed (clip_publisher / emo_stream_bag)."""
        for line in reversed(self.output().splitlines()):
            if line.startswith("{"):
                return json.loads(line)
        raise AssertionError(f"{self.name} printed no JSON summary:\n{self.output()[-3000:]}")

    def stop(self, sig: int = signal.SIGINT, timeout: float = 8.0) -> int | None:
        """Signal, wait, then SIGKILL the whole group. Returns the exit code (None if killed)."""
        killed = False
        if self.alive():
            try:
                os.killpg(self.p.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                killed = True
        try:  # children of the group too (none expected)
            os.killpg(self.p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if killed:
            self.p.wait(timeout=5)
        self._fh.close()
        return None if killed else self.p.returncode


class Procs:
    """Spawns the ROS processes of one test; everything is stopped at teardown."""

    def __init__(self, domain_id: int, tmp: Path) -> None:
        self.domain_id, self.tmp = domain_id, tmp
        self.log_dir = tmp / "ros_logs"
        self.log_dir.mkdir(exist_ok=True)
        self.all: list[Proc] = []
        self.shm_before = _shm_files()

    def env(self, profile: bool = True) -> dict[str, str]:
        return ros_env(self.domain_id, self.log_dir, profile)

    def spawn(self, name: str, argv: list[str], profile: bool = True) -> Proc:
        proc = Proc(name, argv, self.env(profile), self.tmp / f"{name}.log")
        self.all.append(proc)
        return proc

    def node(self, params: dict[str, Any], name: str = "node", profile: bool = True, extra: list[str] | None = None) -> Proc:
        """``emo_stream_node`` with these parameters (a params file, so types are exact)."""
        pfile = self.tmp / f"{name}_params.yaml"
        pfile.write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}))
        return self.spawn(name, [str(BIN / "emo_stream_node"), "--ros-args", "--params-file", str(pfile), *(extra or [])], profile)

    def clip_publisher(self, clip: Path, *args: str, name: str = "clip_publisher", profile: bool = True) -> Proc:
        return self.spawn(name, [str(BIN / "clip_publisher"), str(clip), *args], profile)

    def close(self) -> list[str]:
        for proc in self.all:
            proc.stop()
        return cleanup_shm(self.shm_before)


@pytest.fixture
def procs(domain_id, tmp_path):
    ps = Procs(domain_id, tmp_path)
    yield ps
    ps.close()


class Harness:
    """The test's own ROS participant (a third process beside node and publisher)."""

    def __init__(self, domain_id: int) -> None:
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx, domain_id=domain_id, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node("test_harness", context=self.ctx)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self.states: list[tuple[float, Any]] = []
        self.diagnostics: list[tuple[float, Any]] = []
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        try:
            while self.ctx.ok():
                self.executor.spin_once(timeout_sec=0.05)
        except Exception:
            pass

    # -- subscriptions ---------------------------------------------------------------------
    def subscribe_states(self, topic: str = "/emo_stream/state") -> Any:
        qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        return self.node.create_subscription(EmotionState, topic, lambda m: self.states.append((time.monotonic(), m)), qos)

    def subscribe_diagnostics(self) -> Any:
        return self.node.create_subscription(DiagnosticArray, "/diagnostics", lambda m: self.diagnostics.append((time.monotonic(), m)), 50)

    def latest_diag(self, since: float = 0.0) -> dict[str, str] | None:
        for t, arr in reversed(self.diagnostics):
            if t < since:
                break
            for st in arr.status:
                if "emo_stream" in st.name:
                    return {
                        "_level": int.from_bytes(st.level, "little") if isinstance(st.level, bytes) else int(st.level),
                        "_message": st.message,
                        **diagnostic_values(st),
                    }
        return None

    # -- waiting ------------------------------------------------------------------------------
    @staticmethod
    def wait_for(pred: Callable[[], Any], timeout: float, what: str, procs: list[Proc] | None = None) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            v = pred()
            if v:
                return v
            for p in procs or []:
                if not p.alive():
                    raise AssertionError(f"{p.name} exited ({p.p.returncode}) while waiting for {what}:\n{p.output()[-3000:]}")
            if time.monotonic() > deadline:
                logs = "".join(f"\n--- {p.name}:\n{p.output()[-2000:]}" for p in procs or [])
                raise AssertionError(f"timed out after {timeout} s waiting for {what}{logs}")
            time.sleep(0.02)

    def wait_matched(self, sub: Any, timeout: float = 20.0, procs: list[Proc] | None = None) -> None:
        self.wait_for(lambda: self.node.count_publishers(sub.topic_name) > 0 and _matched(sub), timeout, f"a publisher on {sub.topic_name}", procs)

    # -- services -------------------------------------------------------------------------------
    def call(self, srv_type: type, name: str, request: Any, timeout: float = 10.0) -> Any:
        cli = self.node.create_client(srv_type, name)
        try:
            if not cli.wait_for_service(timeout_sec=timeout):
                raise AssertionError(f"service {name} not available within {timeout} s")
            fut = cli.call_async(request)
            deadline = time.monotonic() + timeout
            while not fut.done():
                if time.monotonic() > deadline:
                    raise AssertionError(f"service {name} did not answer within {timeout} s")
                time.sleep(0.01)
            return fut.result()
        finally:
            self.node.destroy_client(cli)

    def transition(self, node: str, transition: str, timeout: float = 30.0) -> bool:
        req = ChangeState.Request()
        req.transition.id = TRANSITIONS[transition]
        return bool(self.call(ChangeState, f"{node}/change_state", req, timeout).success)

    def lifecycle_state(self, node: str) -> str:
        return self.call(GetState, f"{node}/get_state", GetState.Request()).current_state.label

    def set_params(self, node: str, values: dict[str, Any]) -> list[Any]:
        req = SetParameters.Request()
        req.parameters = [Parameter(k, value=v).to_parameter_msg() for k, v in values.items()]
        return list(self.call(SetParameters, f"{node}/set_parameters", req).results)

    def close(self) -> None:
        self.ctx.try_shutdown()
        self._thread.join(timeout=5)
        try:
            self.node.destroy_node()
        except Exception:
            pass


def _matched(sub: Any) -> bool:
    """True when the subscription has matched a publisher (rclpy >= Jazzy: get_publisher_count)."""
    get = getattr(sub, "get_publisher_count", None)
    return True if get is None else get() > 0


@pytest.fixture
def harness(domain_id):
    h = Harness(domain_id)
    yield h
    h.close()


def read_rgb_astronaut(media: Path) -> Any:
    """The real astronaut photo (512x512) as BGR uint8."""
    import numpy as np

    rgb = np.fromfile(media / "astronaut_512.rgb", dtype=np.uint8).reshape(512, 512, 3)
    return np.ascontiguousarray(rgb[:, :, ::-1])


__all__ = [
    "BIN",
    "PROFILE",
    "REPO",
    "Harness",
    "ParameterMsg",
    "Proc",
    "Procs",
    "cleanup_shm",
    "domain_id",
    "harness",
    "media",
    "procs",
    "read_rgb_astronaut",
    "ros_env",
]
