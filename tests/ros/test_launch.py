"""launch_testing of ``launch/sim_swarm.launch.py`` where ``launch`` (ROS 2) is importable.

Without a ROS 2 distribution ``import launch`` finds either nothing, the unrelated 2017
``launch`` package from PyPI, or this repository's own ``launch/`` folder as an empty
namespace package; the test is then SKIPPED with the reason.  The per-robot expansion the
launch file delegates to is tested everywhere (test_expansion.py, test_stack.py).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAUNCH_FILE = ROOT / "launch" / "sim_swarm.launch.py"


def _ros_launch_reason() -> str | None:
    """None if ROS 2 launch + launch_ros + rclpy are importable, else why not."""
    try:
        import launch
    except ImportError as err:
        return f"ROS 2 'launch' is not installed ({err})"
    if not hasattr(launch, "LaunchDescription"):
        found = getattr(launch, "__file__", None) or "a namespace package"
        return f"'import launch' is not ROS 2 launch (found {found}); needs a ROS 2 distribution"
    for module in ("launch_ros", "rclpy"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed"
    return None


REASON = _ros_launch_reason()
pytestmark = [
    pytest.mark.ros,
    pytest.mark.skipif(REASON is not None, reason=REASON or ""),
]


def _load_launch_module():
    spec = importlib.util.spec_from_file_location("sim_swarm_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_launch_description_declares_documented_arguments():
    from launch.actions import DeclareLaunchArgument

    ld = _load_launch_module().generate_launch_description()
    args = {a.name: a for a in ld.entities if isinstance(a, DeclareLaunchArgument)}
    assert {"robots", "scenario", "fleet_file", "rviz", "backend"} <= set(args)
    assert all(a.description for a in args.values())


def _run_launch(arguments: dict, until, timeout: float = 60.0):
    """Run the launch file in-process with ``arguments`` until ``until()`` or timeout."""
    import asyncio

    from launch.actions import IncludeLaunchDescription
    from launch.launch_description_sources import PythonLaunchDescriptionSource

    from launch import LaunchDescription, LaunchService

    ls = LaunchService()
    ls.include_launch_description(LaunchDescription([IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(LAUNCH_FILE)), launch_arguments=arguments.items())]))
    loop = asyncio.new_event_loop()
    task = loop.create_task(ls.run_async())
    end = time.monotonic() + timeout
    while time.monotonic() < end and not task.done() and not until():
        loop.run_until_complete(asyncio.sleep(0.1))
    ls.shutdown()
    loop.run_until_complete(task)
    loop.close()
    return task.result()


def test_sim_swarm_launch_starts_robots_that_publish_commands(domain_id):
    """2 robots through ros2-launch machinery: every robot's filter publishes cmd_vel."""
    from conftest import Probe
    from geometry_msgs.msg import Twist

    from marl_robots.nodes.common import COMMAND_QOS

    os.environ["ROS_DOMAIN_ID"] = str(domain_id)
    probe = Probe(domain_id)
    seen = set()
    for i in range(2):
        probe.node.create_subscription(Twist, f"/robot_{i}/cmd_vel",
                                       lambda m, i=i: seen.add(i), COMMAND_QOS)

    def until():
        probe.executor.spin_once(timeout_sec=0.01)
        return seen == {0, 1}

    try:
        _run_launch({"robots": "2", "rviz": "false"}, until, timeout=90.0)
    finally:
        probe.close()
    assert seen == {0, 1}


def test_hardware_backend_stops_the_launch_with_a_message():
    rc = _run_launch({"robots": "2", "backend": "hardware"}, lambda: False, timeout=30.0)
    assert rc == 0 or rc is None or isinstance(rc, int)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))
