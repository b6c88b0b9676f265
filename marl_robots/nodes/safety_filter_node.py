"""``safety_filter_node``: the CBF safety filter of one robot, as a lifecycle node.

Runs in the robot's namespace.  Inputs: the fleet state (``fleet_state:=odometry``: ``odom``
(own) and ``/<ns>/odom`` of every other fleet robot; ``fleet_state:=pose_array``: every pose in
one ``/fleet/poses`` PoseArray, see ``fleet_state``), ``cmd_vel_nominal`` (Twist), and
``cbf_gain`` (``std_msgs/Float64``, the class-K gain [1/s] of a CBF-tuning ``policy_node``:
clipped to ``gamma_bounds`` while fresh and finite, else the fixed ``gamma``).  Outputs:
``cmd_vel`` (Twist, linear.x = v, angular.z = omega) on every own state update, and
``diagnostics``
(``diagnostic_msgs/DiagnosticArray``: filter status, slack, fallback reason) at
``watchdog_rate_hz``.  The filter is ``marl_robots.controllers.safety_filter.filter_robots``,
the very code the simulation runs, called with NumPy for this one robot (see ``onboard``).

Fails closed - publishes zero velocity and says why - on: stale state (own or any fleet
robot's pose, or the nominal command, older than ``state_timeout_s``; checked by a watchdog
on a steady clock so it also fires when ``/clock`` stops), garbage poses (non-finite,
non-unit quaternion, absurd position, a PoseArray of the wrong length), non-finite commands
and solver infeasibility; the same checks for either fleet state input.

Lifecycle: configure validates parameters (failure names the parameter) and creates the
interfaces; activate starts commanding; deactivate publishes one zero command and stops.  With
``autostart`` (default) the node configures and activates itself and exits non-zero if
configuration fails.
"""

from __future__ import annotations

import math
import sys
from dataclasses import replace

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Twist
from rclpy.lifecycle import Node as LifecycleNode
from rclpy.lifecycle import State, TransitionCallbackReturn
from std_msgs.msg import Float64

from marl_robots.controllers.safety_filter import FilterStatus
from marl_robots.nodes import conversions as conv
from marl_robots.nodes.common import (
    COMMAND_QOS,
    DIAGNOSTICS_QOS,
    autostart,
    declare_parameters,
    events_executor,
    monotonic,
    run,
    steady_clock,
)
from marl_robots.nodes.fleet_state import (
    FLEET_STATE_PARAMS,
    FleetStateHub,
    FleetStateInput,
    fleet_state_input,
)
from marl_robots.nodes.onboard import (
    SAFETY_FILTER_PARAMS,
    ParameterError,
    ParamSpec,
    filter_command,
    pipeline_setup,
    resolve_node_fleet,
)
from marl_robots.nodes.policy_onboard import GAIN_PARAMS, gain_bounds, tuned_gain

#: Parameters of this node: the filter's table, the fleet state input and the diagnostics rate.
PARAMS = (
    *SAFETY_FILTER_PARAMS,
    *FLEET_STATE_PARAMS,
    *GAIN_PARAMS,
    ParamSpec("diagnostics_rate_hz", "double", 2.0,
              "periodic diagnostics [Hz] (a change of status is published at once); at most "
              "watchdog_rate_hz"),
)

#: Fallback reasons (prefixes of the diagnostic message; tests match on them).
STALE_STATE = "stale state"
WAITING = "waiting for state"
INVALID_ODOM = "invalid odometry"
STALE_NOMINAL = "stale nominal command"
INVALID_NOMINAL = "invalid nominal command"

_LEVELS = {
    FilterStatus.OK: conv.LEVEL_OK,
    FilterStatus.RELAXED: conv.LEVEL_WARN,
    FilterStatus.INFEASIBLE: conv.LEVEL_ERROR,
    FilterStatus.INVALID_INPUT: conv.LEVEL_ERROR,
}


class SafetyFilterNode(LifecycleNode):
    """Per-robot safety filter; ``failed`` holds (parameter, reason) if configuration failed.

    Args:
        fleet_hub: a ``FleetStateHub`` shared by the nodes of this process (``swarm_host``);
            used with ``fleet_state:=pose_array``.
        **node_kwargs: ``rclpy`` node keyword arguments (e.g. ``cli_args`` with the node's
            ``--ros-args`` when several nodes share a process).

    """

    def __init__(self, fleet_hub: FleetStateHub | None = None, **node_kwargs) -> None:
        super().__init__("safety_filter", **node_kwargs)
        self.failed = None
        self.params = None
        self.fleet_hub = fleet_hub
        self.input = None
        self._subs, self._timer = [], None
        self.cmd_pub = self.diag_pub = None
        self.active = False
        try:
            self.params = declare_parameters(self, PARAMS)
        except ParameterError as err:
            self.failed = err.failure
            self.get_logger().fatal(str(err))

    # Lifecycle transitions -------------------------------------------------------------------

    def on_configure(self, state: State) -> TransitionCallbackReturn:
        """Validate parameters and create publishers, subscriptions and the watchdog."""
        if self.failed:
            return TransitionCallbackReturn.FAILURE
        p = self.params
        try:
            self.fleet, self.index = resolve_node_fleet(p)
            self.setup = pipeline_setup(p, self.fleet)
            mode = fleet_state_input(p)
            diagnostics_rate = float(p["diagnostics_rate_hz"])
            if not 0 < diagnostics_rate < float("inf"):
                raise ParameterError("diagnostics_rate_hz",
                                     f"must be a positive number, got {diagnostics_rate!r}")
        except ParameterError as err:
            self.get_logger().fatal(f"failed to configure: {err}")
            self.failed = err.failure
            return TransitionCallbackReturn.FAILURE
        self.timeout_s = float(p["state_timeout_s"])
        # Periodic diagnostics every this many watchdog ticks (2N nodes at 20 Hz each would
        # cost a hosted swarm more than its filters).
        self.diagnostics_every = max(1, round(float(p["watchdog_rate_hz"]) / diagnostics_rate))
        self.ticks = 0
        self.max_position_m = float(p["max_position_m"])
        n = len(self.fleet.robots)
        self.robot_name = self.fleet.robots[self.index].name
        self.nominal = np.zeros(2)
        self.nominal_arrival = -np.inf
        # CBF-tuning seam: a policy's gain on cbf_gain, clipped, else the fixed gamma.
        try:
            self.gamma_bounds = gain_bounds(p)
        except ParameterError as err:
            self.get_logger().fatal(f"failed to configure: {err}")
            self.failed = err.failure
            return TransitionCallbackReturn.FAILURE
        self.gain, self.gain_arrival = math.nan, -math.inf
        self.gamma = (float(p["gamma"]), "default: no tuned gain")
        self.last = {"status": "inactive", "level": conv.LEVEL_WARN, "slack": 0.0,
                     "command": np.zeros(2), "nominal": np.zeros(2), "filter_status": -1}
        self.counts = {"commands": 0, "fallbacks": 0, "relaxed": 0, "interventions": 0}
        self.cmd_pub = self.create_lifecycle_publisher(Twist, "cmd_vel", COMMAND_QOS)
        self.diag_pub = self.create_lifecycle_publisher(DiagnosticArray, "diagnostics",
                                                        DIAGNOSTICS_QOS)
        self.input = FleetStateInput(self, self.fleet.names, self.index, mode,
                                     self._on_own_state, self.fleet_hub)
        self.state = self.input.state
        self._subs.append(self.create_subscription(Twist, "cmd_vel_nominal", self._on_nominal,
                                                   COMMAND_QOS))
        self._subs.append(self.create_subscription(Float64, "cbf_gain", self._on_gain,
                                                   COMMAND_QOS))
        self._timer = self.create_timer(1.0 / float(p["watchdog_rate_hz"]), self._watchdog,
                                        clock=steady_clock())
        self.get_logger().info(
            f"configured for {self.robot_name} (id {self.fleet.ids[self.index]}) with "
            f"{n - 1} fleet neighbours, state from {self.input.description}; state timeout "
            f"{self.timeout_s} s"
        )
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        """Start commanding."""
        ret = super().on_activate(state)
        self.active = True
        return ret

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        """Hand over to the fallback: one zero command, then stop publishing."""
        self._publish(np.zeros(2), "deactivated", conv.LEVEL_WARN, -1, 0.0)
        self.active = False
        return super().on_deactivate(state)

    def stop(self) -> None:
        """Final command on process shutdown (SIGINT/SIGTERM): one zero ``cmd_vel``."""
        if self.active:
            self._publish(np.zeros(2), "shutdown: final zero command", conv.LEVEL_WARN, -1, 0.0)
            self.active = False

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        """Destroy what configure created."""
        self._teardown()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        """Destroy what configure created."""
        self._teardown()
        return TransitionCallbackReturn.SUCCESS

    def _teardown(self) -> None:
        self.active = False
        if self.input is not None:
            self.input.destroy()
            self.input = None
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs = []
        if self._timer is not None:
            self.destroy_timer(self._timer)
            self._timer = None
        for pub in (self.cmd_pub, self.diag_pub):
            if pub is not None:
                self.destroy_lifecycle_publisher(pub)
        self.cmd_pub = self.diag_pub = None

    # Callbacks ---------------------------------------------------------------------------------

    def _on_nominal(self, msg: Twist) -> None:
        self.take_nominal(conv.command_from_twist(msg))

    def _on_gain(self, msg: Float64) -> None:
        self.take_gain(float(msg.data))

    def take_nominal(self, command) -> None:
        """A nominal command (v, omega) handed over in-process, as if it arrived on the topic.

        ``swarm_host`` links a robot's ``policy_node`` to its filter this way: the policy runs
        first on each fleet state and the filter filters *its* command for the same state
        (over the topic it would filter the previous period's).
        """
        self.nominal = np.asarray(command, dtype=float)
        self.nominal_arrival = monotonic()

    def take_gain(self, gain: float) -> None:
        """A tuned class-K gain [1/s] handed over in-process (see ``take_nominal``)."""
        self.gain, self.gain_arrival = float(gain), monotonic()

    def _on_own_state(self) -> None:
        if self.active:
            self._step()

    def _input_problem(self, now: float) -> tuple[str, int] | None:
        """Fallback reason and diagnostic level if the inputs cannot be trusted, else None."""
        arrival = self.state.arrival
        age = now - arrival
        if not np.isfinite(arrival[self.index]):
            return f"{WAITING}: no odometry from {self.robot_name} yet", conv.LEVEL_STALE
        if age[self.index] > self.timeout_s:
            return (f"{STALE_STATE}: own odometry {age[self.index]:.2f} s old "
                    f"(timeout {self.timeout_s} s)", conv.LEVEL_STALE)
        for j in np.flatnonzero(age > self.timeout_s):
            name = self.fleet.robots[j].name
            if not np.isfinite(arrival[j]):
                return f"{WAITING}: no odometry from {name} yet", conv.LEVEL_STALE
            return (f"{STALE_STATE}: odometry of {name} {age[j]:.2f} s old "
                    f"(timeout {self.timeout_s} s)", conv.LEVEL_STALE)
        problem = self.state.first_problem(self.max_position_m)
        if problem is not None:
            return (f"{INVALID_ODOM} from {self.fleet.robots[problem[0]].name}: {problem[1]}",
                    conv.LEVEL_ERROR)
        if now - self.nominal_arrival > self.timeout_s:
            return f"{STALE_NOMINAL}: none within {self.timeout_s} s", conv.LEVEL_STALE
        if not np.all(np.isfinite(self.nominal)):
            return f"{INVALID_NOMINAL}: non-finite", conv.LEVEL_ERROR
        return None

    def _step(self) -> None:
        """Filter the nominal command for the newest state (or fall back) and publish."""
        problem = self._input_problem(monotonic())
        if problem is not None:
            self._publish(np.zeros(2), problem[0], problem[1], -1, 0.0)
            return
        setup = self.setup
        self.gamma = tuned_gain(self.gain, monotonic() - self.gain_arrival, self.timeout_s,
                                self.gamma_bounds, float(self.params["gamma"]))
        if self.gamma[1] == "policy":
            setup = replace(setup, cbf=setup.cbf._replace(gamma=np.array([self.gamma[0]])))
        result = filter_command(self.state.poses, self.index, self.nominal, setup)
        command = result.command
        # The filter changed the control point's velocity (the simulation's "intervened").
        self.counts["interventions"] += int(np.any(result.info.intervened))
        if not np.all(np.isfinite(command)):  # never publish a NaN, whatever happened
            command = np.zeros(2)
        self._publish(command, result.reason, _LEVELS[FilterStatus(result.status)],
                      result.status, result.slack)

    def _watchdog(self) -> None:
        """Brake on stale own state (no odometry arrives to trigger ``_step``); diagnostics."""
        if not self.active:
            return
        now = monotonic()
        if now - self.state.arrival[self.index] > self.timeout_s:
            problem = self._input_problem(now)
            self._publish(np.zeros(2), problem[0], problem[1], -1, 0.0)
        self.ticks += 1
        if self.ticks % self.diagnostics_every == 0:
            self._publish_diagnostics()

    def _publish(self, command, reason: str, level: int, status: int, slack: float) -> None:
        if self.cmd_pub is None:
            return
        self.cmd_pub.publish(conv.twist_cdr(command))
        self.counts["commands"] += 1
        if status < 0 or status >= FilterStatus.INFEASIBLE:
            self.counts["fallbacks"] += 1
        if status == FilterStatus.RELAXED:
            self.counts["relaxed"] += 1
        # Log when the kind of status changes, not when only the numbers in it do.
        changed = reason.split(":")[0] != self.last["status"].split(":")[0]
        self.last = {"status": reason, "level": level, "slack": slack, "command": command,
                     "nominal": self.nominal, "filter_status": status}
        if changed:
            # Separate call sites: rclpy pins one severity per logging call site.
            if level == conv.LEVEL_OK:
                self.get_logger().info(f"filter status: {reason}")
            else:
                self.get_logger().warning(f"filter status: {reason}")
            self._publish_diagnostics()

    def _publish_diagnostics(self) -> None:
        if self.diag_pub is None:
            return
        last = self.last
        values = {
            "status": last["filter_status"],
            "slack": float(last["slack"]),
            "fallback": last["level"] not in (conv.LEVEL_OK, conv.LEVEL_WARN),
            "cmd_v": float(last["command"][0]),
            "cmd_omega": float(last["command"][1]),
            "nominal_v": float(last["nominal"][0]),
            "nominal_omega": float(last["nominal"][1]),
            "input_stamp": conv.time_to_sec(self.state.stamp),
            "gamma": float(self.gamma[0]),
            "gamma_source": self.gamma[1],
            **self.counts,
        }
        self.diag_pub.publish(conv.diagnostic_array(
            self.get_clock().now().to_msg(), f"{self.get_name()}: {self.robot_name}",
            self.robot_name, last["level"], last["status"], values))


def make_node(fleet_hub: FleetStateHub | None = None, **node_kwargs) -> SafetyFilterNode:
    """Build the node and, with ``autostart``, configure and activate it.

    Args:
        fleet_hub, node_kwargs: see ``SafetyFilterNode``.

    Returns:
        The node; its ``failed`` attribute is set when configuration failed under autostart.

    """
    return autostart(SafetyFilterNode(fleet_hub, **node_kwargs))


def main(args=None) -> int:
    """Entry point of ``safety_filter_node``: 0 on SIGINT, 1 if configuration fails."""
    return run(make_node, args, PARAMS, __doc__, executor_factory=events_executor)


if __name__ == "__main__":
    sys.exit(main())
