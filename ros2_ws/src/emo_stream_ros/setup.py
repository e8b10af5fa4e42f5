"""ament_python package; also installs with plain pip (scripts/ros_setup.sh: pip install -e)."""

from glob import glob

from setuptools import find_packages, setup

package_name = "emo_stream_ros"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/config", glob("config/*.xml")),
    ],
    # The library it wraps (the repo root; scripts/ros_setup.sh installs it first, then this with --no-deps).
    install_requires=["setuptools", "emo-stream"],
    zip_safe=True,
    maintainer="emo_stream maintainers",
    maintainer_email="maintainers@example.com",
    description="ROS 2 lifecycle node wrapping emo_stream",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "emo_stream_node = emo_stream_ros.node:main",
            "clip_publisher = emo_stream_ros.clip_publisher:main",
            "emo_stream_bag = emo_stream_ros.bag:main",
        ],
    },
)
