"""Attention GNN over the padded neighbour graph, and the ``gnn`` / ``cbf-tuning`` policies.

The network runs on one robot's observation (``sim.env.ObsLayout``): its own features (goal
offset, velocity, wall distances) are embedded to ``h_i``; every sensed neighbour j and nearest
obstacle o becomes an entity with a message ``m_ij = MLP([h_i, e_j])`` (neighbours and
obstacles have their own encoders); a masked attention softmax over the entities pools the
messages, and an MLP of ``[h_i, pooled]`` gives the output.  Hence

* decentralised - robot i's output depends only on its own observation row,
* permutation-invariant in the neighbours (and the obstacles), padded slots ignored (the
  masks come from the raw observation's 0/1 flags, ``entity_mask``; normalised, the flags are
  no longer 0/1),
* any robot count - the weights do not depend on n.

Policies (both bounded, so that no network output leaves the filter's contract):

* ``GNNPolicy`` (``gnn``) - raw action a in R^d, command ``u = v_max tanh(a)``: a nominal
  control-point velocity, always filtered.  With ``residual = r > 0`` the command is the
  cooperative go-to-goal plus a learned correction, ``clip(u_gtg + r v_max tanh(a), +-v_max)``
  (go-to-goal is computed from the same local observation: still decentralised).
* ``CBFTuningPolicy`` (``cbf-tuning``) - raw action a in R, per-robot class-K gain
  ``gamma = exp(log lo + (log hi - log lo) sigmoid(a + a0))`` within
  ``wrappers.GAMMA_BOUNDS`` (a0 puts the untrained policy at the default gain), with the
  cooperative go-to-goal as the command.

Learned params: ``{"net": flax params, "log_std": [a], "obs_mean": [obs_dim],
"obs_std": [obs_dim]}``; observations are normalised with the training statistics inside
``apply``, so a saved params pytree is the whole deployable policy.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from marl_robots.policies.heuristic import go_to_goal_from_obs, nominal_params
from marl_robots.sim.env import DEFAULT_GAMMA, ObsLayout
from marl_robots.sim.wrappers import GAMMA_BOUNDS

HIDDEN = 32
#: Initial standard deviation of the raw action.
INIT_STD = 0.5


class _SplitDense(nn.Module):
    """``nn.Dense`` on ``[h broadcast over entities, e]`` computed as ``h W_h + e W_e + b``.

    Same parameters (``kernel`` [2H, H], ``bias`` [H]) and the same function as a Dense on the
    concatenation, but ``h W_h`` is computed once per robot instead of once per entity.
    """

    features: int

    @nn.compact
    def __call__(self, h: jax.Array, e: jax.Array) -> jax.Array:
        """Map h [..., H] and e [..., E, H'] to [..., E, features]."""
        kernel = self.param(
            "kernel", nn.initializers.lecun_normal(), (h.shape[-1] + e.shape[-1], self.features)
        )
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        hw = h @ kernel[: h.shape[-1]] + bias
        return hw[..., None, :] + e @ kernel[h.shape[-1] :]


class GNN(nn.Module):
    """Attention message passing from one robot's observation to ``out_dim`` outputs.

    Attributes:
        layout: observation layout; out_dim: output size; hidden: width.
        out_scale: scale of the output layer's initial weights (small: near-zero outputs).
    """

    layout: ObsLayout
    out_dim: int
    hidden: int = HIDDEN
    out_scale: float = 0.01

    @nn.compact
    def __call__(
        self, obs: jax.Array, mask: jax.Array, extra: jax.Array | None = None
    ) -> jax.Array:
        """Map obs [..., obs_dim] (normalised) -> [..., out_dim].

        Args:
            obs: normalised observation [..., obs_dim].
            mask: [..., k + m] bool, which entity slots are real (``entity_mask`` of the *raw*
                observation: after normalisation the 0/1 flags no longer read as 0/1).
            extra: optional [..., e] joined to the robot's own features.
        """
        parts = [obs[..., : self.layout.self_dim]]
        if extra is not None:
            parts.append(extra)
        h = nn.tanh(nn.Dense(self.hidden, name="self_in")(jnp.concatenate(parts, -1)))
        h = nn.tanh(nn.Dense(self.hidden, name="self_hidden")(h))
        # Entity features (the normalised observation's neighbour and obstacle slots).
        k, m = self.layout.k, self.layout.m
        lead = obs.shape[:-1]
        i0 = self.layout.self_dim
        nbr = obs[..., i0 : i0 + k * self.layout.nbr_dim].reshape(lead + (k, -1))
        i1 = i0 + k * self.layout.nbr_dim
        obst = obs[..., i1 : i1 + m * self.layout.obst_dim].reshape(lead + (m, -1))
        ents = [nn.Dense(self.hidden, name="nbr_in")(nbr)]
        if m:
            ents.append(nn.Dense(self.hidden, name="obst_in")(obst))
        e = jnp.concatenate(ents, axis=-2)
        msg = nn.tanh(_SplitDense(self.hidden, name="msg")(h, nn.tanh(e)))
        logits = nn.Dense(1, name="attn")(msg)[..., 0]
        logits = jnp.where(mask, logits, -1e9)
        w = jnp.exp(logits - jax.lax.stop_gradient(jnp.max(logits, -1, keepdims=True))) * mask
        w = w / jnp.maximum(jnp.sum(w, -1, keepdims=True), 1e-9)
        # sum_j w_j (W m_j + b) computed as W (sum_j w_j m_j) + b sum_j w_j: the same function
        # and parameters as a Dense on every message, one matmul per robot instead of per entity.
        mixed = jnp.sum(w[..., None] * msg, axis=-2)
        value = nn.Dense(self.hidden, name="value")
        pooled = (
            value(mixed)
            + (jnp.sum(w, -1, keepdims=True) - 1.0) * value.variables["params"]["bias"]
        )
        z = nn.tanh(nn.Dense(self.hidden, name="out_hidden")(jnp.concatenate([h, pooled], -1)))
        init = nn.initializers.variance_scaling(self.out_scale, "fan_in", "truncated_normal")
        return nn.Dense(self.out_dim, kernel_init=init, name="out")(z)


def entity_mask(layout: ObsLayout, obs: jax.Array) -> jax.Array:
    """Which entity slots are real: [..., k + m] bool from the *raw* observation [..., dim].

    Neighbour slots first, then obstacle slots (the order of the GNN's entities).
    """
    o = layout.split(obs)
    return jnp.concatenate([o["nbr_mask"], o["obst_mask"]], axis=-1)


class _Learned:
    """Shared parts of the learned policies (see the module docstring)."""

    learned = True
    raw_dim: int

    def __init__(self, env, env_params=None, hidden: int = HIDDEN) -> None:
        self.layout: ObsLayout = env.obs_layout
        p = env_params if env_params is not None else env.default_params()
        self.v_max = p.robot.v_max
        self.hidden = hidden
        self.net = GNN(self.layout, self.raw_dim, hidden=hidden)

    def kwargs(self) -> dict:
        """The constructor options that a saved bundle needs to rebuild this policy."""
        return {"hidden": self.hidden}

    def init(self, key: jax.Array) -> dict:
        """Fresh params (identity observation normalisation)."""
        obs = jnp.zeros((1, self.layout.dim), jnp.float32)
        return {
            "net": self.net.init(key, obs, entity_mask(self.layout, obs)),
            "log_std": jnp.full((self.raw_dim,), math.log(INIT_STD), jnp.float32),
            "obs_mean": jnp.zeros((self.layout.dim,), jnp.float32),
            "obs_std": jnp.ones((self.layout.dim,), jnp.float32),
        }

    def normalise(self, params: dict, obs: jax.Array) -> jax.Array:
        """Observation standardised with the params' statistics, clipped to +-10."""
        return jnp.clip((obs - params["obs_mean"]) / params["obs_std"], -10.0, 10.0)

    def distribution(self, params: dict, obs: jax.Array):
        """Gaussian over the raw action: mean [..., n, a], log_std [a]."""
        mean = self.net.apply(
            params["net"], self.normalise(params, obs), entity_mask(self.layout, obs)
        )
        return mean, params["log_std"]

    def apply(self, params: dict, obs: jax.Array):
        """Deterministic (mean) action for obs [..., n, obs_dim]."""
        mean, _ = self.distribution(params, obs)
        return self.to_action(mean, obs)


class GNNPolicy(_Learned):
    """``gnn``: the network's command ``v_max tanh(a)`` [..., n, d] [m/s]."""

    name = "gnn"

    def __init__(self, env, env_params=None, hidden: int = HIDDEN, residual: float = 0.0):
        """``residual`` > 0: the command is go-to-goal plus ``residual * v_max tanh(a)``."""
        self.raw_dim = env.obs_layout.d
        super().__init__(env, env_params, hidden)
        if not 0.0 <= residual <= 2.0:
            raise ValueError(f"residual must lie in [0, 2], got {residual}")
        self.residual = float(residual)
        self.nominal = nominal_params(env, env_params) if residual else None

    def kwargs(self) -> dict:
        return {**super().kwargs(), "residual": self.residual}

    def to_action(self, raw: jax.Array, obs: jax.Array) -> jax.Array:
        """Bounded control-point velocity [..., n, d]: each component within +-v_max.

        Plain: ``v_max tanh(a)``.  Residual: ``clip(go_to_goal(obs) + residual v_max tanh(a),
        -v_max, v_max)`` - still a function of robot i's own observation only.
        """
        if not self.residual:
            return self.v_max * jnp.tanh(raw)
        base = go_to_goal_from_obs(self.layout, self.nominal, obs)
        u = base + self.residual * self.v_max * jnp.tanh(raw)
        return jnp.clip(u, -self.v_max, self.v_max)


class CBFTuningPolicy(_Learned):
    """``cbf-tuning``: per-robot class-K gain in ``GAMMA_BOUNDS`` around go-to-goal."""

    name = "cbf-tuning"
    raw_dim = 1

    def __init__(self, env, env_params=None, bounds=GAMMA_BOUNDS, hidden: int = HIDDEN):
        super().__init__(env, env_params, hidden)
        self.bounds = bounds
        self.nominal = nominal_params(env, env_params)
        lo, hi = math.log(bounds[0]), math.log(bounds[1])
        frac = (math.log(DEFAULT_GAMMA) - lo) / (hi - lo)
        self._offset = math.log(frac / (1.0 - frac))

    def gamma(self, raw: jax.Array) -> jax.Array:
        """Gain [..., n] [1/s] for raw actions [..., n, 1]: always inside the bounds."""
        lo, hi = math.log(self.bounds[0]), math.log(self.bounds[1])
        return jnp.exp(lo + (hi - lo) * jax.nn.sigmoid(raw[..., 0] + self._offset))

    def to_action(self, raw: jax.Array, obs: jax.Array) -> dict:
        """``{"u": go-to-goal [..., n, d], "gamma": [..., n]}``."""
        return {"u": go_to_goal_from_obs(self.layout, self.nominal, obs), "gamma": self.gamma(raw)}
