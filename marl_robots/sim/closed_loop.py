"""Closed loop for navigation: nominal go-to-goal, optional CBF filter, robot dynamics.

``control`` computes one period's actions for one environment; ``rollout`` runs ``steps``
periods under ``lax.scan`` and returns the final state plus either the full trajectory
(``record=True``, for files and plots) or only running aggregates (for benchmarks).  Both are
pure and vmap over environments, parameters and keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp

from marl_robots.controllers import nominal
from marl_robots.controllers.safety_filter import (
    CBFParams,
    FilterConfig,
    FilterStatus,
    World,
    decentralised_rows,
    decentralised_solve,
    pair_order,
    safety_filter,
)
from marl_robots.core import defaults, validate
from marl_robots.core.graph import neighbour_graph
from marl_robots.sim.layout import SAFETY_DISTANCE_M, filter_margins
from marl_robots.sim.robots.ground import GroundParams
from marl_robots.sim.tasks.navigation import NavigationTask, NavState

#: Robots per chunk when a batch of environments is controlled on the CPU backend.
CPU_CHUNK_ROBOTS = 64


@dataclass(frozen=True)
class ControlConfig:
    """Static closed-loop configuration.

    Attributes:
        filter: ``FilterConfig`` or ``None`` to run the nominal controller unfiltered.
        neighbours: neighbour budget k of the sensing graph.
        sensing_radius_m: neighbours farther than this are not sensed [m].
        goal_gain: proportional go-to-goal gain [1/s].
        bias: right-hand bias of the nominal controller, fraction of v_max.
        make_way: largest step-aside speed from closing neighbours, fraction of v_max.
        make_way_radius_m: gap to a neighbour's safety disc below which robots step aside [m].
    """

    filter: FilterConfig | None = FilterConfig(
        class_k=defaults.CLASS_K, dt_s=defaults.DT_S, relax_weight=defaults.RELAX_WEIGHT,
        relax_iters=defaults.RELAX_ITERS,
    )
    neighbours: int = defaults.NEIGHBOURS
    sensing_radius_m: float = defaults.SENSING_RADIUS_M
    goal_gain: float = defaults.GOAL_GAIN
    bias: float = defaults.BIAS
    make_way: float = defaults.MAKE_WAY
    make_way_radius_m: float = defaults.MAKE_WAY_RADIUS_M

    def __post_init__(self) -> None:
        if self.neighbours < 0 or self.sensing_radius_m <= 0 or self.goal_gain <= 0:
            raise ValueError("neighbours >= 0, sensing_radius_m > 0 and goal_gain > 0 required")
        if self.filter is not None:
            validate.neighbour_budget(self.neighbours)


def cbf_params(
    task: NavigationTask,
    params: GroundParams,
    safety_distance_m: float = SAFETY_DISTANCE_M,
    gamma: float | jax.Array = defaults.GAMMA,
) -> CBFParams:
    """Filter parameters for the task's control points.

    Barriers act on control points, which sit up to ``margin`` (the look-ahead) from the body
    centre, so robot pairs keep ``d + 2 margin`` and walls/obstacles ``radius + margin``, each
    plus the step margin of the task's period (``sim.layout.filter_margins``).

    Args:
        safety_distance_m: minimum distance between robot *centres* [m].
        gamma: class-K gain, scalar or per robot [n].
    """
    m = filter_margins(task.robot, params, jnp.float32(safety_distance_m), task.config.dt_s)
    return CBFParams(
        gamma=jnp.broadcast_to(jnp.asarray(gamma, jnp.float32), (task.n,)),
        safety_distance=m.pair,
        obstacle_margin=m.obstacle,
        wall_margin=m.wall,
        step_margin=jnp.asarray(m.step, jnp.float32),
    )


class ControlOutput(NamedTuple):
    """One period of control: actions [n, 2], nominal actions [n, 2], filter status [n]."""

    action: jax.Array
    nominal: jax.Array
    status: jax.Array
    intervened: jax.Array
    slack: jax.Array


class _Prepared(NamedTuple):
    points: jax.Array
    u_nom: jax.Array
    graph: object
    limits: object
    nominal_action: jax.Array
    extra: object


def _prepare(task, cfg, state, params, cbf) -> _Prepared:
    """Everything before the filter, for one environment."""
    robot = task.robot
    points = robot.control_point(state.pos, state.yaw, params, jnp)
    graph = neighbour_graph(points, cfg.neighbours, cfg.sensing_radius_m)
    u_nom = nominal.cooperative_go_to_goal(
        points, state.goal, points[graph.index], graph.mask, state.obstacles,
        state.obstacle_mask, cbf.safety_distance, cbf.obstacle_margin, cfg.goal_gain,
        params.v_max, cfg.bias, cfg.make_way, cfg.make_way_radius_m, xp=jnp,
    )
    limits = robot.limits(state.yaw, params, jnp)
    nominal_action = robot.from_point_velocity(u_nom, state.yaw, params, jnp)
    extra = None
    if cfg.filter is not None:
        f = cfg.filter
        extra = robot.body_rows(
            state.pos, state.yaw, points, graph.index, graph.mask, cbf, f.class_k, f.dt_s,
            params, jnp,
        )
    return _Prepared(points, u_nom, graph, limits, nominal_action, extra)


def _batched_rows(task, cfg, state, params, cbf, prep=None):
    """``(prep, decentralised_rows)`` of a batch of environments (decentralised filter)."""
    if prep is None:
        prep = jax.vmap(lambda st: _prepare(task, cfg, st, params, cbf))(state)
    arena = jnp.asarray(task.config.arena_bounds)
    world = World(state.obstacles[:, None], state.obstacle_mask[:, None], arena)
    nbr = jax.vmap(lambda p, i: p[i])(prep.points, prep.graph.index)
    order = jax.vmap(lambda i: pair_order(i, jnp))(prep.graph.index)
    rows = decentralised_rows(
        prep.points, prep.u_nom, nbr, prep.graph.mask, world, cbf, prep.limits, cfg.filter,
        jnp, order, prep.extra,
    )
    return prep, rows


def control(
    task: NavigationTask,
    cfg: ControlConfig,
    state: NavState,
    params: GroundParams,
    cbf: CBFParams,
) -> ControlOutput:
    """Nominal go-to-goal on the control points, filtered if ``cfg.filter`` is set.

    ``state`` is one environment, or a batch with a leading environment axis.  A batch is
    filtered in one call rather than under ``vmap``, so that the filter's rarely needed relaxed
    solve is skipped for the whole batch when no robot needs it (under ``vmap`` both branches of
    a ``lax.cond`` run).
    """
    batched = state.pos.ndim == 3
    envs = state.pos.shape[0] if batched else 1
    per_chunk = max(1, CPU_CHUNK_ROBOTS // task.n)
    if batched and envs > per_chunk and envs % per_chunk == 0 and jax.default_backend() == "cpu":
        # On CPU, chunks of ~64 robots keep the working set in cache (about 2x faster).
        chunks = jax.tree_util.tree_map(
            lambda x: x.reshape((envs // per_chunk, per_chunk) + x.shape[1:]), state
        )
        unchunk = lambda tree: jax.tree_util.tree_map(  # noqa: E731
            lambda x: x.reshape((envs,) + x.shape[2:]), tree
        )
        if cfg.filter is None or cfg.filter.mode != "decentralised":
            return unchunk(jax.lax.map(lambda st: control(task, cfg, st, params, cbf), chunks))
        # Rows chunk by chunk, then one solve over the whole batch: the projection and the
        # relaxation compact the few robots that need them once per step, not once per chunk.
        def rows_of(st):
            prep, rows = _batched_rows(task, cfg, st, params, cbf)
            return prep.nominal_action, prep.u_nom, prep.limits, rows

        nominal_action, u_nom, limits, rows = unchunk(jax.lax.map(rows_of, chunks))
        u, info = decentralised_solve(u_nom, rows, limits, cfg.filter, jnp)
        action = task.robot.from_point_velocity(u, state.yaw, params, jnp)
        return ControlOutput(action, nominal_action, info.status, info.intervened, info.slack)
    prepare = lambda st: _prepare(task, cfg, st, params, cbf)  # noqa: E731
    prep = jax.vmap(prepare)(state) if batched else prepare(state)
    if cfg.filter is None:
        zeros = jnp.zeros(state.pos.shape[:-1], jnp.int32)
        return ControlOutput(
            prep.nominal_action,
            prep.nominal_action,
            zeros,
            zeros.astype(bool),
            zeros.astype(jnp.float32),
        )
    arena = jnp.asarray(task.config.arena_bounds)
    if batched and cfg.filter.mode == "decentralised":
        _, rows = _batched_rows(task, cfg, state, params, cbf, prep)
        u, info = decentralised_solve(prep.u_nom, rows, prep.limits, cfg.filter, jnp)
    elif batched:
        u, info = jax.vmap(
            lambda pr, obs, mask: safety_filter(
                pr.points,
                pr.u_nom,
                pr.graph,
                World(obs, mask, arena),
                cbf,
                pr.limits,
                cfg.filter,
                jnp,
                pr.extra,
            )
        )(prep, state.obstacles, state.obstacle_mask)
    else:
        world = World(state.obstacles, state.obstacle_mask, arena)
        u, info = safety_filter(
            prep.points, prep.u_nom, prep.graph, world, cbf, prep.limits, cfg.filter, jnp,
            prep.extra,
        )
    action = task.robot.from_point_velocity(u, state.yaw, params, jnp)
    return ControlOutput(action, prep.nominal_action, info.status, info.intervened, info.slack)


class Trajectory(NamedTuple):
    """Recorded rollout (an env axis E follows T for batched rollouts).

    Shapes: pos [T+1, n, 2], yaw [T+1, n], action [T, n, 2], status [T, n], intervened [T, n],
    min_separation_m [T], colliding_pairs [T], at_goal [T, n].
    """

    pos: jax.Array
    yaw: jax.Array
    action: jax.Array
    status: jax.Array
    intervened: jax.Array
    min_separation_m: jax.Array
    colliding_pairs: jax.Array
    at_goal: jax.Array


class Aggregates(NamedTuple):
    """Running totals of a rollout (what a benchmark or a sweep needs).

    Attributes:
        min_separation_m: smallest centre distance seen [m].
        collided: [n, n] bool, pairs that were ever closer than the body diameter.
        interventions: robot-steps where the filter changed the command.
        relaxed: robot-steps solved with slack.
        infeasible: robot-steps that braked (infeasible or invalid input).
        min_obstacle_clearance_m: smallest body-to-obstacle surface distance [m].
        touched: [n] bool, robots whose body ever overlapped an obstacle or reached past an
            arena wall.
    """

    min_separation_m: jax.Array
    collided: jax.Array
    interventions: jax.Array
    relaxed: jax.Array
    infeasible: jax.Array
    min_obstacle_clearance_m: jax.Array
    touched: jax.Array


def initial_aggregates(task: NavigationTask, state: NavState, params: GroundParams) -> Aggregates:
    """Aggregates of the initial state."""
    m = task.metrics(state, params)
    n = task.n
    diff = state.pos[:, None] - state.pos[None]
    close = (jnp.sum(diff * diff, -1) < params.diameter_m**2) & ~jnp.eye(n, dtype=bool)
    zero = jnp.int32(0)
    return Aggregates(
        m.min_separation_m, close, zero, zero, zero, m.obstacle_clearance_m, m.touching
    )


def rollout(
    task: NavigationTask,
    cfg: ControlConfig,
    state: NavState,
    params: GroundParams,
    cbf: CBFParams,
    steps: int,
    record: bool = True,
):
    """Run ``steps`` closed-loop periods from ``state`` (one environment or a batch).

    Returns:
        ``(final_state, aggregates, trajectory_or_None)``.
    """
    n = task.n
    batched = state.pos.ndim == 3

    def update(agg, nxt, m, out):
        diff = nxt.pos[:, None] - nxt.pos[None]
        close = (jnp.sum(diff * diff, -1) < params.diameter_m**2) & ~jnp.eye(n, dtype=bool)
        return Aggregates(
            jnp.minimum(agg.min_separation_m, m.min_separation_m),
            agg.collided | close,
            agg.interventions + jnp.sum(out.intervened),
            agg.relaxed + jnp.sum(out.status == FilterStatus.RELAXED),
            agg.infeasible + jnp.sum(out.status >= FilterStatus.INFEASIBLE),
            jnp.minimum(agg.min_obstacle_clearance_m, m.obstacle_clearance_m),
            agg.touched | m.touching,
        )

    step = lambda st, a: task.step(st, a, params)  # noqa: E731
    if batched:
        step, update = jax.vmap(step), jax.vmap(update)

    def body(carry, _):
        st, agg = carry
        out = control(task, cfg, st, params, cbf)
        nxt, m = step(st, out.action)
        agg = update(agg, nxt, m, out)
        rec = (
            (
                nxt.pos,
                nxt.yaw,
                out.action,
                out.status,
                out.intervened,
                m.min_separation_m,
                m.colliding_pairs,
                m.at_goal,
            )
            if record
            else None
        )
        return (nxt, agg), rec

    init = lambda st: initial_aggregates(task, st, params)  # noqa: E731
    agg0 = jax.vmap(init)(state) if batched else init(state)
    (final, agg), rec = jax.lax.scan(body, (state, agg0), None, length=steps)
    if not record:
        return final, agg, None
    pos = jnp.concatenate([state.pos[None], rec[0]])  # [T+1, (E,) n, 2]
    yaw = jnp.concatenate([state.yaw[None], rec[1]])
    return final, agg, Trajectory(pos, yaw, *rec[2:])
