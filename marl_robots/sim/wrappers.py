"""Wrappers around an env that follows the ``sim.env`` contract (brax ``Wrapper`` pattern).

A wrapper holds the inner env and has the same ``reset(key, params)`` / ``step(state, action,
params)`` signature; unknown attributes are forwarded to the inner env.  Training stacks them
as ``AutoReset(SafetyFilter(Vmap(Episode(env, L), E)))``:

* ``Episode`` - counts steps in ``info['steps']`` and truncates episodes at a length L
  (``info['truncation']`` tells truncation from termination, for value bootstrapping).
* ``Vmap`` - E environments at once: ``reset`` takes one key (split E ways) or E keys; params
  are shared (``in_axes=None``) unless ``batched_params=True`` (domain randomisation).
* ``SafetyFilter`` - every command passes the CBF safety filter before it reaches the inner
  env.  The action is either the nominal control-point velocity [..., n, d] or a dict
  ``{"u": [..., n, d], "gamma": [..., n]}`` whose per-robot class-K gains are clipped to
  ``gamma_bounds`` (part of the filter's contract: no policy output can break safety).  Works
  on one env or on a batch (one batched filter call, so that the rarely needed relaxed solve
  is skipped for the whole batch when no robot needs it).  ``FilterInfo`` lands in
  ``cost['intervention']``, ``cost['deviation']`` and the metrics.
* ``AutoReset`` - a finished episode restarts with a fresh key (from ``info['reset_key']``);
  the returned state carries the finished step's reward, cost, done and metrics, the new
  episode's observation, and the finished episode's last one in ``info['final_obs']``.
* ``Mix`` - several batched stacks side by side on the env axis (one per scenario, say): their
  states must have the same structure and shapes; each part's envs step with their own stack.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from marl_robots.controllers.safety_filter import (
    FilterConfig,
    FilterStatus,
    World,
    filter_robots,
    pair_order,
)
from marl_robots.core import defaults
from marl_robots.sim.env import State

#: Bounds on a policy's per-robot class-K gain [1/s] (``core.defaults.GAMMA_BOUNDS``).
GAMMA_BOUNDS = defaults.GAMMA_BOUNDS


class Wrapper:
    """Base wrapper: forwards ``reset``, ``step`` and attributes to the inner env."""

    def __init__(self, env) -> None:
        self.env = env

    def reset(self, key: jax.Array, params) -> State:
        return self.env.reset(key, params)

    def step(self, state: State, action, params) -> State:
        return self.env.step(state, action, params)

    @property
    def unwrapped(self):
        """The innermost env."""
        return getattr(self.env, "unwrapped", self.env)

    def __getattr__(self, name: str) -> Any:
        if name == "env":
            raise AttributeError(name)
        return getattr(self.env, name)


class Episode(Wrapper):
    """Truncate episodes at ``episode_length`` steps."""

    def __init__(self, env, episode_length: int) -> None:
        super().__init__(env)
        if episode_length < 1:
            raise ValueError(f"episode_length must be positive, got {episode_length}")
        self.episode_length = episode_length

    def reset(self, key, params) -> State:
        state = self.env.reset(key, params)
        info = {**state.info, "steps": jnp.int32(0), "truncation": jnp.bool_(False)}
        return state.replace(info=info)

    def step(self, state, action, params) -> State:
        steps = state.info["steps"] + 1
        nxt = self.env.step(state, action, params)
        truncation = (steps >= self.episode_length) & ~nxt.done
        info = {**nxt.info, "steps": steps, "truncation": truncation}
        return nxt.replace(done=nxt.done | truncation, info=info)


class Vmap(Wrapper):
    """``num_envs`` environments in one call."""

    def __init__(self, env, num_envs: int, batched_params: bool = False) -> None:
        super().__init__(env)
        self.num_envs = num_envs
        self._p_axis = 0 if batched_params else None

    def reset(self, key, params) -> State:
        keys = jax.random.split(key, self.num_envs) if key.ndim == 1 else key
        return jax.vmap(self.env.reset, in_axes=(0, self._p_axis))(keys, params)

    def step(self, state, action, params) -> State:
        return jax.vmap(self.env.step, in_axes=(0, 0, self._p_axis))(state, action, params)


@dataclass(frozen=True)
class _Cmd:
    u: jax.Array
    gamma: jax.Array | None


def split_action(action) -> _Cmd:
    """Velocity and optional per-robot gain of an action (array or ``{"u", "gamma"}`` dict)."""
    if isinstance(action, dict):
        return _Cmd(action["u"], action.get("gamma"))
    return _Cmd(action, None)


class SafetyFilter(Wrapper):
    """Pass every command through the CBF safety filter (decentralised mode).

    Args:
        env: inner env (one env or a ``Vmap`` batch).
        config: ``FilterConfig``; default: linear class-K, clipped with the env's ``dt``.
        gamma_bounds: (low, high) clip of gains that come from the action [1/s].
    """

    def __init__(self, env, config: FilterConfig | None = None, gamma_bounds=GAMMA_BOUNDS):
        super().__init__(env)
        dt = env.unwrapped.config.task.dt_s
        self.filter_config = config or FilterConfig(dt_s=dt)
        if self.filter_config.mode != "decentralised":
            raise ValueError("the env's safety filter runs the decentralised mode")
        lo, hi = gamma_bounds
        if not 0 < lo <= hi < float("inf"):
            raise ValueError(
                f"gamma_bounds must satisfy 0 < low <= high < inf, got {gamma_bounds}"
            )
        self.gamma_bounds = (float(lo), float(hi))

    def _zero_terms(self, state: State) -> State:
        zeros = jnp.zeros(state.task.pos.shape[:-1], jnp.float32)
        lead = zeros.shape[:-1]
        cost = {**state.cost, "intervention": zeros, "deviation": zeros}
        metrics = {
            **state.metrics,
            "interventions": jnp.zeros(lead, jnp.float32),
            "qp_relaxed": jnp.zeros(lead, jnp.float32),
            "qp_infeasible": jnp.zeros(lead, jnp.float32),
        }
        info = {**state.info, "filter_status": zeros.astype(jnp.int32)}
        return state.replace(cost=cost, metrics=metrics, info=info)

    def reset(self, key, params) -> State:
        return self._zero_terms(self.env.reset(key, params))

    def filter(self, state: State, action, params):
        """Safe control-point velocity [..., n, d] and ``FilterInfo`` for ``action``."""
        cmd = split_action(action)
        s, ts = state.sensing, state.task
        gamma = params.cbf.gamma
        if cmd.gamma is not None:
            gamma = jnp.clip(cmd.gamma, *self.gamma_bounds)
        cbf = params.cbf._replace(gamma=jnp.broadcast_to(gamma, s.points.shape[:-1]))
        arena = jnp.asarray(self.unwrapped.config.task.arena_bounds, jnp.float32)
        world = World(ts.obstacles[..., None, :, :], ts.obstacle_mask[..., None, :], arena)
        limits = self.unwrapped.task.robot.limits(ts.yaw.reshape(-1), params.robot, jnp)
        limits = jax.tree_util.tree_map(lambda x: x.reshape(ts.yaw.shape + x.shape[1:]), limits)
        u_cmd = jnp.asarray(cmd.u, jnp.float32)
        order, extra = self._pair_rows(state, cbf, params)
        return filter_robots(
            s.points,
            u_cmd,
            s.nbr,
            s.graph.mask,
            world,
            cbf,
            limits,
            self.filter_config,
            jnp,
            order,
            extra,
        )

    def _pair_rows(self, state: State, cbf, params):
        """Pair order and the robot model's extra body rows, as the closed loop builds them."""
        robot, f = self.unwrapped.task.robot, self.filter_config
        s, ts = state.sensing, state.task

        def one(pos, yaw, points, index, mask, gamma):
            extra = robot.body_rows(
                pos,
                yaw,
                points,
                index,
                mask,
                cbf._replace(gamma=gamma),
                f.class_k,
                f.dt_s,
                params.robot,
                jnp,
            )
            return pair_order(index, jnp), extra

        args = (ts.pos, ts.yaw, s.points, s.graph.index, s.graph.mask, cbf.gamma)
        for _ in range(ts.yaw.ndim - 1):  # leading batch axes
            one = jax.vmap(one)
        return one(*args)

    def step(self, state: State, action, params) -> State:
        u_cmd = split_action(action).u
        u, info = self.filter(state, action, params)
        nxt = self.env.step(state, u, params)
        v_max = params.robot.v_max
        dev = jnp.linalg.norm(jnp.where(jnp.isfinite(u_cmd), u_cmd, 0.0) - u, axis=-1) / v_max
        cost = {
            **nxt.cost,
            "intervention": info.intervened.astype(jnp.float32),
            "deviation": dev.astype(jnp.float32),
        }
        metrics = {
            **nxt.metrics,
            "interventions": jnp.sum(info.intervened, axis=-1).astype(jnp.float32),
            "qp_relaxed": jnp.sum(info.status == FilterStatus.RELAXED, -1).astype(jnp.float32),
            "qp_infeasible": jnp.sum(info.status >= FilterStatus.INFEASIBLE, -1).astype(
                jnp.float32
            ),
        }
        info_d = {**nxt.info, "filter_status": info.status.astype(jnp.int32)}
        return nxt.replace(cost=cost, metrics=metrics, info=info_d)


def _select(done, new, old):
    def pick(a, b):
        mask = jnp.reshape(done, done.shape + (1,) * (a.ndim - done.ndim))
        return jnp.where(mask, a, b)

    return jax.tree_util.tree_map(pick, new, old)


class AutoReset(Wrapper):
    """Restart finished episodes with a fresh key (one env or a batch)."""

    def reset(self, key, params) -> State:
        state = self.env.reset(key, params)
        lead = state.done.shape
        base = jax.random.fold_in(key if key.ndim == 1 else key[0], 1)
        keys = jax.random.split(base, lead[0]) if lead else base
        return state.replace(info={**state.info, "reset_key": keys, "final_obs": state.obs})

    def step(self, state, action, params) -> State:
        nxt = self.env.step(state, action, params)
        keys = state.info["reset_key"]
        flat = keys.reshape(-1, 2)
        split = jax.vmap(jax.random.split)(flat)  # [B, 2, 2]
        new_keys, use = split[:, 0].reshape(keys.shape), split[:, 1].reshape(keys.shape)
        fresh = self.env.reset(use, params)
        done = nxt.done
        task = _select(done, fresh.task, nxt.task)
        sensing = _select(done, fresh.sensing, nxt.sensing)
        obs = _select(done, fresh.obs, nxt.obs)
        info = dict(nxt.info)
        for name in ("steps", "filter_status"):
            if name in info:
                info[name] = _select(done, fresh.info[name], nxt.info[name])
        info["reset_key"] = new_keys
        info["final_obs"] = nxt.obs  # the finished episode's last observation (bootstrapping)
        return nxt.replace(task=task, sensing=sensing, obs=obs, info=info)


def _concat(states):
    return jax.tree_util.tree_map(lambda *xs: jnp.concatenate(xs, axis=0), *states)


class Mix(Wrapper):
    """Batched env stacks side by side on the leading env axis (e.g. one stack per scenario).

    ``envs[i]`` runs ``sizes[i]`` environments; the state is the concatenation of the parts'
    states along axis 0 (they must share structure and per-env shapes: same robot count,
    observation layout and obstacle budget), so the caller sees one batch of ``sum(sizes)``
    envs.  ``step`` slices each part's envs and actions and steps them with their own stack
    (its own layouts on reset).  Attributes forward to ``envs[0]``.
    """

    def __init__(self, envs, sizes) -> None:
        if len(envs) != len(sizes) or not envs:
            raise ValueError("Mix needs one size per env stack")
        super().__init__(envs[0])
        self.envs = tuple(envs)
        self.sizes = tuple(int(m) for m in sizes)
        self.num_envs = sum(self.sizes)

    def _parts(self, tree):
        starts = [sum(self.sizes[:i]) for i in range(len(self.sizes))]
        return [
            jax.tree_util.tree_map(lambda x, a=a, m=m: x[a : a + m], tree)
            for a, m in zip(starts, self.sizes)
        ]

    def reset(self, key, params) -> State:
        keys = jax.random.split(key, len(self.envs))
        return _concat([e.reset(k, params) for e, k in zip(self.envs, keys)])

    def step(self, state, action, params) -> State:
        parts = zip(self.envs, self._parts(state), self._parts(action))
        return _concat([e.step(s, a, params) for e, s, a in parts])
