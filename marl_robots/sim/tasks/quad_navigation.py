"""Task ``quad_navigation``: N Crazyflies fly to 3D goals, behind the env contract (d = 3).

Same ``State`` as ``sim.env.NavigationEnv`` (task state, per-robot ``obs``, named ``reward`` and
``cost`` terms, ``done``, ``metrics``, ``sensing``), and the same observation builder (it is
``NavigationEnv.observe``, reused, with d = 3; its obstacle slots see the spherical obstacles).

Action: each drone's velocity setpoint [n, 3] [m/s, world frame], tracked at the physics rate
by a flight controller (``pid``: the cascaded PID, ``controllers.quad_pid``, its integrators part
of the task state; or ``geometric``: Lee et al.'s SE(3) controller): one env step of ``dt_s`` is
``substeps`` steps of ``sim.robots.quadrotor`` with aerodynamics (drag, ground effect,
downwash) on by default.

Safety (``QuadEnvConfig.filter``, default off): at every physics step the controller's outer
loop turns the setpoint into a commanded acceleration, the 3D CBF filter
(``controllers.safety_filter_3d``) replaces it by the closest safe one, and the inner loop
(attitude, rates, mixer) tracks that.  ``flight_command`` is that chain, shared with the
MuJoCo/PyBullet runner (``sim.quad_run``) so every backend flies the same controller and filter.

Scenarios: ``antipodal`` (drones on a randomly rotated Fibonacci sphere fly to the opposite
point) and ``random`` (starts and goals in jittered cells of a 3D grid).  Optional static
spherical obstacles (``QuadNavigationConfig.obstacles``), e.g. one at the centre of the
antipodal sphere, where every straight path crosses.  Without the filter, the antipodal swap
collides and flies through such a sphere (tested); with it, no pair enters the safety ellipsoid
and no drone comes within ``obstacle_clearance_m`` of a sphere (``tests/test_quad_safety.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import jax
import jax.numpy as jnp

from marl_robots.controllers import quad_geometric, quad_pid
from marl_robots.controllers.quad_setpoints import Setpoint, load_gains
from marl_robots.controllers.safety_filter import FilterStatus
from marl_robots.controllers.safety_filter_3d import (
    Filter3DConfig,
    SafetyEllipsoid,
    filter_acceleration,
    neighbours_3d,
)
from marl_robots.core import math3d
from marl_robots.core.graph import neighbour_graph
from marl_robots.sim.env import (
    COST_TERMS,
    NavigationEnv,
    ObsLayout,
    Sensing,
    State,
    _pad_graph,
)
from marl_robots.sim.robots import crazyflie_params as cf
from marl_robots.sim.robots import quadrotor
from marl_robots.sim.robots.quadrotor import AERO_ON, Aero, QuadState

QUAD_SCENARIOS = ("antipodal", "random")
QUAD_CONTROLLERS = ("geometric", "pid")


@dataclass(frozen=True)
class QuadNavigationConfig:
    """Static configuration of the task (hashable).

    Attributes:
        robots: number of drones.
        scenario: ``antipodal`` or ``random``.
        dt_s: env (policy) period [s].
        substeps: physics steps per env step (physics period ``dt_s / substeps``).
        arena_m: half extents (x, y) [m] around the origin and the ceiling z [m] (floor z = 0).
        sphere_radius_m: radius of the antipodal sphere [m], centred at half the ceiling.
        goal_tolerance_m: a drone within this of its goal is at its goal [m].
        aero: aerodynamic effects simulated.
        controller: flight controller tracking the setpoints, ``pid`` or ``geometric``.
        obstacles: static spherical obstacles, each (x, y, z, radius) [m].
    """

    robots: int = 8
    scenario: str = "antipodal"
    dt_s: float = 0.02
    substeps: int = 10
    arena_m: tuple[float, float, float] = (2.5, 2.5, 3.0)
    sphere_radius_m: float = 1.0
    goal_tolerance_m: float = 0.1
    aero: Aero = AERO_ON
    controller: str = "pid"
    obstacles: tuple[tuple[float, float, float, float], ...] = ()

    def __post_init__(self) -> None:
        if self.scenario not in QUAD_SCENARIOS:
            known = ", ".join(QUAD_SCENARIOS)
            raise KeyError(f"unknown scenario {self.scenario!r}; known scenarios: {known}")
        if self.controller not in QUAD_CONTROLLERS:
            known = ", ".join(QUAD_CONTROLLERS)
            raise KeyError(f"unknown controller {self.controller!r}; known controllers: {known}")
        if self.robots < 1 or self.substeps < 1 or self.dt_s <= 0:
            raise ValueError("robots >= 1, substeps >= 1 and dt_s > 0 required")
        for sphere in self.obstacles:
            if len(sphere) != 4 or not all(math.isfinite(x) for x in sphere) or sphere[3] <= 0:
                raise ValueError(
                    f"an obstacle is (x, y, z, radius) [m], finite, radius > 0; got {sphere}"
                )

    @property
    def arena_bounds(self) -> tuple[float, ...]:
        """(x_min, x_max, y_min, y_max, z_min, z_max) [m]."""
        x, y, z = self.arena_m
        return (-x, x, -y, y, 0.0, z)


@dataclass(frozen=True)
class QuadEnvConfig:
    """Env configuration: the task, sensing, rewards (as ``EnvConfig``), safety, filter.

    ``safety`` is the ellipsoid the metrics measure; ``obstacle_clearance_m`` the distance from
    a spherical obstacle's surface that a drone centre must keep [m] (the rotor tips reach
    0.069 m); ``filter`` the 3D filter (``None``: unfiltered), whose ``bounds_m``,
    ellipsoid and obstacle clearance are replaced by the task's arena and these two.
    """

    task: QuadNavigationConfig = QuadNavigationConfig()
    neighbours: int = 6
    sensing_radius_m: float = 1.5
    obstacle_slots: int = 0
    progress_scale: float = 1.0
    goal_bonus: float = 5.0
    time_penalty: float = 0.01
    cost_weights: tuple[tuple[str, float], ...] = field(default=(("collision", 5.0),))
    safety: SafetyEllipsoid = SafetyEllipsoid()
    obstacle_clearance_m: float = 0.1
    filter: Filter3DConfig | None = None


class QuadNavState(NamedTuple):
    """Task state (a pytree): the drones, their goals and controller, the step counter.

    ``obstacles`` [s, 4]: the spherical obstacles (centre, radius [m]), ``obstacle_mask`` [s]
    all true.
    """

    quad: QuadState
    ctrl: quad_pid.PidState
    goal: jax.Array
    obstacles: jax.Array
    obstacle_mask: jax.Array
    t: jax.Array
    reached_step: jax.Array


class QuadEnvParams(NamedTuple):
    """Dynamic parameters: the quadrotor model (vmap over it to randomise)."""

    robot: cf.QuadParams


def collision_distance_m(params: cf.QuadParams):
    """Centres closer than this collide: twice the rotor tip radius (arm + propeller) [m]."""
    return 2.0 * (params.arm_m + params.prop_radius_m)


def _fibonacci_sphere(n: int) -> jax.Array:
    """``n`` nearly uniform unit vectors [n, 3]; ``-p`` of each is its antipode."""
    i = jnp.arange(n, dtype=jnp.float32) + 0.5
    z = 1.0 - 2.0 * i / n
    r = jnp.sqrt(1.0 - z * z)
    phi = math.pi * (1.0 + math.sqrt(5.0)) * i
    return jnp.stack([r * jnp.cos(phi), r * jnp.sin(phi), z], axis=-1)


def layout(key: jax.Array, config: QuadNavigationConfig) -> tuple[jax.Array, jax.Array]:
    """Starts and goals [n, 3] [m] of the configured scenario."""
    n = config.robots
    x, y, z = config.arena_m
    center = jnp.array([0.0, 0.0, 0.5 * z], jnp.float32)
    if config.scenario == "antipodal":
        # The Fibonacci sphere in a uniformly random orientation (one per key).
        q = jax.random.normal(key, (4,))
        rot = math3d.quat_to_matrix(q / jnp.linalg.norm(q), jnp)
        u = _fibonacci_sphere(n) @ rot.T.astype(jnp.float32)
        return center + config.sphere_radius_m * u, center - config.sphere_radius_m * u
    # random: one drone per cell of a 3D grid, jittered inside the middle half of its cell.
    side = math.ceil(n ** (1.0 / 3.0))
    cells = jnp.stack(jnp.meshgrid(*[jnp.arange(side)] * 3, indexing="ij"), -1).reshape(-1, 3)
    size = jnp.array([2 * x, 2 * y, z - 0.5], jnp.float32) / side
    low = jnp.array([-x, -y, 0.5], jnp.float32)
    k_start, k_goal, k_js, k_jg = jax.random.split(key, 4)

    def pick(k, kj):
        idx = jax.random.permutation(k, cells.shape[0])[:n]
        jitter = jax.random.uniform(kj, (n, 3), minval=0.25, maxval=0.75)
        return low + (cells[idx] + jitter) * size

    return pick(k_start, k_js), pick(k_goal, k_jg)


class QuadNavigationEnv(NavigationEnv):
    """``quad_navigation`` on the env contract (optional 3D filter: ``QuadEnvConfig``)."""

    def __init__(self, config: QuadEnvConfig = QuadEnvConfig()) -> None:
        self.config = config
        self.d = 3
        self.obs_layout = ObsLayout(self.d, config.neighbours, config.obstacle_slots)
        self._gains = load_gains(config.task.controller)
        self._pid_gains = load_gains("pid")  # the progress reward's speed scale
        self.filter_config = (
            None
            if config.filter is None
            else replace(
                config.filter,
                bounds_m=config.task.arena_bounds,
                ellipsoid=config.safety,
                obstacle_clearance_m=config.obstacle_clearance_m,
            )
        )

    @property
    def n(self) -> int:
        """Number of drones."""
        return self.config.task.robots

    def default_params(self) -> QuadEnvParams:
        """The Crazyflie parameter set (float32)."""
        return QuadEnvParams(cf.crazyflie_params(jnp.float32, jnp))

    def sense(self, task_state: QuadNavState, vel: jax.Array, params) -> Sensing:
        """Drone positions, velocities and the padded neighbour graph."""
        points = task_state.quad.pos
        graph = neighbour_graph(points, self.config.neighbours, self.config.sensing_radius_m)
        graph = _pad_graph(graph, self.config.neighbours)
        return Sensing(points, task_state.quad.vel, graph, points[graph.index])

    def _metrics(self, task_state: QuadNavState, params: QuadEnvParams):
        pos = task_state.quad.pos
        n = pos.shape[0]
        dist = jnp.linalg.norm(pos[:, None] - pos[None], axis=-1) + jnp.where(
            jnp.eye(n, dtype=bool), jnp.inf, 0.0
        )
        close = dist < collision_distance_m(params.robot)
        sep = self.config.safety.separation(pos[:, None] - pos[None], jnp) + jnp.where(
            jnp.eye(n, dtype=bool), jnp.inf, 0.0
        )
        inside = sep < self.config.safety.horizontal_m
        clear = obstacle_clearance(pos, task_state.obstacles, jnp)  # [n, s]
        at_goal = (
            jnp.linalg.norm(task_state.goal - pos, axis=-1) < self.config.task.goal_tolerance_m
        )
        metrics = {
            "success": jnp.mean(at_goal.astype(jnp.float32)),
            "min_separation_m": jnp.min(sep).astype(jnp.float32),
            "min_distance_m": jnp.min(dist).astype(jnp.float32),
            "colliding_pairs": (jnp.sum(close) // 2).astype(jnp.float32),
            "ellipsoid_violations": (jnp.sum(inside) // 2).astype(jnp.float32),
            "filter_interventions": jnp.float32(0.0),
            "qp_infeasible": jnp.float32(0.0),
            "obstacle_clearance_m": jnp.min(clear, initial=jnp.inf).astype(jnp.float32),
            "obstacle_violations": jnp.sum(clear < self.config.obstacle_clearance_m).astype(
                jnp.float32
            ),
            "min_altitude_m": jnp.min(pos[:, 2]).astype(jnp.float32),
        }
        return (at_goal, close), metrics

    def _costs(self, task_state: QuadNavState, params: QuadEnvParams) -> dict[str, jax.Array]:
        (_, close), _ = self._metrics(task_state, params)
        pos = task_state.quad.pos
        tip = 0.5 * collision_distance_m(params.robot)
        touching = jnp.any(obstacle_clearance(pos, task_state.obstacles, jnp) < tip, axis=-1)
        return {
            "collision": jnp.any(close, axis=-1).astype(jnp.float32),
            "obstacle": ((pos[:, 2] < 0.0) | touching).astype(jnp.float32),  # floor, spheres
        }

    def reset(self, key: jax.Array, params: QuadEnvParams) -> State:
        """Lay out a new episode: drones hovering at their starts."""
        start, goal = layout(key, self.config.task)
        n = self.n
        quad = quadrotor.hover_state(start, params.robot, jnp)
        task_state = QuadNavState(
            quad=quad,
            ctrl=quad_pid.init(n, jnp.float32, jnp),
            goal=goal,
            obstacles=jnp.asarray(self.config.task.obstacles, jnp.float32).reshape(-1, 4),
            obstacle_mask=jnp.ones((len(self.config.task.obstacles),), bool),
            t=jnp.int32(0),
            reached_step=jnp.full((n,), -1, jnp.int32),
        )
        return self._first_state(task_state, quad.vel, params)

    def step(self, state: State, action: jax.Array, params: QuadEnvParams) -> State:
        """Track the velocity setpoints ``action`` [n, 3] [m/s] for one period ``dt_s``."""
        c, tc = self.config, self.config.task
        h = tc.dt_s / tc.substeps
        ts = state.task

        def physics(_, carry):
            quad, ctrl, changed, infeasible = carry
            thrust, ctrl, info = flight_command(
                quad,
                ctrl,
                action,
                params.robot,
                tc.controller,
                self._gains,
                self.filter_config,
                h,
                ts.obstacles,
            )
            if info is not None:
                changed = changed + jnp.sum(info.intervened)
                infeasible = infeasible + jnp.sum(info.status != int(FilterStatus.OK))
            quad = quadrotor.step(quad, thrust, params.robot, h, tc.aero, jnp)
            return quad, ctrl, changed, infeasible

        zero = jnp.float32(0.0)
        quad, ctrl, changed, infeasible = jax.lax.fori_loop(
            0, tc.substeps, physics, (ts.quad, ts.ctrl, zero, zero)
        )
        t = ts.t + 1
        nxt = ts._replace(quad=quad, ctrl=ctrl, t=t)
        (at_goal, _), metrics = self._metrics(nxt, params)
        metrics["filter_interventions"] = changed
        metrics["qp_infeasible"] = infeasible
        reached = jnp.where((ts.reached_step < 0) & at_goal, t, ts.reached_step)
        nxt = nxt._replace(reached_step=reached)
        sensing = self.sense(nxt, quad.vel, params)
        d0 = jnp.linalg.norm(ts.goal - ts.quad.pos, axis=-1)
        d1 = jnp.linalg.norm(nxt.goal - quad.pos, axis=-1)
        arrived = (reached == t) & (ts.reached_step < 0)
        v_max = self._pid_gains.vel_max_mps
        reward = {
            "progress": c.progress_scale * (d0 - d1) / (v_max * tc.dt_s),
            "goal": c.goal_bonus * arrived.astype(jnp.float32),
            "time": -c.time_penalty * (~at_goal).astype(jnp.float32),
        }
        return state.replace(
            task=nxt,
            obs=self.observe(nxt, sensing),
            reward=reward,
            cost={**state.cost, **self._costs(nxt, params)},
            done=jnp.all(at_goal),
            metrics={**state.metrics, **metrics},
            sensing=sensing,
        )


def flight_command(
    quad: QuadState, ctrl, v_sp, params, controller: str, gains, filt, h, spheres=None
):
    """Rotor thrusts for velocity setpoints, through the 3D filter if ``filt`` is given (JAX).

    Outer loop (setpoint -> commanded acceleration), ``safety_filter_3d.filter_acceleration``,
    inner loop (acceleration -> attitude -> rates -> rotors).

    Args:
        quad: ``n`` drones' state.
        ctrl: the PID's integrators (carried, unused by ``geometric``).
        v_sp: ``[n, 3]`` velocity setpoints [m/s].
        params: quadrotor parameters.
        controller: ``pid`` or ``geometric``; ``gains``: its gains.
        filt: ``Filter3DConfig`` or ``None``.
        h: control period [s].
        spheres: ``[s, 4]`` spherical obstacles (centre, radius [m]) the filter avoids.

    Returns:
        ``(thrust [n, 4] [N], ctrl, FilterInfo or None)``.
    """
    zeros = jnp.zeros_like(v_sp)
    yaw = zeros[:, 0]
    if controller == "pid":
        setpoint = Setpoint(pos=quad.pos, vel=v_sp, acc=zeros, yaw=yaw)
        a_nom, vel_int = quad_pid.velocity_loop(ctrl, quad, setpoint, gains, h, jnp)
    else:  # geometric with zero position error: a = k_v (v_sp - v)
        a_nom = jnp.asarray(gains.k_v, v_sp.dtype) * (v_sp - quad.vel)
        vel_int = ctrl.vel_int
    info = None
    a = a_nom
    if filt is not None:
        index, mask = neighbours_3d(quad.pos, filt)
        a, info = filter_acceleration(
            quad.pos, quad.vel, a_nom, index, mask, filt, jnp, spheres=spheres
        )
    if controller == "pid":
        thrust, rate_int = quad_pid.track_acceleration(ctrl, quad, a, yaw, params, gains, h, jnp)
        return thrust, quad_pid.PidState(vel_int, rate_int), info
    setpoint = Setpoint(pos=quad.pos, vel=quad.vel, acc=a, yaw=yaw)
    return quad_geometric.control(quad, setpoint, params, gains, jnp), ctrl, info


def obstacle_clearance(pos, spheres, xp=jnp):
    """Distance from each drone centre to each sphere's surface [n, s] [m] (< 0: inside).

    ``pos [..., n, 3]``, ``spheres [..., s, 4]`` (centre, radius [m]).
    """
    diff = pos[..., :, None, :] - spheres[..., None, :, :3]
    return xp.sqrt(xp.sum(diff * diff, axis=-1)) - spheres[..., None, :, 3]


def go_to_goal_velocity(pos, goal, speed_mps=0.5, swirl=0.0) -> jax.Array:
    """Straight-line velocity setpoint toward each goal [n, 3] [m/s] (no collision avoidance).

    ``speed_mps`` far away, ``2 /s x distance`` within ``speed_mps / 2`` m of the goal.
    ``swirl`` adds ``swirl x`` that velocity turned 90 degrees counter-clockwise about z (all
    drones the same way, a roundabout that breaks the symmetric jams of head-on swaps).
    """
    offset = goal - pos
    dist = jnp.linalg.norm(offset, axis=-1, keepdims=True)
    v = offset * jnp.minimum(2.0, speed_mps / jnp.maximum(dist, 1e-6))
    turned = jnp.stack([-v[..., 1], v[..., 0], jnp.zeros_like(v[..., 2])], axis=-1)
    return v + swirl * turned


def go_to_goal(state: State, speed_mps=0.5, swirl=0.0) -> jax.Array:
    """``go_to_goal_velocity`` of an env ``State``'s drones [n, 3] [m/s]."""
    return go_to_goal_velocity(state.task.quad.pos, state.task.goal, speed_mps, swirl)


__all__ = [
    "COST_TERMS",
    "QUAD_CONTROLLERS",
    "QuadEnvConfig",
    "QuadNavigationConfig",
    "QuadNavigationEnv",
    "flight_command",
    "go_to_goal_velocity",
    "obstacle_clearance",
]
