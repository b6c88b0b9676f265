"""Fleet state input of the per-robot nodes: N odometry topics, or every pose in one message.

A per-robot node (controller, safety filter; later the policy node) needs the base pose of
every fleet robot.  Two inputs, chosen by the ``fleet_state`` parameter:

* ``odometry`` (default; what a robot's own driver and its peers' publish): ``odom`` (own) and
  ``/<ns>/odom`` of every other robot, ``nav_msgs/Odometry``, N subscriptions per node;
* ``pose_array``: ``/fleet/poses`` (``FLEET_POSES_TOPIC``), one ``geometry_msgs/PoseArray``
  with every robot's pose in fleet-file order, header stamp = the state's time (what a
  motion-capture bridge or ``sim_node`` publishes), one subscription per node.  Remap the
  absolute name (``-r /fleet/poses:=/mocap/poses``) to read another source.

No velocities travel with the poses: the nominal controller and the CBF filter use only the
fleet's positions and headings (neighbours enter the barrier rows as control points), so a
PoseArray carries everything the nodes read from odometry.

Both inputs fill one ``FleetState`` (poses, per-row arrival time on the monotonic clock,
stamp of the own state); the nodes run the same staleness and validity checks on it whichever
input fed it.  A PoseArray whose length is not the fleet's fails closed (every row invalid).

Within one process (``swarm_host``) a ``FleetStateHub`` takes ``/fleet/poses`` once and feeds
every hosted node's callback from that one message instead of one subscription per node: with
64 robots, 128 subscriptions would deserialise the same 64 poses 128 times per step.

Both inputs subscribe *raw* and read the poses straight from the CDR bytes
(``conversions.read_pose_array`` / ``read_odometry``, pinned to rclpy's deserialisation by a
parity test): building rclpy's Python message objects cost ~5x the CPU of the whole read
(16 poses: 147 vs 27 us of CPU, measured side by side).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from geometry_msgs.msg import PoseArray
from nav_msgs.msg import Odometry

from marl_robots.core.validate import unknown_name
from marl_robots.nodes import conversions as conv
from marl_robots.nodes.common import STATE_QOS, monotonic
from marl_robots.nodes.onboard import ParameterError, ParamSpec, odometry_problem

#: Topic of the fleet state PoseArray (absolute: one fleet, one topic).
FLEET_POSES_TOPIC = "/fleet/poses"
#: Values of the ``fleet_state`` parameter.
FLEET_STATE_INPUTS = ("odometry", "pose_array")
#: Parameters of a node that reads the fleet state (appended to its parameter table).
FLEET_STATE_PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("fleet_state", "string", "odometry",
              "fleet state input: odometry (own odom + /<ns>/odom of every other robot) or "
              f"pose_array (every pose in one geometry_msgs/PoseArray on {FLEET_POSES_TOPIC}, "
              "fleet order)"),
)


def fleet_state_input(p: dict) -> str:
    """The validated ``fleet_state`` parameter.

    Raises:
        ParameterError: neither ``odometry`` nor ``pose_array`` (the message lists both).

    """
    mode = str(p.get("fleet_state", "odometry"))
    if mode not in FLEET_STATE_INPUTS:
        raise ParameterError("fleet_state",
                             unknown_name("fleet state input", mode, FLEET_STATE_INPUTS))
    return mode


class FleetState:
    """Newest known pose of every fleet robot, when it arrived, and what is wrong with it.

    Attributes:
        poses: [n, 3] base poses (x [m], y [m], yaw [rad]); NaN rows: never heard of.
        arrival: [n] arrival times on the monotonic clock [s] (-inf: never).
        stamp: header stamp of the newest own state (``builtin_interfaces/Time``).
        mismatch: why the last PoseArray was refused ('' if it was not).

    """

    def __init__(self, n: int, index: int = 0) -> None:
        self.n = int(n)
        self.index = int(index)
        self.poses = np.full((self.n, 3), np.nan)
        self.arrival = np.full(self.n, -np.inf)
        self.stamp = conv.time_msg(0.0)
        self.mismatch = ""
        self._version = 0
        self._checked: dict[float, tuple[int, np.ndarray, tuple | None]] = {}

    def set_row(self, j: int, pose, stamp, now: float) -> None:
        """One robot's pose (odometry input)."""
        self.poses[j] = pose
        self.arrival[j] = now
        if j == self.index:
            self.stamp = stamp
        self._version += 1

    def set_all(self, poses: np.ndarray, stamp, now: float) -> None:
        """Every robot's pose at once (PoseArray input); the wrong length invalidates all."""
        poses = np.asarray(poses, dtype=float)
        if poses.shape != (self.n, 3):
            self.mismatch = (f"fleet state has {poses.shape[0]} poses, the fleet has "
                             f"{self.n} robots")
            poses = np.full((self.n, 3), np.nan)
        else:
            self.mismatch = ""
        self.poses = poses
        self.arrival[:] = now
        self.stamp = stamp
        self._version += 1

    def _check(self, max_position_m: float) -> tuple[np.ndarray, tuple | None]:
        """(bad rows [n], first (row, reason) or None), once per state and limit."""
        key = float(max_position_m)
        cached = self._checked.get(key)
        if cached is not None and cached[0] == self._version:
            return cached[1], cached[2]
        p = self.poses
        if (not self.mismatch and np.isfinite(p).all()
                and (np.hypot(p[:, 0], p[:, 1]) <= key).all()):
            problems = [None] * self.n  # the common case, without a Python loop
        else:
            problems = [odometry_problem(pose, key) for pose in p]
        if self.mismatch:
            problems = [self.mismatch] * self.n
        bad = np.array([p is not None for p in problems], dtype=bool)
        first = next(((j, p) for j, p in enumerate(problems) if p is not None), None)
        self._checked[key] = (self._version, bad, first)
        return bad, first

    def bad_rows(self, max_position_m: float) -> np.ndarray:
        """[n] bool: rows whose pose is garbage (``onboard.odometry_problem``)."""
        return self._check(max_position_m)[0]

    def first_problem(self, max_position_m: float) -> tuple[int, str] | None:
        """(row, reason) of the first garbage pose, or None."""
        return self._check(max_position_m)[1]


class FleetStateHub:
    """One ``/fleet/poses`` subscription feeding every node of a process (``swarm_host``).

    Nodes register a callback; each PoseArray is converted once, stored in the one shared
    ``FleetState`` and the callbacks run in registration order, in the subscription's callback.
    """

    def __init__(self, node, n: int) -> None:
        self.state = FleetState(n)
        self.listeners: list[Callable[[], None]] = []
        self.subscription = node.create_subscription(PoseArray, FLEET_POSES_TOPIC,
                                                     self._on_poses, STATE_QOS, raw=True)

    def add(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` after every fleet state update."""
        self.listeners.append(callback)

    def remove(self, callback: Callable[[], None]) -> None:
        """Stop calling ``callback``."""
        if callback in self.listeners:
            self.listeners.remove(callback)

    def _on_poses(self, data: bytes) -> None:
        stamp, poses = conv.read_pose_array(data)
        self.state.set_all(poses, stamp, monotonic())
        for callback in list(self.listeners):
            callback()


class FleetStateInput:
    """The fleet state of one node, fed by its ``fleet_state`` input.

    Args:
        node: the rclpy node (subscriptions are created on it).
        names: fleet namespaces, fleet order.
        index: this robot's row.
        mode: ``odometry`` or ``pose_array``.
        on_own_state: called after every update that includes this robot's own pose.
        hub: a ``FleetStateHub`` of this process to share (``pose_array`` only), or None.

    """

    def __init__(self, node, names, index: int, mode: str,
                 on_own_state: Callable[[], None], hub: FleetStateHub | None = None) -> None:
        self.node = node
        self.mode = mode
        self.hub = hub if mode == "pose_array" else None
        self._callback = on_own_state
        self.subscriptions = []
        if self.hub is not None:
            if self.hub.state.n != len(names):
                raise ParameterError("fleet_state", f"the process's fleet state has "
                                     f"{self.hub.state.n} robots, this fleet {len(names)}")
            self.state = self.hub.state
            self.hub.add(on_own_state)
        elif mode == "pose_array":
            self.state = FleetState(len(names), index)
            self.subscriptions.append(node.create_subscription(
                PoseArray, FLEET_POSES_TOPIC, self._on_poses, STATE_QOS, raw=True))
        else:
            self.state = FleetState(len(names), index)
            for j, name in enumerate(names):
                topic = "odom" if j == index else f"/{name}/odom"
                self.subscriptions.append(node.create_subscription(
                    Odometry, topic, lambda data, j=j: self._on_odom(j, data), STATE_QOS,
                    raw=True))

    @property
    def description(self) -> str:
        """Where the state comes from, for the start-up log line."""
        if self.mode == "odometry":
            return f"odometry of {self.state.n} robots"
        shared = ", shared in this process" if self.hub is not None else ""
        return f"fleet poses on {FLEET_POSES_TOPIC}{shared}"

    def _on_poses(self, data: bytes) -> None:
        stamp, poses = conv.read_pose_array(data)
        self.state.set_all(poses, stamp, monotonic())
        self._callback()

    def _on_odom(self, j: int, data: bytes) -> None:
        stamp, pose = conv.read_odometry(data)
        self.state.set_row(j, pose, stamp, monotonic())
        if j == self.state.index:
            self._callback()

    def destroy(self) -> None:
        """Remove the subscriptions (or the hub registration)."""
        if self.hub is not None:
            self.hub.remove(self._callback)
        for sub in self.subscriptions:
            self.node.destroy_subscription(sub)
        self.subscriptions = []

