"""``controller_node``: nominal go-to-goal for one robot (own odom + goal -> cmd_vel_nominal).

Runs in the robot's namespace.  Subscribes the fleet state (``fleet_state:=odometry``:
``odom`` (own) and ``/<ns>/odom`` of the other fleet robots; ``fleet_state:=pose_array``: every
pose in one ``/fleet/poses`` PoseArray, see ``fleet_state``; the neighbours' positions fade in
the right-hand bias, as in simulation) and ``goal`` (``geometry_msgs/PoseStamped``, reliable +
transient-local); publishes ``cmd_vel_nominal`` (``geometry_msgs/Twist``: linear.x = v,
angular.z = omega) on every own state update.
Stale (older than ``state_timeout_s``) or garbage neighbours are ignored; a stale, garbage or
missing own state or goal gives a zero nominal command (the safety filter brakes anyway).
"""

from __future__ import annotations

import sys

import numpy as np
from geometry_msgs.msg import PoseStamped, Twist
from rclpy.node import Node

from marl_robots.nodes import conversions as conv
from marl_robots.nodes.common import (
    COMMAND_QOS,
    LATCHED_QOS,
    declare_parameters,
    monotonic,
    run,
)
from marl_robots.nodes.fleet_state import (
    FLEET_STATE_PARAMS,
    FleetStateHub,
    FleetStateInput,
    fleet_state_input,
)
from marl_robots.nodes.onboard import (
    CONTROLLER_PARAMS,
    ParameterError,
    nominal_command,
    pipeline_setup,
    resolve_node_fleet,
)

#: Positions farther than this from the origin are garbage [m] (as the filter's default).
MAX_POSITION_M = 100.0
#: Parameters of this node: the controller's table and the fleet state input.
PARAMS = CONTROLLER_PARAMS + FLEET_STATE_PARAMS


class ControllerNode(Node):
    """Nominal controller of one robot; ``failed`` holds (parameter, reason) on bad params.

    Args:
        fleet_hub: a ``FleetStateHub`` shared by the nodes of this process (``swarm_host``);
            used with ``fleet_state:=pose_array``.
        **node_kwargs: ``rclpy.node.Node`` keyword arguments (e.g. ``cli_args`` with the
            node's ``--ros-args`` when several nodes share a process).

    """

    def __init__(self, fleet_hub: FleetStateHub | None = None, **node_kwargs) -> None:
        super().__init__("controller", **node_kwargs)
        self.failed = None
        self.sink = None
        try:
            p = declare_parameters(self, PARAMS)
            self.fleet, self.index = resolve_node_fleet(p)
            self.setup = pipeline_setup(p, self.fleet)
            mode = fleet_state_input(p)
        except ParameterError as err:
            self.get_logger().fatal(str(err))
            self.failed = err.failure
            return
        self.timeout_s = float(p["state_timeout_s"])
        n = len(self.fleet.robots)
        self.goal = None
        self.pub = self.create_publisher(Twist, "cmd_vel_nominal", COMMAND_QOS)
        self.create_subscription(PoseStamped, "goal", self._on_goal, LATCHED_QOS)
        self.input = FleetStateInput(self, self.fleet.names, self.index, mode, self._control,
                                     fleet_hub)
        self.state = self.input.state
        self.get_logger().info(
            f"robot {self.fleet.robots[self.index].name} (id {self.fleet.ids[self.index]}): "
            f"go-to-goal with {n - 1} fleet neighbours, state from {self.input.description}"
        )

    def _on_goal(self, msg: PoseStamped) -> None:
        goal = conv.goal_from_pose(msg)
        if np.all(np.isfinite(goal)):
            self.goal = goal
        else:
            self.get_logger().warning("ignoring a non-finite goal")

    def link(self, safety_filter) -> None:
        """Hand every nominal command to ``safety_filter`` (a node of this process) first.

        ``swarm_host`` links each hosted robot's controller to its filter: on the shared fleet
        state the controller runs before the filter (registration order), so the filter filters
        the command of the same state, as the simulation does, instead of the previous period's
        from the topic.  The command is still published on ``cmd_vel_nominal``.

        Args:
            safety_filter: an object with ``take_nominal(command)`` (``SafetyFilterNode``).
        """
        self.sink = safety_filter

    def _control(self) -> None:
        """Publish the nominal command for the newest own state."""
        state = self.state
        poses = state.poses.copy()
        # Neighbours we have not heard from recently, or whose odometry is garbage, are not
        # sensed (NaN rows drop out of the neighbour list).
        stale = monotonic() - state.arrival > self.timeout_s
        poses[stale | state.bad_rows(MAX_POSITION_M)] = np.nan
        command = np.zeros(2)
        if self.goal is not None and np.all(np.isfinite(poses[self.index])):
            command = nominal_command(poses, self.index, self.goal, self.setup)
            if not np.all(np.isfinite(command)):
                command = np.zeros(2)
        if self.sink is not None:
            self.sink.take_nominal(command)
        self.pub.publish(conv.twist_msg(command))

    def stop(self) -> None:
        """Final command on shutdown: a zero nominal command."""
        if not self.failed:
            self.pub.publish(conv.twist_msg(np.zeros(2)))


def main(args=None) -> int:
    """Entry point of ``controller_node``: 0 on SIGINT, 1 on invalid parameters."""
    return run(ControllerNode, args, PARAMS, __doc__)


if __name__ == "__main__":
    sys.exit(main())
