"""Launch the emo_stream lifecycle node (thin on purpose: all settings live in params/*.yaml).

    ros2 launch launch/emo_stream.launch.py                         # inputs from image/audio topics
    ros2 launch launch/emo_stream.launch.py variant:=direct         # the node opens camera + microphone
    ros2 launch launch/emo_stream.launch.py params_file:=/path/mine.yaml

Arguments:
    variant          topics | direct: picks params/emo_stream_<variant>.yaml
    params_file      a parameter YAML of your own instead
    fastdds_profile  Fast DDS XML profile exported as FASTDDS_DEFAULT_PROFILES_FILE
                     (32 MB shared-memory segment: camera images without loss)

Remap the input topics on the command line or in a launch file of your own,
e.g. image:=/camera/color/image_raw audio:=/mic/audio.
"""

import os

from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription

HERE = os.path.dirname(os.path.abspath(__file__))
PROFILE = os.path.join(HERE, "..", "ros2_ws", "src", "emo_stream_ros", "config", "fastdds_shm.xml")


def generate_launch_description():
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "variant",
                default_value="topics",
                choices=["topics", "direct"],
                description="topics: subscribe to image/audio; direct: open camera + microphone",
            ),
            DeclareLaunchArgument(
                "params_file",
                default_value=[os.path.join(HERE, "params", "emo_stream_"), LaunchConfiguration("variant"), ".yaml"],
                description="parameter YAML for the node",
            ),
            DeclareLaunchArgument("fastdds_profile", default_value=os.path.normpath(PROFILE), description="Fast DDS profile (FASTDDS_DEFAULT_PROFILES_FILE)"),
            SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE", LaunchConfiguration("fastdds_profile")),
            SetEnvironmentVariable("FASTRTPS_DEFAULT_PROFILES_FILE", LaunchConfiguration("fastdds_profile")),  # Jazzy's Fast DDS 2.x name
            Node(
                package="emo_stream_ros",
                executable="emo_stream_node",
                name="emo_stream",
                parameters=[LaunchConfiguration("params_file")],
                output="screen",
                emulate_tty=True,
            ),
        ]
    )
