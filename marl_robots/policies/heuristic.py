"""Hand-written policies on the env's observation: the cooperative go-to-goal.

``GoToGoal`` is ``controllers.nominal.cooperative_go_to_goal`` evaluated in each robot's own
frame (translation to the robot's control point): everything it needs - goal offset,
neighbours' relative positions, nearest obstacles - is in the observation, so it is a
decentralised policy like any learned one.  Its constants (gain, bias, distances, speed) are
its params, taken from the closed loop's defaults and the env's filter parameters, so that it
commands what ``marl-robots sim`` commands.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from marl_robots.controllers import nominal
from marl_robots.sim.closed_loop import ControlConfig


class NominalParams(NamedTuple):
    """Constants of the cooperative go-to-goal (see ``nominal.cooperative_go_to_goal``).

    Attributes:
        safety_distance: filter distance between control points [m].
        obstacle_margin: clearance the filter keeps from obstacle surfaces [m].
        gain: go-to-goal gain [1/s]; v_max: speed cap [m/s]; make_way_radius: [m].

    The right-hand bias and the step-aside speed switch code paths, so they are static (the
    ``ControlConfig`` held by the policy), not params.
    """

    safety_distance: jax.Array
    obstacle_margin: jax.Array
    gain: jax.Array
    v_max: jax.Array
    make_way_radius: jax.Array


CONTROL_DEFAULTS = ControlConfig()


def nominal_params(env, env_params=None, control: ControlConfig = CONTROL_DEFAULTS):
    """``NominalParams`` from the closed loop's defaults and the env's parameters."""
    p = env_params if env_params is not None else env.default_params()
    return NominalParams(
        safety_distance=p.cbf.safety_distance,
        obstacle_margin=p.cbf.obstacle_margin,
        gain=jnp.float32(control.goal_gain),
        v_max=p.robot.v_max,
        make_way_radius=jnp.float32(control.make_way_radius_m),
    )


def go_to_goal_from_obs(
    layout, params: NominalParams, obs: jax.Array, control: ControlConfig = CONTROL_DEFAULTS
) -> jax.Array:
    """Cooperative go-to-goal velocity [..., n, d] [m/s] from observations [..., n, obs_dim]."""
    o = layout.split(obs)
    points = jnp.zeros_like(o["goal"])
    obstacles = jnp.concatenate([o["obst_pos"], o["obst_radius"][..., None]], axis=-1)
    return nominal.cooperative_go_to_goal(
        points,
        o["goal"],
        o["nbr_pos"],
        o["nbr_mask"],
        obstacles,
        o["obst_mask"],
        params.safety_distance,
        params.obstacle_margin,
        params.gain,
        params.v_max,
        control.bias,
        control.make_way,
        params.make_way_radius,
        xp=jnp,
    )


class GoToGoal:
    """Parameter-free cooperative go-to-goal (the policy of ``marl-robots sim``)."""

    name = "go-to-goal"
    learned = False

    def __init__(self, env, env_params=None) -> None:
        self.layout = env.obs_layout
        self._params = nominal_params(env, env_params)

    def init(self, key: jax.Array | None = None) -> NominalParams:
        """The constants (no randomness; ``key`` is accepted for a uniform interface)."""
        del key
        return self._params

    def apply(self, params: NominalParams, obs: jax.Array) -> jax.Array:
        """Control-point velocity [..., n, d] [m/s]."""
        return go_to_goal_from_obs(self.layout, params, obs)


class YieldParams(NamedTuple):
    """Constants of ``CorridorYield`` (lengths [m], gains [1/s], speeds [m/s]).

    Attributes:
        lane: lateral offset of the keep-right lane from the gap's centre line.
        lane_gain: gain pulling the robot onto its lane.
        zone: half-width (along x) of the region around the gap where the rule acts.
        neck: half-length (along x) of the bottleneck.
        oncoming_speed: a neighbour moving towards the robot faster than this is oncoming.
        far: how far beyond the gap an oncoming neighbour still makes the robot yield.
        hold_x, hold_y: waiting spot, before the gap and on the robot's right.
        hold_gain: gain towards the waiting spot.
        gap_max: the rule acts only where the two sensed obstacles leave a gap (surface to
            surface) narrower than this; elsewhere the command is go-to-goal.
        goal_radius: within this distance of its goal a robot follows go-to-goal.
    """

    lane: float = 0.06
    lane_gain: float = 3.0
    zone: float = 1.0
    neck: float = 0.35
    oncoming_speed: float = 0.02
    far: float = 0.9
    hold_x: float = 0.7
    hold_y: float = 0.5
    hold_gain: float = 2.0
    gap_max: float = 0.6
    goal_radius: float = 0.25


class CorridorYield:
    """Hand-written *teacher* for the corridor: keep-right lane and yield at the gap.

    Not a learned policy: it knows the corridor's geometry (the gap is the midpoint of the
    two nearest sensed obstacles when they leave a narrow gap, traffic runs along x); away
    from such a gap, and near its goal, a robot follows the cooperative go-to-goal.  Near the
    gap a robot keeps a lane on its right; a robot heading -x waits on its right, before the
    gap, while an oncoming robot is in the bottleneck or approaching it from the far side; a
    robot heading +x yields only to an oncoming robot already in the bottleneck.  Everything
    comes from robot i's own observation (neighbours' absolute velocity = own velocity +
    relative velocity), so it is decentralised.  ``policies.imitation`` distils it into the
    ``gnn`` policy.
    """

    name = "corridor-yield"
    learned = False

    def __init__(self, env, env_params=None) -> None:
        self.layout = env.obs_layout
        if self.layout.m < 2 or self.layout.d != 2:
            raise ValueError("corridor-yield needs 2 obstacle slots in the plane")
        self._nominal = nominal_params(env, env_params)
        self.v_max = float(self._nominal.v_max)

    def init(self, key: jax.Array | None = None) -> YieldParams:
        """The rule's constants (``key`` accepted for a uniform interface)."""
        del key
        return YieldParams()

    def apply(self, params: YieldParams, obs: jax.Array) -> jax.Array:
        """Control-point velocity [..., n, 2] [m/s] within +-v_max per component."""
        q, v = params, self.v_max
        o = self.layout.split(obs)
        base = go_to_goal_from_obs(self.layout, self._nominal, obs)
        dirx = jnp.sign(o["goal"][..., 0])
        c0, c1 = o["obst_pos"][..., 0, :], o["obst_pos"][..., 1, :]
        gap = jnp.linalg.norm(c1 - c0, axis=-1) - o["obst_radius"][..., 0]
        gap = gap - o["obst_radius"][..., 1]
        at_goal = jnp.linalg.norm(o["goal"], axis=-1) < q.goal_radius
        active = o["obst_mask"][..., 0] & o["obst_mask"][..., 1] & (gap < q.gap_max) & ~at_goal
        me = -0.5 * (c0 + c1)  # own position relative to the gap's centre
        s = me[..., 0] * dirx  # progress along the own direction (< 0: before the gap)
        near = (jnp.abs(me[..., 0]) < q.zone) & active
        lateral = jnp.clip(q.lane_gain * (-q.lane * dirx - me[..., 1]), -v, v) * near
        lane_u = base + jnp.stack([jnp.zeros_like(lateral), lateral], -1)
        nbr = me[..., None, :] + o["nbr_pos"]
        nbr_vx = o["vel"][..., None, 0] + o["nbr_vel"][..., 0]
        ahead = nbr[..., 0] * dirx[..., None]
        in_neck = (jnp.abs(nbr[..., 0]) < q.neck) & (jnp.abs(nbr[..., 1]) < 0.3)
        coming = (ahead > 0) & (ahead < q.far) & (jnp.abs(nbr[..., 1]) < 0.5)
        oncoming = o["nbr_mask"] & (nbr_vx * dirx[..., None] < -q.oncoming_speed)
        threat = oncoming & (in_neck | coming)
        low = dirx < 0  # the -x stream gives way
        waits = (s < -0.05) & (s > -q.zone) & active
        yield_ = waits & jnp.where(low, jnp.any(threat, -1), jnp.any(threat & in_neck, -1))
        hold = jnp.stack([-dirx * q.hold_x, -dirx * q.hold_y], -1)
        hold_u = q.hold_gain * (hold - me)
        u = jnp.where(yield_[..., None], hold_u, lane_u)
        return jnp.clip(u, -v, v)
