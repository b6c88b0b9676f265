"""``sim_node``: software-in-the-loop navigation simulation for a fleet of unicycles.

Steps the pure navigation task (``NavigationTask.step``, jitted, one environment) at
``rate_hz`` wall-clock steps per second (0: real time) and per step:

* publishes ``/clock`` (``rosgraph_msgs/Clock``) so nodes with ``use_sim_time`` follow the
  simulation, which may run faster or slower than real time;
* applies each robot's newest ``/<ns>/cmd_vel`` (Twist, linear.x = v, angular.z = omega); a
  command older than ``cmd_timeout_s`` or non-finite counts as zero;
* publishes each robot's ``/<ns>/odom`` (``nav_msgs/Odometry``, frame ``world`` or the fleet
  file's ``frame_id``, child ``<ns>/base_link``, REP-103/105), and every robot's pose in one
  ``geometry_msgs/PoseArray`` on ``/fleet/poses`` (fleet order, stamp = simulated time; the
  ``fleet_state:=pose_array`` input of the per-robot nodes, see ``fleet_state``);
* counts collisions (robot pairs entering body contact) and reports them on ``collisions``
  (``std_msgs/UInt32``, total events), in ``diagnostics`` and in the log.

Also publishes each robot's goal once on ``/<ns>/goal`` (reliable + transient-local) and RViz
markers on ``markers`` at ``marker_rate_hz`` (while something subscribes).  Its own timers run
on a steady clock: the node that drives ``/clock`` never uses simulated time itself.
"""

from __future__ import annotations

import sys
import time
from functools import partial

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PoseArray, PoseStamped, Twist
from nav_msgs.msg import Odometry
from rclpy.node import Node
from rosgraph_msgs.msg import Clock
from std_msgs.msg import UInt32
from visualization_msgs.msg import MarkerArray

from marl_robots.nodes import conversions as conv
from marl_robots.nodes.common import (
    COMMAND_QOS,
    DIAGNOSTICS_QOS,
    DISPLAY_QOS,
    LATCHED_QOS,
    STATE_QOS,
    declare_parameters,
    monotonic,
    run,
    steady_clock,
)
from marl_robots.nodes.fleet import Fleet, make_fleet
from marl_robots.nodes.fleet_state import FLEET_POSES_TOPIC
from marl_robots.nodes.onboard import SIM_PARAMS, ParameterError

#: Safety distance drawn around each robot in RViz [m] (the filters' default).
DISPLAY_SAFETY_DISTANCE_M = 0.13


def build_task(fleet: Fleet, dt_s: float):
    """Navigation task and initial state for ``fleet`` (poses, goals and obstacles from it).

    Returns:
        ``(task, params, state)``.

    """
    import jax.numpy as jnp  # noqa: PLC0415 - JAX is the simulator's, not the nodes'

    from marl_robots.sim.tasks.navigation import (  # noqa: PLC0415
        NavigationConfig,
        NavigationTask,
        NavState,
    )

    n = len(fleet.robots)
    max_obstacles = max(1, len(fleet.obstacles))
    task = NavigationTask(NavigationConfig(robots=n, dt_s=dt_s, arena_m=fleet.arena_m,
                                           max_obstacles=max_obstacles))
    params = task.default_params()
    obstacles = np.zeros((max_obstacles, 3), np.float32)
    obstacles[: len(fleet.obstacles)] = np.asarray(fleet.obstacles, np.float32).reshape(-1, 3)
    poses = np.asarray([r.initial_pose for r in fleet.robots], np.float32)
    state = NavState(
        pos=jnp.asarray(poses[:, :2]),
        yaw=jnp.asarray(poses[:, 2]),
        goal=jnp.asarray(np.asarray([r.goal for r in fleet.robots], np.float32)),
        obstacles=jnp.asarray(obstacles),
        obstacle_mask=jnp.asarray(np.arange(max_obstacles) < len(fleet.obstacles)),
        t=jnp.int32(0),
        reached_step=jnp.full((n,), -1, jnp.int32),
    )
    return task, params, state


class SimNode(Node):
    """Simulator bridge; ``failed`` holds (parameter, reason) on invalid parameters."""

    def __init__(self) -> None:
        super().__init__("sim")
        self.failed = None
        try:
            p = declare_parameters(self, SIM_PARAMS)
            self._configure(p)
        except ParameterError as err:
            self.get_logger().fatal(str(err))
            self.failed = err.failure

    def _configure(self, p: dict) -> None:
        import jax  # noqa: PLC0415

        try:
            fleet = make_fleet(p["robots"], p["scenario"], p["fleet_file"], p["seed"])
        except (OSError, ValueError, KeyError) as err:
            name = "fleet_file" if p["fleet_file"] else (
                "scenario" if "scenario" in str(err) else "robots")
            raise ParameterError(name, str(err)) from err
        if not p["dt_s"] > 0:
            raise ParameterError("dt_s", f"must be positive, got {p['dt_s']}")
        if p["rate_hz"] < 0:
            raise ParameterError("rate_hz", f"must be >= 0, got {p['rate_hz']}")
        for name in ("cmd_timeout_s", "marker_rate_hz", "status_rate_hz"):
            if not p[name] > 0:
                raise ParameterError(name, f"must be positive, got {p[name]}")
        self.fleet = fleet
        self.dt_s = float(p["dt_s"])
        rate = float(p["rate_hz"]) or 1.0 / self.dt_s
        self.cmd_timeout_s = float(p["cmd_timeout_s"])
        self.task, self.params, self.state = build_task(fleet, self.dt_s)
        self._step = jax.jit(self.task.step)
        # Compile before the first tick so that the first periods are not late.
        self._step(self.state, jax.numpy.zeros((len(fleet.robots), 2)), self.params)
        n = len(fleet.robots)
        self.commands = np.zeros((n, 2))
        self.cmd_arrival = np.full(n, -np.inf)
        self.commands_received = 0
        self.sim_time = 0.0
        self.steps = 0
        self.collisions = 0
        self.bad_commands = 0
        self.in_contact = np.zeros((n, n), dtype=bool)
        self.min_separation_m = np.inf
        self.start_wall = None
        frame = fleet.frame_id
        self.frame_id = frame
        self.odom_pubs = []
        for j, name in enumerate(fleet.names):
            self.create_subscription(Twist, f"/{name}/cmd_vel", partial(self._on_cmd, j),
                                     COMMAND_QOS)
            self.odom_pubs.append(self.create_publisher(Odometry, f"/{name}/odom", STATE_QOS))
        self.goal_pubs = [self.create_publisher(PoseStamped, f"/{name}/goal", LATCHED_QOS)
                          for name in fleet.names]
        self.fleet_pub = self.create_publisher(PoseArray, FLEET_POSES_TOPIC, STATE_QOS)
        self.clock_pub = (self.create_publisher(Clock, "/clock", DISPLAY_QOS)
                          if p["publish_clock"] else None)
        self.marker_pub = self.create_publisher(MarkerArray, "markers", DISPLAY_QOS)
        self.collision_pub = self.create_publisher(UInt32, "collisions", LATCHED_QOS)
        self.diag_pub = self.create_publisher(DiagnosticArray, "diagnostics", DIAGNOSTICS_QOS)
        self.marker_every = max(1, round(rate / float(p["marker_rate_hz"])))
        self.status_every = max(1, round(rate / float(p["status_rate_hz"])))
        stamp = conv.time_msg(0.0)
        for pub, robot in zip(self.goal_pubs, fleet.robots, strict=True):
            pub.publish(conv.goal_msg(robot.goal, stamp, frame))
        self.collision_pub.publish(UInt32(data=0))
        self._publish_state()
        self.create_timer(1.0 / rate, self._tick, clock=steady_clock())
        self.get_logger().info(
            f"simulating {n} robots ({', '.join(fleet.names)}) at {rate:.1f} steps/s, "
            f"dt {self.dt_s} s (real-time factor {rate * self.dt_s:.2f})"
        )

    def _on_cmd(self, j: int, msg: Twist) -> None:
        cmd = conv.command_from_twist(msg)
        if not np.all(np.isfinite(cmd)):
            self.bad_commands += 1
            self.get_logger().warning(f"non-finite cmd_vel from {self.fleet.names[j]}: zero")
            cmd = np.zeros(2)
        self.commands[j] = cmd
        self.cmd_arrival[j] = monotonic()
        self.commands_received += 1

    def _tick(self) -> None:
        """Advance one period with the newest commands and publish the new state."""
        import jax.numpy as jnp  # noqa: PLC0415

        if self.start_wall is None:
            self.start_wall = time.monotonic()
        fresh = monotonic() - self.cmd_arrival <= self.cmd_timeout_s
        action = np.where(fresh[:, None], self.commands, 0.0)
        self.state, metrics = self._step(self.state, jnp.asarray(action, jnp.float32),
                                         self.params)
        self.applied = action
        self.steps += 1
        self.sim_time = self.steps * self.dt_s
        self._count_collisions()
        self._publish_state()
        # Markers cost ~4 Marker messages per robot: only when someone (RViz) listens.
        if self.steps % self.marker_every == 0 and self.marker_pub.get_subscription_count():
            self._publish_markers()
        if self.steps % self.status_every == 0:
            self._publish_status()

    def _count_collisions(self) -> None:
        pos = np.asarray(self.state.pos, dtype=float)
        diff = pos[:, None] - pos[None]
        dist = np.sqrt(np.sum(diff * diff, axis=-1)) + np.eye(len(pos)) * 1e6
        self.min_separation_m = min(self.min_separation_m, float(dist.min()))
        contact = dist < float(self.params.diameter_m)
        new = contact & ~self.in_contact
        self.in_contact = contact
        events = int(np.triu(new, k=1).sum())
        if events:
            self.collisions += events
            names = self.fleet.names
            rows, cols = np.nonzero(np.triu(new, k=1))
            pairs = [f"{names[i]}-{names[j]}" for i, j in zip(rows, cols, strict=True)]
            self.get_logger().error(
                f"collision at t={self.sim_time:.2f} s: {', '.join(pairs)} "
                f"(total {self.collisions})"
            )
            self.collision_pub.publish(UInt32(data=self.collisions))

    def _publish_state(self) -> None:
        stamp = conv.time_msg(self.sim_time)
        if self.clock_pub is not None:
            self.clock_pub.publish(conv.clock_msg(self.sim_time))
        pos = np.asarray(self.state.pos, dtype=float)
        yaw = np.asarray(self.state.yaw, dtype=float)
        applied = getattr(self, "applied", np.zeros((len(pos), 2)))
        self.fleet_pub.publish(conv.pose_array_msg(np.concatenate([pos, yaw[:, None]], axis=1),
                                                   stamp, self.frame_id))
        for j, (pub, name) in enumerate(zip(self.odom_pubs, self.fleet.names, strict=True)):
            pub.publish(conv.odom_msg((pos[j, 0], pos[j, 1], yaw[j]), applied[j], stamp,
                                      self.frame_id, f"{name}/base_link"))

    def _publish_markers(self) -> None:
        pos = np.asarray(self.state.pos, dtype=float)
        yaw = np.asarray(self.state.yaw, dtype=float)
        poses = np.concatenate([pos, yaw[:, None]], axis=1)
        self.marker_pub.publish(conv.markers_msg(
            conv.time_msg(self.sim_time), self.frame_id, self.fleet.names, poses,
            [r.goal for r in self.fleet.robots], float(self.params.diameter_m),
            DISPLAY_SAFETY_DISTANCE_M, self.fleet.obstacles))

    def _publish_status(self) -> None:
        reached = np.asarray(self.state.reached_step)
        wall = time.monotonic() - self.start_wall if self.start_wall else 0.0
        values = {
            "sim_time_s": float(self.sim_time),
            "steps": self.steps,
            "collisions": self.collisions,
            "robots_at_goal_once": int(np.sum(reached >= 0)),
            "robots": len(reached),
            "reached_step": " ".join(str(int(r)) for r in reached),
            "min_separation_m": float(self.min_separation_m),
            "real_time_factor": float(self.sim_time / wall) if wall > 0 else 0.0,
            "bad_commands": self.bad_commands,
            "commands_received": self.commands_received,
            "robots_commanding": int(np.sum(np.isfinite(self.cmd_arrival))),
        }
        level = DiagnosticStatus.ERROR if self.collisions else DiagnosticStatus.OK
        message = f"{self.collisions} collisions, {values['robots_at_goal_once']}/" \
                  f"{len(reached)} robots reached their goal"
        self.diag_pub.publish(conv.diagnostic_array(conv.time_msg(self.sim_time), "sim",
                                                    "sim_node", level, message, values))


def main(args=None) -> int:
    """Entry point of ``sim_node``: 0 on SIGINT, 1 on invalid parameters."""
    return run(SimNode, args, SIM_PARAMS, __doc__)


if __name__ == "__main__":
    sys.exit(main())
