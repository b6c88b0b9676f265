"""``policy_node``: a learned policy (a bundle, run without JAX) for one robot, lifecycle node.

Runs in the robot's namespace.  Inputs: the fleet state (``fleet_state:=odometry`` - ``odom``
and ``/<ns>/odom`` of every other fleet robot - or ``pose_array`` - ``/fleet/poses``) and
``goal`` (``geometry_msgs/PoseStamped``, reliable + transient-local, as for
``controller_node``).  On every own state update it builds the robot's observation as the
simulation does and runs the bundle (``nodes.policy_onboard``):

* a ``gnn`` bundle publishes ``cmd_vel_nominal`` (Twist) for ``safety_filter_node`` - it
  replaces ``controller_node``;
* a ``cbf-tuning`` bundle publishes the class-K gain on ``cbf_gain`` (``std_msgs/Float64``
  [1/s]); ``safety_filter_node`` clips it to its ``gamma_bounds`` and falls back to its fixed
  ``gamma`` when the gain is stale or non-finite (``controller_node`` still supplies the
  nominal command).

Faults: a stale observation (own or any fleet robot's state older than ``state_timeout_s``, or
garbage) publishes nothing - the filter brakes on its stale nominal command (or, for
``cbf-tuning``, falls back to the fixed gain); a non-finite policy output publishes a zero
nominal command (``gnn``: the robot brakes) or nothing (``cbf-tuning``: fixed gain).  Each
reason is published in ``diagnostics``.

Lifecycle: configure resolves, loads and checks the bundle against the robot's family and
observation spec (failure names the parameter: ``bundle``, ``robot``, ...); activate starts
publishing; with ``autostart`` (default) the node configures and activates itself and exits
non-zero if configuration fails.
"""

from __future__ import annotations

import sys

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped, Twist
from rclpy.lifecycle import Node as LifecycleNode
from rclpy.lifecycle import State, TransitionCallbackReturn
from std_msgs.msg import Float64

from marl_robots.core.validate import unknown_name
from marl_robots.nodes import conversions as conv
from marl_robots.nodes.common import (
    COMMAND_QOS,
    DIAGNOSTICS_QOS,
    LATCHED_QOS,
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
from marl_robots.nodes.onboard import ParameterError, resolve_node_fleet
from marl_robots.nodes.policy_onboard import (
    POLICY_PARAMS,
    control_points,
    point_velocities,
    policy_setup,
    policy_step,
    velocity_command,
)

PARAMS = (*POLICY_PARAMS, *FLEET_STATE_PARAMS)
#: Diagnostic reasons (message prefixes; tests match on them).
STALE_OBSERVATION = "stale observation"
NON_FINITE_OUTPUT = "non-finite policy output"
NO_GOAL = "waiting for goal"
#: Watchdog (staleness, periodic diagnostics) rate [Hz].
WATCHDOG_HZ = 5.0
#: Orders of a policy linked to its filter in one process (see ``PolicyNode.link``).
POLICY_FIRST, FILTER_FIRST = "policy_first", "filter_first"
POLICY_ORDERS = (POLICY_FIRST, FILTER_FIRST)


class PolicyNode(LifecycleNode):
    """Policy of one robot; ``failed`` holds (parameter, reason) if configuration failed."""

    def __init__(self, fleet_hub: FleetStateHub | None = None, **node_kwargs) -> None:
        super().__init__("policy", **node_kwargs)
        self.failed = None
        self.fleet_hub = fleet_hub
        self.active = False
        self.pub = self.diag_pub = None
        self.sink = None
        self.defer = False  # publish after the filter has answered (linked, policy_first)
        self._pending = None
        self._subs, self._timer, self.input = [], None, None
        try:
            self.params = declare_parameters(self, PARAMS)
        except ParameterError as err:
            self.failed = err.failure
            self.get_logger().fatal(str(err))

    def on_configure(self, state: State) -> TransitionCallbackReturn:
        """Load and check the bundle; create publishers, subscriptions and the watchdog."""
        if self.failed:
            return TransitionCallbackReturn.FAILURE
        p = self.params
        try:
            self.fleet, self.index = resolve_node_fleet(p)
            self.setup = policy_setup(p, self.fleet)
            mode = fleet_state_input(p)
        except ParameterError as err:
            self.get_logger().fatal(f"failed to configure: {err}")
            self.failed = err.failure
            return TransitionCallbackReturn.FAILURE
        self.timeout_s = float(p["state_timeout_s"])
        self.max_position_m = float(p["max_position_m"])
        self.kind = self.setup.policy.kind
        self.robot_name = self.fleet.robots[self.index].name
        self.goal = None
        self.prev = None  # (points, stamp [s]) of the previous period
        self.last = {"reason": "inactive", "level": conv.LEVEL_WARN, "output": [],
                     "published": 0, "faults": 0}
        if self.kind == "gnn":
            self.pub = self.create_lifecycle_publisher(Twist, "cmd_vel_nominal", COMMAND_QOS)
        else:
            self.pub = self.create_lifecycle_publisher(Float64, "cbf_gain", COMMAND_QOS)
        self.diag_pub = self.create_lifecycle_publisher(DiagnosticArray, "diagnostics",
                                                        DIAGNOSTICS_QOS)
        self._subs.append(self.create_subscription(PoseStamped, "goal", self._on_goal,
                                                   LATCHED_QOS))
        self.input = FleetStateInput(self, self.fleet.names, self.index, mode,
                                     self._on_own_state, self.fleet_hub)
        self.state = self.input.state
        self._timer = self.create_timer(1.0 / WATCHDOG_HZ, self._watchdog, clock=steady_clock())
        m = self.setup.policy.manifest
        self.get_logger().info(
            f"{self.robot_name}: {self.kind} bundle {self.setup.policy.path} "
            f"({m['robot']['family']}, observation {m['observation']['dim']}) on "
            f"{self.setup.policy.backend}; state from {self.input.description}"
        )
        return TransitionCallbackReturn.SUCCESS

    def link(self, safety_filter, order: str = POLICY_FIRST) -> None:
        """Hand every output to ``safety_filter`` (a node of this process) before publishing.

        No DDS hop lies between policy and filter; the output is still published for
        introspection.  With a shared ``FleetStateHub`` (listeners run in registration order,
        the policy's first) the order is exact:

        * ``policy_first``: on each fleet state the policy runs, then the filter filters *this*
          state's command - as the JAX simulation does; the policy's compute time is in the
          state -> ``cmd_vel`` latency, its own publication (``cmd_vel_nominal`` /
          ``cbf_gain``) is not: it goes out after the filter's ``cmd_vel``;
        * ``filter_first``: the filter answers each state at once with the command the policy
          computed from the previous state (one period old, as with separate processes), then
          the policy runs for the next period - the lowest latency.

        Args:
            safety_filter: an object with ``take_nominal(command)`` and ``take_gain(gain)``
                (``SafetyFilterNode``).
            order: ``policy_first`` or ``filter_first``.

        Raises:
            ParameterError: an unknown order (names ``policy_order``).
        """
        if order not in POLICY_ORDERS:
            raise ParameterError("policy_order", unknown_name("policy order", order,
                                                              POLICY_ORDERS))
        self.sink = safety_filter
        hub = self.input.hub if self.input is not None else None
        if hub is None:
            return
        if order == FILTER_FIRST:
            hub.remove(self._on_own_state)
            hub.add(self._on_own_state)
        else:
            self.defer = True
            hub.remove(self._publish_pending)
            hub.add(self._publish_pending)  # after the filters registered so far

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        """Start publishing."""
        ret = super().on_activate(state)
        self.active = True
        return ret

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        """Stop publishing (``gnn``: one zero nominal command first)."""
        self.stop()
        return super().on_deactivate(state)

    def stop(self) -> None:
        """Final output on shutdown: a zero nominal command (``gnn``)."""
        if self.active and self.kind == "gnn" and self.pub is not None:
            self.pub.publish(conv.twist_msg(np.zeros(2)))
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
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs = []
        if self.input is not None:
            if self.input.hub is not None:
                self.input.hub.remove(self._publish_pending)
            self.input.destroy()
            self.input = None
        self._pending = None
        if self._timer is not None:
            self.destroy_timer(self._timer)
            self._timer = None
        for pub in (self.pub, self.diag_pub):
            if pub is not None:
                self.destroy_lifecycle_publisher(pub)
        self.pub = self.diag_pub = None

    # Callbacks ---------------------------------------------------------------------------------

    def _on_goal(self, msg: PoseStamped) -> None:
        goal = conv.goal_from_pose(msg)
        if np.all(np.isfinite(goal)):
            self.goal = goal

    def _problem(self, now: float) -> str | None:
        age = now - self.state.arrival
        stale = np.flatnonzero(~(age <= self.timeout_s))
        if stale.size:
            j = int(stale[0])
            return (f"{STALE_OBSERVATION}: state of {self.fleet.robots[j].name} "
                    f"{age[j]:.2f} s old (timeout {self.timeout_s} s)")
        problem = self.state.first_problem(self.max_position_m)
        if problem is not None:
            return (f"{STALE_OBSERVATION}: invalid state of "
                    f"{self.fleet.robots[problem[0]].name}: {problem[1]}")
        if self.goal is None:
            return f"{NO_GOAL} on goal"
        return None

    def _on_own_state(self) -> None:
        if not self.active:
            return
        problem = self._problem(monotonic())
        if problem is not None:
            self.prev = None
            self._report(problem, conv.LEVEL_STALE)
            return
        poses = self.state.poses.copy()
        points = control_points(poses, self.setup)
        stamp = conv.time_to_sec(self.state.stamp)
        prev_points, prev_stamp = self.prev if self.prev is not None else (None, stamp)
        vel = point_velocities(points, prev_points, stamp - prev_stamp, self.setup.dt_s)
        self.prev = (points, stamp)
        with np.errstate(all="ignore"):
            _, out = policy_step(points, vel, self.index, self.goal, self.setup)
        out = np.asarray(out, float)
        if not np.all(np.isfinite(out)):
            if self.kind == "gnn":
                self._output_command(np.zeros(2))
            self._report(f"{NON_FINITE_OUTPUT}: {out.tolist()}; "
                         + ("braking" if self.kind == "gnn" else "filter keeps its fixed gain"),
                         conv.LEVEL_ERROR, out)
            return
        if self.kind == "gnn":
            self._output_command(velocity_command(out, float(poses[self.index, 2]), self.setup))
        else:
            if self.sink is not None:
                self.sink.take_gain(float(out[0]))
            self._publish(float(out[0]))
        self.last["published"] += 1
        self._report("ok", conv.LEVEL_OK, out)

    def _output_command(self, command) -> None:
        """The nominal command: to the linked filter first, then on ``cmd_vel_nominal``."""
        if self.sink is not None:
            self.sink.take_nominal(command)
        self._publish(command)

    def _publish(self, output) -> None:
        """Publish a command (``gnn``) or gain (``cbf-tuning``).

        With ``defer`` (linked, ``policy_first``) it is held until the filter has answered
        this state.
        """
        if self.defer:
            self._pending = output
        else:
            self._send(output)

    def _publish_pending(self) -> None:
        output, self._pending = self._pending, None
        if output is not None and self.pub is not None:
            self._send(output)

    def _send(self, output) -> None:
        self.pub.publish(conv.twist_msg(output) if self.kind == "gnn" else Float64(data=output))

    def _watchdog(self) -> None:
        """Report a stale observation when no own state arrives; periodic diagnostics."""
        if not self.active:
            return
        problem = self._problem(monotonic())
        if problem is not None and problem != self.last["reason"]:
            self._report(problem, conv.LEVEL_STALE)
        else:
            self._publish_diagnostics()

    def _report(self, reason: str, level: int, output=()) -> None:
        changed = reason.split(":")[0] != self.last["reason"].split(":")[0]
        if level != conv.LEVEL_OK:
            self.last["faults"] += 1
        self.last.update(reason=reason, level=level, output=[float(v) for v in output])
        if changed:
            if level == conv.LEVEL_OK:
                self.get_logger().info(f"policy status: {reason}")
            else:
                self.get_logger().warning(f"policy status: {reason}")
            self._publish_diagnostics()

    def _publish_diagnostics(self) -> None:
        if self.diag_pub is None:
            return
        last = self.last
        values = {"kind": self.kind, "backend": self.setup.policy.backend,
                  "published": last["published"], "faults": last["faults"],
                  "output": ",".join(f"{v:.4g}" for v in last["output"])}
        self.diag_pub.publish(conv.diagnostic_array(
            self.get_clock().now().to_msg(), f"{self.get_name()}: {self.robot_name}",
            self.robot_name, last["level"], last["reason"], values))


def make_node(fleet_hub: FleetStateHub | None = None, **node_kwargs) -> PolicyNode:
    """Build the node and, with ``autostart``, configure and activate it.

    Args:
        fleet_hub, node_kwargs: see ``PolicyNode`` (``swarm_host`` passes them).
    """
    return autostart(PolicyNode(fleet_hub, **node_kwargs))


def main(args=None) -> int:
    """Entry point of ``policy_node``: 0 on SIGINT, 1 if configuration fails."""
    return run(make_node, args, PARAMS, __doc__, executor_factory=events_executor)


if __name__ == "__main__":
    sys.exit(main())
