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
