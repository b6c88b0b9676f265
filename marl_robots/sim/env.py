"""Multi-agent environment contract: pure ``reset`` / ``step`` over a ``State`` pytree.

In the style of MuJoCo Playground's ``mjx_env.State`` and brax's ``Env``: the env object is
frozen static config; everything that changes lives in ``State``::

    env = NavigationEnv(EnvConfig(task=NavigationConfig(robots=8, scenario="corridor")))
    params = env.default_params()
    state = env.reset(key, params)              # State
    state = env.step(state, action, params)     # action: [n, d] control-point velocity [m/s]

Both are pure, ``jax.jit``- and ``jax.vmap``-able (vmap over keys, states, actions and params;
vmapping params *is* domain randomisation).  ``State`` fields:

* ``task`` - the task's own state pytree (``NavState``: poses, goals, obstacles, step counter).
* ``obs`` - [n, obs_dim] per-robot local observation (layout in ``ObsLayout``).  Built once per
  step from the padded neighbour graph in ``sensing``, which the safety-filter wrapper reuses
  for its constraints (one graph per step, not two).
* ``reward`` / ``cost`` - dicts of named per-robot terms [n] (``progress``, ``goal``, ``time``;
  ``collision``, ``obstacle``, plus ``intervention`` and ``deviation`` from the filter
  wrapper).  Reward terms are already scaled by ``EnvConfig``; costs are raw indicators or
  magnitudes, weighted into the training signal by ``total_reward``.
* ``done`` - bool scalar (team episode: every robot at its goal, or truncation by a wrapper).
* ``metrics`` - dict of scalars (``success``, ``min_separation_m``, ``colliding_pairs``, ...).
* ``info`` - dict of wrapper bookkeeping (``steps``, ``truncation``, reset keys, ...).
* ``sensing`` - ``Sensing``: control points [n, d], their velocities [n, d] and the padded
  neighbour graph of this state.

The contract is dimension-agnostic where it costs nothing: positions and velocities are
[n, d]; the observation layout and the wall features follow ``d``; the action is the velocity
of each robot's control point (the point the filter constrains), mapped to the robot's own
command (unicycle (v, omega), single-integrator velocity) by the robot model.  A quadcopter
env provides the same ``State`` with d = 3.

Observation of robot i (``ObsLayout``, all relative, world-aligned axes, metres and m/s):
own goal offset ``g_i - p_i`` [d], own velocity [d], for each of the k nearest sensed
neighbours (padded, masked) relative position [d], relative velocity [d] and a mask [1], for
each of the M nearest obstacles relative centre [d], radius [1] and a mask [1], and the
distance to each arena wall [2 d] (lower walls, then upper walls).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import jax
import jax.numpy as jnp

from marl_robots.controllers.safety_filter import CBFParams
from marl_robots.core import defaults
from marl_robots.core.graph import NeighbourGraph, neighbour_graph
from marl_robots.sim.closed_loop import SAFETY_DISTANCE_M, ControlConfig, cbf_params
from marl_robots.sim.robots.ground import GroundParams
from marl_robots.sim.tasks.navigation import NavigationConfig, NavigationTask, NavState

_CONTROL_DEFAULTS = ControlConfig()
#: Default class-K gain [1/s] of the env's filter parameters (``core.defaults``).
DEFAULT_GAMMA = defaults.GAMMA


@dataclass(frozen=True)
class EnvConfig:
    """Static environment configuration (hashable).

    Attributes:
        task: the navigation task's config (robots, scenario, robot model, dt, arena).
        neighbours: neighbour budget k of the sensing graph (the filter's).
        sensing_radius_m: neighbours farther than this are not sensed [m].
        obstacle_slots: nearest obstacles M in the observation.
        progress_scale: reward per step for closing the goal distance at full speed.
        goal_bonus: reward once, on first reaching the goal.
        time_penalty: reward subtracted per step while away from the goal.
        cost_weights: (name, weight) pairs turning costs into reward in ``total_reward``.
    """

    task: NavigationConfig = NavigationConfig()
    neighbours: int = _CONTROL_DEFAULTS.neighbours
    sensing_radius_m: float = _CONTROL_DEFAULTS.sensing_radius_m
    obstacle_slots: int = 2
    progress_scale: float = 1.0
    goal_bonus: float = 5.0
    time_penalty: float = 0.01
    cost_weights: tuple[tuple[str, float], ...] = field(
        default=(("collision", 5.0), ("obstacle", 5.0), ("deviation", 0.1))
    )

    def __post_init__(self) -> None:
        if self.neighbours < 0 or self.obstacle_slots < 0 or self.sensing_radius_m <= 0:
            raise ValueError("neighbours >= 0, obstacle_slots >= 0, sensing_radius_m > 0")


class EnvParams(NamedTuple):
    """Dynamic parameters: physical (``GroundParams``) and filter (``CBFParams``)."""

    robot: GroundParams
    cbf: CBFParams


@dataclass(frozen=True)
class ObsLayout:
    """Static layout of the flat observation [obs_dim] of one robot.

    Attributes:
        d: space dimension; k: neighbour slots; m: obstacle slots.
    """

    d: int
    k: int
    m: int

    @property
    def self_dim(self) -> int:
        """Own features: goal offset, velocity and wall distances."""
        return 4 * self.d

    @property
    def nbr_dim(self) -> int:
        """Per-neighbour features: relative position, relative velocity, mask."""
        return 2 * self.d + 1

    @property
    def obst_dim(self) -> int:
        """Per-obstacle features: relative centre, radius, mask."""
        return self.d + 2

    @property
    def dim(self) -> int:
        """obs_dim."""
        return self.self_dim + self.k * self.nbr_dim + self.m * self.obst_dim

    def split(self, obs: jax.Array) -> dict[str, jax.Array]:
        """Named views of obs [..., obs_dim].

        Returns:
            ``goal`` [..., d], ``vel`` [..., d], ``walls`` [..., 2d] (lower walls, then upper),
            ``nbr_pos``/``nbr_vel`` [..., k, d], ``nbr_mask`` [..., k] (bool),
            ``obst_pos`` [..., m, d], ``obst_radius`` [..., m], ``obst_mask`` [..., m] (bool).
        """
        d, k, m = self.d, self.k, self.m
        lead = obs.shape[:-1]
        goal, vel, walls = obs[..., :d], obs[..., d : 2 * d], obs[..., 2 * d : 4 * d]
        i = self.self_dim
        nbr = obs[..., i : i + k * self.nbr_dim].reshape(lead + (k, self.nbr_dim))
        i += k * self.nbr_dim
        obst = obs[..., i : i + m * self.obst_dim].reshape(lead + (m, self.obst_dim))
        return {
            "goal": goal,
            "vel": vel,
            "walls": walls,
            "nbr_pos": nbr[..., :d],
            "nbr_vel": nbr[..., d : 2 * d],
            "nbr_mask": nbr[..., 2 * d] > 0.5,
            "obst_pos": obst[..., :d],
            "obst_radius": obst[..., d],
            "obst_mask": obst[..., d + 1] > 0.5,
        }


class Sensing(NamedTuple):
    """What each robot senses in a state (shared by the observation and the filter).

    Attributes:
        points: [n, d] control points [m]; vel: [n, d] their last velocity [m/s].
        graph: padded ``NeighbourGraph`` with exactly k slots (extra slots masked).
        nbr: [n, k, d] neighbour control points [m] (own point in padding slots).
    """

    points: jax.Array
    vel: jax.Array
    graph: NeighbourGraph
    nbr: jax.Array


class State(NamedTuple):
    """Environment state (a pytree); see the module docstring for each field."""

    task: NavState
    obs: jax.Array
    reward: dict
    cost: dict
    done: jax.Array
    metrics: dict
    info: dict
    sensing: Sensing

    def replace(self, **changes) -> State:
        """A copy with ``changes`` (brax / flax.struct spelling of ``_replace``)."""
        return self._replace(**changes)


REWARD_TERMS = ("progress", "goal", "time")
COST_TERMS = ("collision", "obstacle")
METRIC_NAMES = ("success", "min_separation_m", "colliding_pairs", "obstacle_clearance_m")


def total_reward(state: State, cost_weights) -> jax.Array:
    """Scalar training reward per robot [..., n]: sum of rewards minus weighted costs."""
    r = sum(state.reward.values())
    for name, w in cost_weights:
        if name in state.cost:
            r = r - w * state.cost[name]
    return r


def _pad_graph(graph: NeighbourGraph, k: int) -> NeighbourGraph:
    """Pad a graph clipped to n - 1 slots back to the static budget k (masked slots)."""
    n, have = graph.index.shape
    if have == k:
        return graph
    extra = k - have
    self_idx = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32)[:, None], (n, extra))
    return NeighbourGraph(
        jnp.concatenate([graph.index, self_idx], axis=1),
        jnp.concatenate([graph.mask, jnp.zeros((n, extra), bool)], axis=1),
        jnp.concatenate([graph.distance, jnp.full((n, extra), jnp.inf)], axis=1),
    )


class NavigationEnv:
    """The ``navigation`` task behind the env contract (unfiltered; wrap it for safety)."""

    def __init__(self, config: EnvConfig = EnvConfig()) -> None:
        self.config = config
        self.task = NavigationTask(config.task)
        self.d = 2
        self.obs_layout = ObsLayout(self.d, config.neighbours, config.obstacle_slots)

    @property
    def n(self) -> int:
        """Number of robots."""
        return self.task.n

    @property
    def unwrapped(self) -> NavigationEnv:
        """The env itself (wrappers return their innermost env)."""
        return self

    @property
    def action_dim(self) -> int:
        """Control-point velocity dimension d."""
        return self.d

    def default_params(self, gamma: float = DEFAULT_GAMMA) -> EnvParams:
        """Robotarium-like robots and the default filter parameters (``marl-robots sim``'s)."""
        robot = self.task.default_params()
        return EnvParams(robot, cbf_params(self.task, robot, SAFETY_DISTANCE_M, gamma))

    def sense(self, task_state: NavState, vel: jax.Array, params: EnvParams) -> Sensing:
        """Control points, their velocities and the padded neighbour graph of a state."""
        points = self.task.control_points(task_state, params.robot)
        graph = neighbour_graph(points, self.config.neighbours, self.config.sensing_radius_m)
        graph = _pad_graph(graph, self.config.neighbours)
        return Sensing(points, vel, graph, points[graph.index])

    def observe(self, task_state: NavState, sensing: Sensing) -> jax.Array:
        """Observation [n, obs_dim] from a state's sensing (see ``ObsLayout``)."""
        p, v, g = sensing.points, sensing.vel, sensing.graph
        n, d = p.shape
        m = self.config.obstacle_slots
        goal = task_state.goal - p
        bounds = jnp.asarray(self.config.task.arena_bounds, p.dtype).reshape(d, 2)
        walls = jnp.concatenate([p - bounds[:, 0], bounds[:, 1] - p], axis=-1)
        mask = g.mask[..., None]
        rel_p = jnp.where(mask, sensing.nbr - p[:, None], 0.0)
        rel_v = jnp.where(mask, v[g.index] - v[:, None], 0.0)
        nbr = jnp.concatenate([rel_p, rel_v, mask.astype(p.dtype)], axis=-1)
        obst = task_state.obstacles
        o_rel = obst[None, :, :d] - p[:, None]
        gap = jnp.sqrt(jnp.sum(o_rel * o_rel, -1)) - obst[None, :, d]
        gap = jnp.where(task_state.obstacle_mask[None], gap, jnp.inf)
        count = min(m, obst.shape[0])
        _, keep = jax.lax.top_k(-gap, count)  # nearest surfaces first
        o_present = jnp.take_along_axis(
            jnp.broadcast_to(task_state.obstacle_mask[None], gap.shape), keep, axis=1
        )
        o_feat = jnp.concatenate(
            [
                jnp.take_along_axis(o_rel, keep[..., None], axis=1),
                obst[keep][..., d : d + 1],
                jnp.ones((n, count, 1), p.dtype),
            ],
            axis=-1,
        )
        o_feat = jnp.where(o_present[..., None], o_feat, 0.0)
        if count < m:
            o_feat = jnp.concatenate([o_feat, jnp.zeros((n, m - count, d + 2), p.dtype)], 1)
        parts = [goal, v, walls, nbr.reshape(n, -1), o_feat.reshape(n, -1)]
        return jnp.concatenate(parts, axis=-1).astype(jnp.float32)

    def _metrics(self, task_state: NavState, params: EnvParams):
        m = self.task.metrics(task_state, params.robot)
        metrics = {
            "success": jnp.mean(m.at_goal.astype(jnp.float32)),
            "min_separation_m": jnp.asarray(m.min_separation_m, jnp.float32),
            "colliding_pairs": m.colliding_pairs.astype(jnp.float32),
            "obstacle_clearance_m": jnp.asarray(m.obstacle_clearance_m, jnp.float32),
        }
        return m, metrics

    def _costs(self, task_state: NavState, params: EnvParams) -> dict[str, jax.Array]:
        pos = task_state.pos
        n = pos.shape[0]
        diff = pos[:, None] - pos[None]
        close = (jnp.sum(diff * diff, -1) < params.robot.diameter_m**2) & ~jnp.eye(n, dtype=bool)
        od = jnp.linalg.norm(pos[:, None] - task_state.obstacles[None, :, :2], axis=-1)
        clear = od - task_state.obstacles[None, :, 2] - 0.5 * params.robot.diameter_m
        touching = jnp.any((clear < 0) & task_state.obstacle_mask[None], axis=-1)
        return {
            "collision": jnp.any(close, axis=-1).astype(jnp.float32),
            "obstacle": touching.astype(jnp.float32),
        }

    def reset(self, key: jax.Array, params: EnvParams) -> State:
        """Lay out a new episode (scenario from ``config.task``) and observe it."""
        task_state = self.task.reset(key, params.robot)
        return self._first_state(task_state, jnp.zeros((self.n, self.d), jnp.float32), params)

    def _first_state(self, task_state, velocity, params) -> State:
        """The episode's first ``State``: observed, zero rewards, costs and metrics of it."""
        sensing = self.sense(task_state, velocity, params)
        _, metrics = self._metrics(task_state, params)
        zeros = jnp.zeros((self.n,), jnp.float32)
        return State(
            task=task_state,
            obs=self.observe(task_state, sensing),
            reward={name: zeros for name in REWARD_TERMS},
            cost=self._costs(task_state, params),
            done=jnp.bool_(False),
            metrics=metrics,
            info={},
            sensing=sensing,
        )

    def step(self, state: State, action: jax.Array, params: EnvParams) -> State:
        """Command each control point's velocity ``action`` [n, d] [m/s] for one period.

        The robot model maps it to its own command and applies its own limits; nothing here
        makes it safe (wrap the env in ``wrappers.SafetyFilter`` for that).
        """
        c = self.config
        dt = c.task.dt_s
        robot = self.task.robot
        ts = state.task
        cmd = robot.from_point_velocity(action, ts.yaw, params.robot, jnp)
        nxt, m = self.task.step(ts, cmd, params.robot)
        p0 = state.sensing.points
        sensing = self.sense(nxt, jnp.zeros_like(p0), params)
        vel = (sensing.points - p0) / dt
        sensing = sensing._replace(vel=vel)
        d0 = jnp.linalg.norm(ts.goal - p0, axis=-1)
        d1 = jnp.linalg.norm(nxt.goal - sensing.points, axis=-1)
        arrived = (nxt.reached_step == nxt.t) & (ts.reached_step < 0)
        reward = {
            "progress": c.progress_scale * (d0 - d1) / (params.robot.v_max * dt),
            "goal": c.goal_bonus * arrived.astype(jnp.float32),
            "time": -c.time_penalty * (~m.at_goal).astype(jnp.float32),
        }
        _, metrics = self._metrics(nxt, params)
        return state.replace(
            task=nxt,
            obs=self.observe(nxt, sensing),
            reward=reward,
            cost={**state.cost, **self._costs(nxt, params)},
            done=jnp.all(m.at_goal),
            metrics={**state.metrics, **metrics},
            sensing=sensing,
        )
