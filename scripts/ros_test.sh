#!/usr/bin/env bash
# Run the ROS 2 tests (tests/ros) in one distro's venv, with real rclpy across processes.
#
#   scripts/ros_test.sh [pytest args]            Kilted (.venv-ros), or $ROS_DISTRO
#   ROS_DISTRO=jazzy scripts/ros_test.sh [args]  Jazzy (.venv-ros-jazzy)
#   (scripts/ros_setup.sh [distro] first; make test runs both distros)
#
# Environment for every process of the run: discovery on this host only
# (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST; each test also picks its own
# ROS_DOMAIN_ID), ROS logs in a temp dir, and the shipped Fast DDS profile
# (32 MB shared-memory segment, for camera-size images).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"
ros_distro=${ROS_DISTRO:-kilted}
case "$ros_distro" in
  kilted) venv=.venv-ros ;;
  jazzy) venv=.venv-ros-jazzy ;;
  *) echo "ros_test: error: unknown ROS distribution '$ros_distro' (kilted or jazzy)" >&2; exit 2 ;;
esac
py=$venv/bin/python
[ -x "$py" ] || { echo "ros_test: $py missing: run scripts/ros_setup.sh $ros_distro first" >&2; exit 1; }
echo "ros_test: ROS 2 $ros_distro ($venv)"

logs=$(mktemp -d "${TMPDIR:-/tmp}/emo_stream_ros_logs.XXXXXX")
trap 'rm -rf "$logs"' EXIT
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_LOG_DIR="$logs"
export FASTDDS_DEFAULT_PROFILES_FILE="$here/ros2_ws/src/emo_stream_ros/config/fastdds_shm.xml"
# Fast DDS 2.x (Jazzy) reads the profile from the variable's old name only (3.x, Kilted: either).
export FASTRTPS_DEFAULT_PROFILES_FILE="$FASTDDS_DEFAULT_PROFILES_FILE"
export ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-0}
export RCUTILS_COLORIZED_OUTPUT=0
# Run tests/ros unless a path under tests/ros is given (e.g. scripts/ros_test.sh tests/ros/test_stream.py -x).
paths=(tests/ros)
for a in "$@"; do case "$a" in tests/*) paths=(); break ;; esac; done
# Own addopts: pyproject's may name plugins of the main venv (pytest-benchmark ...)
# that .venv-ros does not have; markers and timeout still come from pyproject.
exec "$py" -m pytest "${paths[@]}" -q -p no:cacheprovider \
  -o addopts="-ra --strict-markers --import-mode=importlib" -o timeout=180 \
  -W "ignore:module 'sre_parse' is deprecated:DeprecationWarning" \
  -W "ignore:module 'sre_constants' is deprecated:DeprecationWarning" "$@"
