"""ROS 2 integration tests (real rclpy, several processes).

They run in the separate venv ``.venv-ros`` (``scripts/ros_test.sh``; the ROS
wheels must not live in ``.venv``, see ros2_ws/README.md). In a venv without
rclpy (the main ``.venv``) this directory is not collected at all. In
``.venv-ros`` nothing is skipped: a missing message package, tool or media
file is an error.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("rclpy") is None:
    collect_ignore_glob = ["*"]
else:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from ros_helpers import *  # noqa: F403  (fixtures: harness, domain_id, ros_env, procs ...)
