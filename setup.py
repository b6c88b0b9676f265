"""Build script for marl_robots: one ament_python package that also installs with pip.

colcon (ament_python) reads ``setup.cfg`` and puts the console scripts under
``lib/marl_robots`` so that ``ros2 run marl_robots <node>`` finds them; pip builds a wheel and
puts the same scripts on ``PATH``.  Content folders (models, gains, fleets, launch files) are
installed under ``share/marl_robots`` and found at run time by ``marl_robots.core.paths``.
"""

import os
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "marl_robots"
CONTENT_DIRS = ("sim", "controllers", "policies", "hardware", "launch")


def content_files():
    """Return data_files entries mirroring each content folder under share/<package>."""
    entries = [
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
    ]
    for top in CONTENT_DIRS:
        for folder, _, files in os.walk(top):
            kept = [
                os.path.join(folder, f)
                for f in sorted(files)
                if not f.endswith((".pyc", ".pyo")) and f != "__init__.py"
            ]
            if kept:
                entries.append((os.path.join("share", PACKAGE, folder), kept))
    return entries


NODES = ("sim_node", "controller_node", "safety_filter_node", "swarm_host", "policy_node")

setup(
    name=PACKAGE,
    version="0.1.0",
    description="Multi-robot sim-to-real stack with CBF safety filters and ROS 2 nodes",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    data_files=content_files(),
    python_requires=">=3.10",
    install_requires=[
        "numpy>=1.24",
        "jax>=0.4.30",
        "pyyaml>=6",
        "matplotlib>=3.7",
        "pillow>=9",
        "flax>=0.10",
        "optax>=0.2",
    ],
    extras_require={
        "ros": [
            "ros-rclpy",
            "ros-rmw-fastrtps-cpp",
            "ros-std-msgs",
            "ros-geometry-msgs",
            "ros-nav-msgs",
            "ros-sensor-msgs",
            "ros-visualization-msgs",
            "ros-diagnostic-msgs",
            "ros-lifecycle-msgs",
            "ros-rcl-interfaces",
        ],
        # Quadrotor backends beyond pure JAX (MuJoCo CPU + MJX, PyBullet).
        "quad": ["mujoco>=3.2", "mujoco-mjx>=3.2", "pybullet>=3.2"],
        "test": [
            "mujoco>=3.2",
            "mujoco-mjx>=3.2",
            "pybullet>=3.2",
            "pytest>=7",
            "pytest-xdist>=3.5",
            "hypothesis>=6.100",
            "cvxpy>=1.4",
            "clarabel>=0.6",
            "ruff>=0.5",
            "pettingzoo>=1.24",
        ],
        "pettingzoo": ["pettingzoo>=1.24"],
        # Onboard policy runtime (marl_robots.policies.runtime): either backend runs a bundle.
        "runtime": ["onnxruntime>=1.17"],
        "runtime-torch": ["torch>=2.2"],
        # marl-robots export: ONNX graph and PyTorch state dict.
        "export": ["onnx>=1.15", "onnxruntime>=1.17", "torch>=2.2"],
    },
    zip_safe=True,
    entry_points={
        "console_scripts": [
            f"marl-robots = {PACKAGE}.cli:main",
            *(f"{node} = {PACKAGE}.nodes.{node}:main" for node in NODES),
        ],
    },
)
