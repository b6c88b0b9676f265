"""``controller_node``: nominal go-to-goal for one robot (own odom + goal -> cmd_vel_nominal).

Runs in the robot's namespace.  Subscribes ``odom`` (own), ``/<ns>/odom`` of the other fleet
robots (their positions fade in the right-hand bias, as in simulation) and ``goal``
(``geometry_msgs/PoseStamped``, reliable + transient-local); publishes ``cmd_vel_nominal``
(``geometry_msgs/Twist``: linear.x = v, angular.z = omega) on every own odometry message.
Stale (older than ``state_timeout_s``) or garbage neighbours are ignored; a stale, garbage or
missing own state or goal gives a zero nominal command (the safety filter brakes anyway).
"""

from __future__ import annotations

import sys
from functools import partial

import numpy as np
from geometry_msgs.msg import PoseStamped, Twist
from nav_msgs.msg import Odometry
from rclpy.node import Node

from marl_robots.nodes import conversions as conv
from marl_robots.nodes.common import (
    COMMAND_QOS,
    LATCHED_QOS,
    STATE_QOS,
    declare_parameters,
    monotonic,
    run,
)
from marl_robots.nodes.onboard import (
    CONTROLLER_PARAMS,
    ParameterError,
    nominal_command,
    odometry_problem,
    pipeline_setup,
    resolve_node_fleet,
)

#: Positions farther than this from the origin are garbage [m] (as the filter's default).
MAX_POSITION_M = 100.0


class ControllerNode(Node):
    """Nominal controller of one robot; ``failed`` holds (parameter, reason) on bad params."""

    def __init__(self) -> None:
        super().__init__("controller")
        self.failed = None
        try:
            p = declare_parameters(self, CONTROLLER_PARAMS)
            self.fleet, self.index = resolve_node_fleet(p)
            self.setup = pipeline_setup(p, self.fleet)
        except ParameterError as err:
            self.get_logger().fatal(str(err))
            self.failed = (err.name, str(err).split(": ", 1)[-1])
            return
        self.timeout_s = float(p["state_timeout_s"])
        n = len(self.fleet.robots)
        self.poses = np.full((n, 3), np.nan)
        self.arrival = np.full(n, -np.inf)
        self.goal = None
        for j, name in enumerate(self.fleet.names):
            topic = "odom" if j == self.index else f"/{name}/odom"
            self.create_subscription(Odometry, topic, partial(self._on_odom, j), STATE_QOS)
        self.create_subscription(PoseStamped, "goal", self._on_goal, LATCHED_QOS)
        self.pub = self.create_publisher(Twist, "cmd_vel_nominal", COMMAND_QOS)
        self.get_logger().info(
            f"robot {self.fleet.robots[self.index].name} (id {self.fleet.ids[self.index]}): "
            f"go-to-goal with {n - 1} fleet neighbours"
        )

    def _on_goal(self, msg: PoseStamped) -> None:
        goal = conv.goal_from_pose(msg)
        if np.all(np.isfinite(goal)):
            self.goal = goal
        else:
            self.get_logger().warning("ignoring a non-finite goal")

    def _on_odom(self, j: int, msg: Odometry) -> None:
        self.poses[j] = conv.pose_from_odom(msg)
        self.arrival[j] = monotonic()
        if j == self.index:
            self._control()

    def _control(self) -> None:
        """Publish the nominal command for the newest own state."""
        poses = self.poses.copy()
        # Neighbours we have not heard from recently, or whose odometry is garbage, are not
        # sensed (NaN rows drop out of the neighbour list).
        stale = monotonic() - self.arrival > self.timeout_s
        bad = [odometry_problem(pose, MAX_POSITION_M) is not None for pose in poses]
        poses[stale | np.asarray(bad)] = np.nan
        command = np.zeros(2)
        if self.goal is not None and np.all(np.isfinite(poses[self.index])):
            command = nominal_command(poses, self.index, self.goal, self.setup)
            if not np.all(np.isfinite(command)):
                command = np.zeros(2)
        self.pub.publish(conv.twist_msg(command))

    def stop(self) -> None:
        """Final command on shutdown: a zero nominal command."""
        if not self.failed:
            self.pub.publish(conv.twist_msg(np.zeros(2)))


def main(args=None) -> int:
    """Entry point of ``controller_node``: 0 on SIGINT, 1 on invalid parameters."""
    return run(ControllerNode, args, CONTROLLER_PARAMS, __doc__)


if __name__ == "__main__":
    sys.exit(main())
