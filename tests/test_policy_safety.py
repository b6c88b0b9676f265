"""No policy output can break safety: hypothesis-generated raw outputs, both learned kinds.

Each example drives 8 unicycles in ``corridor`` (two groups head-on through a 0.35 m gap
between two large obstacles, inside the arena walls) for ``STEPS`` steps with raw policy
outputs chosen by hypothesis: Gaussian noise of any scale, saturated extremes, bang-bang
switching every step, non-finite values, and for ``gnn`` (plain, and as a residual around
go-to-goal) an adversarial mode that commands
every robot at full speed towards its nearest neighbour.  The raw outputs go through the
policy's own bounded map (``to_action``) and the env's safety filter, as in training and
deployment.  Asserted: no robot pair ever closer than the safety distance between centres
(so no collision), no body touching an obstacle.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from marl_robots.policies import POLICIES
from marl_robots.sim import wrappers as wr
from marl_robots.sim.closed_loop import SAFETY_DISTANCE_M
from marl_robots.sim.env import EnvConfig, NavigationEnv
from marl_robots.sim.tasks.navigation import NavigationConfig

STEPS = 250
N = 8
#: Float32 slack on distances [m] (the unicycle's look-ahead map adds float-level error).
DIST_ATOL_M = 1e-4
MODES = ("gaussian", "extreme", "bang_bang", "non_finite", "adversarial")

_CACHE: dict = {}


def _runner(kind: str):
    if kind in _CACHE:
        return _CACHE[kind]
    base = NavigationEnv(EnvConfig(task=NavigationConfig(robots=N, scenario="corridor")))
    env = wr.SafetyFilter(base)
    params = base.default_params()
    if kind == "gnn-residual":  # go-to-goal plus a full-authority learned correction
        policy = POLICIES.get("gnn")(base, params, residual=1.0)
    else:
        policy = POLICIES.get(kind)(base, params)
    lay = base.obs_layout

    def run(raw_seq, adversarial):
        s0 = env.reset(jax.random.PRNGKey(0), params)

        def body(s, raw):
            if kind.startswith("gnn"):
                o = lay.split(s.obs)
                to_nbr = o["nbr_pos"][:, 0] + 1e-6
                ram = 1e3 * to_nbr / jnp.linalg.norm(to_nbr, axis=-1, keepdims=True)
                raw = jnp.where(adversarial, ram, raw)
            s = env.step(s, policy.to_action(raw, s.obs), params)
            p = s.sensing.points
            d = jnp.linalg.norm(p[:, None] - p[None], axis=-1) + 1e3 * jnp.eye(N)
            out = (s.metrics["min_separation_m"], s.metrics["obstacle_clearance_m"], d.min())
            return s, out

        _, (sep, clear, point_sep) = jax.lax.scan(body, s0, raw_seq)
        return jnp.min(sep), jnp.min(clear), jnp.min(point_sep)

    _CACHE[kind] = (jax.jit(run), policy.raw_dim)
    return _CACHE[kind]


def _raw_sequence(mode: str, seed: int, scale: float, dim: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (STEPS, N, dim)
    if mode == "gaussian":
        return (scale * rng.standard_normal(shape)).astype(np.float32)
    if mode == "extreme":
        return (1e6 * np.sign(rng.standard_normal(shape))).astype(np.float32)
    if mode == "bang_bang":
        sign = np.where(np.arange(STEPS) % 2 == 0, 1.0, -1.0)[:, None, None]
        return (1e4 * sign * np.ones(shape)).astype(np.float32)
    if mode == "non_finite":
        raw = scale * rng.standard_normal(shape)
        bad = rng.random(shape) < 0.1
        return np.where(bad, rng.choice([np.nan, np.inf, -np.inf], shape), raw).astype(np.float32)
    return np.zeros(shape, np.float32)  # adversarial: built inside the loop


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ["gnn", "gnn-residual", "cbf-tuning"])
@settings(
    max_examples=4,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    seed=st.integers(0, 2**16),
    scale=st.floats(0.01, 100.0),
)
def test_bounded_outputs_never_break_safety(kind, mode, seed, scale):
    run, dim = _runner(kind)
    raw = _raw_sequence(mode, seed, scale, dim)
    sep, clear, _ = run(jnp.asarray(raw), jnp.bool_(mode == "adversarial"))
    assert float(sep) >= SAFETY_DISTANCE_M - DIST_ATOL_M, (mode, float(sep))
    assert float(clear) >= -DIST_ATOL_M, (mode, float(clear))


@pytest.mark.parametrize("kind", ["gnn", "cbf-tuning"])
def test_safety_property_is_not_vacuous(kind):
    """Adversarial (gnn) or most aggressive (cbf-tuning) outputs reach the filter's boundary.

    The filter keeps control points (0.04 m ahead of the axle) ``0.13 + 2 * 0.04`` m apart.
    """
    run, dim = _runner(kind)
    raw = _raw_sequence("extreme", 1, 1.0, dim)
    if kind == "cbf-tuning":
        raw = np.abs(raw)  # the largest gain everywhere
    _, _, point_sep = run(jnp.asarray(raw), jnp.bool_(kind == "gnn"))
    assert float(point_sep) < SAFETY_DISTANCE_M + 2 * 0.04 + 0.01
