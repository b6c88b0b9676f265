"""Task ``navigation``: N ground robots drive from starts to goals among circular obstacles.

The task object is frozen static config; ``reset(key, params)`` and
``step(state, action, params)`` are pure, jit-able and vmap-able.  The arena is a rectangle
centred on the origin (x right, y up, metres).  Per-step metrics are returned by ``step`` and
also available from ``metrics(state, params)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from marl_robots.core import defaults
from marl_robots.sim.robots import ROBOTS
from marl_robots.sim.robots.ground import GroundParams
from marl_robots.sim.scenarios import SCENARIOS


@dataclass(frozen=True)
class NavigationConfig:
    """Static configuration (shapes and discrete choices; hashable).

    Attributes:
        robots: number of robots n.
        scenario: layout name (see ``marl_robots.sim.scenarios``).
        robot: robot model name (``unicycle`` or ``single_integrator``).
        dt_s: control and integration period [s] (the Robotarium's 0.033 s).
        max_obstacles: static obstacle budget O (unused slots are masked).
        arena_m: arena size (width x, height y) [m].
        goal_tolerance_m: a robot is at its goal within this distance [m].
    """

    robots: int = 16
    scenario: str = "antipodal"
    robot: str = "unicycle"
    dt_s: float = defaults.DT_S
    max_obstacles: int = 4
    arena_m: tuple[float, float] = defaults.ARENA_M
    goal_tolerance_m: float = 0.05

    def __post_init__(self) -> None:
        if self.robots < 1:
            raise ValueError(f"robots must be positive, got {self.robots}")
        if self.dt_s <= 0 or self.goal_tolerance_m <= 0:
            raise ValueError("dt_s and goal_tolerance_m must be positive")
        if min(self.arena_m) <= 0:
            raise ValueError(f"arena_m must be positive, got {self.arena_m}")
        SCENARIOS.get(self.scenario)
        ROBOTS.get(self.robot)

    @property
    def arena_bounds(self) -> tuple[float, float, float, float]:
        """(x_min, x_max, y_min, y_max) [m]."""
        w, h = self.arena_m
        return (-0.5 * w, 0.5 * w, -0.5 * h, 0.5 * h)


class NavState(NamedTuple):
    """Episode state (a pytree).

    Attributes:
        pos: [n, 2] axle-centre positions [m, world].
        yaw: [n] headings [rad].
        goal: [n, 2] goals of the control points [m].
        obstacles: [O, 3] (x, y, radius) [m]; obstacle_mask: [O].
        t: int32 step counter.
        reached_step: [n] int32 first step at which each robot was at its goal (-1: not yet).
    """

    pos: jax.Array
    yaw: jax.Array
    goal: jax.Array
    obstacles: jax.Array
    obstacle_mask: jax.Array
    t: jax.Array
    reached_step: jax.Array


class StepMetrics(NamedTuple):
    """Per-step metrics of one environment.

    Attributes:
        min_separation_m: smallest centre distance between two robots [m].
        colliding_pairs: number of robot pairs closer than the body diameter.
        at_goal: [n] control point within the goal tolerance.
        obstacle_clearance_m: smallest body-surface-to-obstacle-surface distance [m].
        touching: [n] body overlaps an obstacle or reaches past an arena wall (clearance < 0).
    """

    min_separation_m: jax.Array
    colliding_pairs: jax.Array
    at_goal: jax.Array
    obstacle_clearance_m: jax.Array
    touching: jax.Array


class NavigationTask:
    """Navigation among circular obstacles for a team of ground robots."""

    def __init__(self, config: NavigationConfig) -> None:
        self.config = config
        self.robot = ROBOTS.get(config.robot)
        self._scenario = SCENARIOS.get(config.scenario)

    @property
    def n(self) -> int:
        """Number of robots."""
        return self.config.robots

    def default_params(self) -> GroundParams:
        """Robotarium-like physical parameters (float32)."""
        return GroundParams(*(jnp.float32(v) for v in GroundParams()))

    def reset(self, key: jax.Array, params: GroundParams) -> NavState:
        """Lay out robots, goals and obstacles for the configured scenario.

        Goals are for the control point; for unicycles the initial pose is placed so that the
        control point starts at the scenario's start position.
        """
        c = self.config
        layout = self._scenario(key, c.robots, c.arena_m, c.max_obstacles)
        offset = self.robot.control_point(layout.pos, layout.yaw, params, jnp) - layout.pos
        state = NavState(
            pos=(layout.pos - offset).astype(jnp.float32),
            yaw=layout.yaw.astype(jnp.float32),
            goal=layout.goal.astype(jnp.float32),
            obstacles=layout.obstacles.astype(jnp.float32),
            obstacle_mask=layout.obstacle_mask,
            t=jnp.int32(0),
            reached_step=jnp.full((c.robots,), -1, jnp.int32),
        )
        return state

    def check_layout(
        self,
        key: jax.Array,
        params: GroundParams,
        safety_distance_m: float,
        max_robots: int = 512,
    ) -> None:
        """Refuse a layout that breaks the filter's margins, naming the largest team that fits.

        Runs eagerly (not under ``jit``): the scenario is laid out for ``key`` and checked by
        ``sim.layout.check_ground_layout`` with this robot model's margins.

        Raises:
            ValidationError: one line with the reason and the largest team size that fits.
        """
        from marl_robots.core.validate import ValidationError  # noqa: PLC0415
        from marl_robots.sim.layout import check_ground_layout  # noqa: PLC0415

        def problem(n: int) -> str | None:
            c = self.config
            try:
                layout = self._scenario(key, n, c.arena_m, c.max_obstacles)
                offset = self.robot.control_point(layout.pos, layout.yaw, params, jnp)
                offset = offset - layout.pos
                mask = np.asarray(layout.obstacle_mask)
                check_ground_layout(
                    self.robot,
                    params,
                    np.asarray(layout.pos - offset),
                    np.asarray(layout.yaw),
                    np.asarray(layout.goal),
                    np.asarray(layout.obstacles)[mask],
                    c.arena_bounds,
                    safety_distance_m,
                    what=f"scenario {c.scenario!r}",
                )
            except ValueError as err:
                return str(err)
            return None

        why = problem(self.n)
        if why is None:
            return
        # Binary search (layouts grow outwards with n, so fitting is monotone in practice);
        # the answer is re-checked, and only a size that really fits is named.
        lo, hi = 0, min(self.n, max_robots + 1)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if problem(mid) is None else (lo, mid)
        fits = lo if lo and problem(lo) is None else 0
        raise ValidationError(
            f"{why}; the largest {self.config.robot} team that fits is {fits}"
            if fits
            else why
        )

    def control_points(self, state: NavState, params: GroundParams) -> jax.Array:
        """Positions [n, 2] of the points that the filter and the goals refer to [m]."""
        return self.robot.control_point(state.pos, state.yaw, params, jnp)

    def metrics(self, state: NavState, params: GroundParams) -> StepMetrics:
        """Separation, collision and goal metrics of ``state``."""
        n = self.n
        diff = state.pos[:, None, :] - state.pos[None, :, :]
        dist = jnp.sqrt(jnp.sum(diff * diff, axis=-1) + jnp.eye(n) * 1e6)
        upper = jnp.triu(jnp.ones((n, n), bool), k=1)
        colliding = jnp.sum(upper & (dist < params.diameter_m))
        at_goal = (
            jnp.linalg.norm(self.control_points(state, params) - state.goal, axis=-1)
            <= self.config.goal_tolerance_m
        )
        od = jnp.linalg.norm(state.pos[:, None, :] - state.obstacles[None, :, :2], axis=-1)
        radius = 0.5 * params.diameter_m
        clearance = od - state.obstacles[None, :, 2] - radius
        clearance = jnp.where(state.obstacle_mask[None, :], clearance, jnp.inf)  # [n, O]
        x0, x1, y0, y1 = self.config.arena_bounds
        x, y = state.pos[:, 0], state.pos[:, 1]
        wall = jnp.minimum(jnp.minimum(x - x0, x1 - x), jnp.minimum(y - y0, y1 - y)) - radius
        touching = (jnp.min(clearance, axis=-1, initial=jnp.inf) < 0) | (wall < 0)
        min_sep = jnp.min(dist) if n > 1 else jnp.float32(jnp.inf)
        return StepMetrics(min_sep, colliding, at_goal, jnp.min(clearance), touching)

    def step(self, state: NavState, action: jax.Array, params: GroundParams):
        """Apply ``action`` [n, 2] for one period.

        Returns:
            ``(next_state, StepMetrics of next_state)``.
        """
        pos, yaw = self.robot.step(state.pos, state.yaw, action, params, self.config.dt_s, jnp)
        nxt = state._replace(pos=pos, yaw=yaw, t=state.t + 1)
        m = self.metrics(nxt, params)
        reached = jnp.where((state.reached_step < 0) & m.at_goal, nxt.t, state.reached_step)
        return nxt._replace(reached_step=reached), m
