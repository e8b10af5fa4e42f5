"""Demo without a camera: a media file published as image/audio topics, and the node on them.

    ros2 launch launch/emo_stream_clip_demo.launch.py clip:=/path/clip.mp4

The states appear on /emo_stream/state (record them with
``emo_stream_bag record -o states_bag /emo_stream/state``).
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
            DeclareLaunchArgument("clip", description="media file with video and/or audio"),
            DeclareLaunchArgument("params_file", default_value=os.path.join(HERE, "params", "emo_stream_topics.yaml")),
            DeclareLaunchArgument("fastdds_profile", default_value=os.path.normpath(PROFILE)),
            SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE", LaunchConfiguration("fastdds_profile")),
            SetEnvironmentVariable("FASTRTPS_DEFAULT_PROFILES_FILE", LaunchConfiguration("fastdds_profile")),  # Jazzy's Fast DDS 2.x name
            Node(
                package="emo_stream_ros",
                executable="emo_stream_node",
                name="emo_stream",
                parameters=[LaunchConfiguration("params_file")],
                output="screen",
            ),
            Node(
                package="emo_stream_ros",
                executable="clip_publisher",
                name="clip_publisher",
                arguments=[LaunchConfiguration("clip"), "--wait-subscribers", "1"],
                output="screen",
            ),
        ]
    )
