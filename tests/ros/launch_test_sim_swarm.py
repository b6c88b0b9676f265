"""``launch_testing`` test of ``launch/sim_swarm.launch.py`` (run with ``launch_test``).

    colcon build --symlink-install && source install/setup.bash
    ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST launch_test tests/ros/launch_test_sim_swarm.py

Starts the swarm with 2 robots through the real launch file, waits until every robot's safety
filter commands and every robot's odometry arrives, then lets launch_testing shut the launch
down (SIGINT to every process) and checks that every process exited 0.  Where ROS 2 launch is
importable, ``test_launch.py`` runs this file with ``launch_test``; its name is not
``test_*.py`` so that plain pytest does not collect it where ``launch`` is missing.
"""

from __future__ import annotations

import time
import unittest
from pathlib import Path

import launch_testing
import launch_testing.actions
import launch_testing.asserts
import pytest
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource

from launch import LaunchDescription

LAUNCH_FILE = Path(__file__).resolve().parents[2] / "launch" / "sim_swarm.launch.py"
ROBOTS = 2
#: Start-up of the swarm on a loaded 2-core machine [s].
UP_TIMEOUT_S = 90.0


@pytest.mark.launch_test
def generate_test_description():
    """The launch file with 2 robots, ready to test at once."""
    swarm = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(LAUNCH_FILE)),
        launch_arguments={"robots": str(ROBOTS), "rviz": "false"}.items(),
    )
    return LaunchDescription([swarm, launch_testing.actions.ReadyToTest()])


class TestSwarmComesUp(unittest.TestCase):
    """While the launch runs: every robot is simulated and commanded."""

    def test_every_robot_gets_odometry_and_a_command(self):
        import rclpy
        from geometry_msgs.msg import Twist
        from nav_msgs.msg import Odometry
        from rclpy.executors import SingleThreadedExecutor

        from marl_robots.nodes.common import COMMAND_QOS, STATE_QOS

        context = rclpy.Context()
        rclpy.init(context=context)
        node = rclpy.create_node("launch_test_probe", context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        seen = set()
        try:
            for i in range(ROBOTS):
                node.create_subscription(Twist, f"/robot_{i}/cmd_vel",
                                         lambda m, i=i: seen.add(("cmd", i)), COMMAND_QOS)
                node.create_subscription(Odometry, f"/robot_{i}/odom",
                                         lambda m, i=i: seen.add(("odom", i)), STATE_QOS)
            expected = {(kind, i) for kind in ("cmd", "odom") for i in range(ROBOTS)}
            end = time.monotonic() + UP_TIMEOUT_S
            while time.monotonic() < end and not seen >= expected:
                executor.spin_once(timeout_sec=0.1)
            self.assertGreaterEqual(seen, expected, f"saw only {sorted(seen)}")
        finally:
            executor.shutdown(timeout_sec=0.0)
            node.destroy_node()
            rclpy.try_shutdown(context=context)


@launch_testing.post_shutdown_test()
class TestSwarmShutsDownCleanly(unittest.TestCase):
    """After launch_testing's SIGINT: every node process exited 0."""

    def test_every_process_exits_zero(self, proc_info):
        from marl_robots.nodes.expansion import launch_specs

        launch_testing.asserts.assertExitCodes(proc_info)
        # sim_node + swarm_host by default (one_process), 1 + 2 x ROBOTS with one_process:=false.
        expected = len(launch_specs({"robots": str(ROBOTS)}))
        self.assertEqual(len(proc_info.process_names()), expected)
