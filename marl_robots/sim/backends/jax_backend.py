"""Pure-JAX backend: ``sim.robots.quadrotor.step`` under ``jit``; rollouts are one ``lax.scan``.

For training, call ``quadrotor.step`` (or ``make_step``) directly inside your own jitted
program and ``vmap`` it over environments and parameters; this class is the stateful wrapper
that the benchmark and the cross-backend tests drive.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from marl_robots.sim.backends.base import DEFAULT_DT_S, as_numpy_state, check_action
from marl_robots.sim.robots import crazyflie_params as cf
from marl_robots.sim.robots import quadrotor
from marl_robots.sim.robots.quadrotor import AERO_OFF, Aero, QuadState


def make_step(params: cf.QuadParams, dt: float, aero: Aero = AERO_OFF):
    """``step(state, action) -> state`` in ``jax.numpy`` with ``params`` closed over."""

    def step(state: QuadState, action) -> QuadState:
        return quadrotor.step(state, action, params, dt, aero, jnp)

    return step


def make_rollout(params: cf.QuadParams, dt: float, aero: Aero = AERO_OFF):
    """``rollout(state, actions [T, n, 4]) -> states [T, ...]`` as one ``lax.scan``."""
    step = make_step(params, dt, aero)

    def rollout(state: QuadState, actions) -> QuadState:
        def body(s, a):
            s = step(s, a)
            return s, s

        return jax.lax.scan(body, state, actions)[1]

    return rollout


class JaxBackend:
    """``n`` drones stepped by the pure-JAX dynamics (float32 by default)."""

    name = "jax"

    def __init__(
        self,
        n: int,
        params: cf.QuadParams | None = None,
        dt: float = DEFAULT_DT_S,
        aero: Aero = AERO_OFF,
        dtype=jnp.float32,
    ) -> None:
        self.n, self.dt, self.aero, self.dtype = n, dt, aero, dtype
        self.params = params if params is not None else cf.crazyflie_params()
        self._jparams = jax.tree.map(lambda x: jnp.asarray(x, dtype), self.params)
        self._step = jax.jit(make_step(self._jparams, dt, aero))
        self._rollout = jax.jit(make_rollout(self._jparams, dt, aero))
        self._state = quadrotor.hover_state(jnp.zeros((n, 3), dtype), self._jparams, jnp)

    def _to_device(self, state: QuadState) -> QuadState:
        return QuadState(*(jnp.asarray(x, self.dtype) for x in state))

    def reset(self, state: QuadState) -> None:
        self._state = self._to_device(state)

    def step(self, action) -> QuadState:
        action = jnp.asarray(check_action(action, self.n), self.dtype)
        self._state = self._step(self._state, action)
        return self.get_state()

    def get_state(self) -> QuadState:
        return as_numpy_state(self._state)

    def rollout(self, state: QuadState, actions) -> QuadState:
        actions = np.asarray(actions)
        if actions.ndim != 3 or actions.shape[1:] != (self.n, cf.ROTORS):
            raise ValueError(f"expected actions [T, {self.n}, 4], got {actions.shape}")
        out = self._rollout(self._to_device(state), jnp.asarray(actions, self.dtype))
        return as_numpy_state(out)


@functools.cache
def batched_rollout(n: int, steps: int, dt: float, aero: Aero = AERO_OFF):
    """The throughput kernel of the benchmark (float32), jitted and vmapped.

    ``(states [B, n, ...], action [B, n, 4]) -> final states``, holding the action for
    ``steps`` steps.
    """
    params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), cf.crazyflie_params())
    step = make_step(params, dt, aero)

    def one(state, action):
        return jax.lax.fori_loop(0, steps, lambda _, s: step(s, action), state)

    return jax.jit(jax.vmap(one))
