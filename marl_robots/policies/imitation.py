r"""Imitation pre-training (DAgger) of the residual ``gnn`` policy from a hand-written teacher.

    python -m marl_robots.policies.imitation --robots 8 --scenario corridor --out runs/x

The teacher is ``heuristic.CorridorYield`` (keep-right lane and yield at the gap).  Each
iteration rolls out ``--envs`` episodes of ``--steps`` steps behind the CBF filter, acting with
the teacher (first iteration) or with the student (later ones, DAgger: the states the student
visits, labelled with the teacher's action), with Gaussian noise of ``--noise`` x v_max on the
executed command so that the data covers recoveries; every visited robot-step is labelled with
the teacher's command on the same observation.  The student - the ``gnn`` policy with
``residual`` r, ``u = clip(go_to_goal + r v_max tanh(a))`` - is fitted to the aggregated data
by Adam on the mean squared error of its unclipped command ``go_to_goal + r v_max tanh(a)``
[m/s], with observation normalisation from the data.

The result is an ordinary policy folder (``policy/params.msgpack`` and ``policy.json``, the
``training`` block saying ``method: dagger`` and the teacher) that ``marl-robots eval``,
``export`` and ``ship`` read.  It is a policy *learned by imitation of a hand-written rule*,
not by reinforcement: say so wherever it is reported.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from marl_robots.policies.gnn import GNNPolicy
from marl_robots.policies.heuristic import CorridorYield, go_to_goal_from_obs
from marl_robots.policies.mappo import TrainConfig, save_policy
from marl_robots.policies.train import device_name
from marl_robots.sim import wrappers as wr
from marl_robots.sim.env import NavigationEnv


def _collector(config: TrainConfig, student: GNNPolicy, teacher: CorridorYield, envs, steps):
    """Compiled rollouts of ``config``'s instance, labelled with the teacher's commands.

    ``(student params, teacher params, key, use_student, noise) -> (obs, target, success)``:
    obs [steps, envs, n, dim], teacher commands [steps, envs, n, d], success [envs].
    """
    base = NavigationEnv(config.env_config())
    env = wr.SafetyFilter(wr.Vmap(base, envs))
    env_params = base.default_params()
    v_max = env_params.robot.v_max

    def run(sp, tp, key, use_student, noise):
        k_reset, k_noise = jax.random.split(key)
        s0 = env.reset(k_reset, env_params)

        def body(s, k):
            label = teacher.apply(tp, s.obs)
            act = jnp.where(use_student, student.apply(sp, s.obs), label)
            act = act + noise * v_max * jax.random.normal(k, act.shape)
            act = jnp.clip(act, -v_max, v_max)
            return env.step(s, act, env_params), (s.obs, label)

        s, (obs, target) = jax.lax.scan(body, s0, jax.random.split(k_noise, steps))
        return obs, target, s.metrics["success"]

    return jax.jit(run)


def _fit(student: GNNPolicy, params, obs, target, key, epochs: int, batch: int, lr: float):
    """Adam on the MSE of the unclipped residual command; returns (params, final loss)."""
    nominal = student.nominal
    scale = student.residual * student.v_max
    opt = optax.adam(lr)

    def loss_fn(net, o, t):
        p = {**params, "net": net}
        raw, _ = student.distribution(p, o)
        u = go_to_goal_from_obs(student.layout, nominal, o) + scale * jnp.tanh(raw)
        return jnp.mean(jnp.sum((u - t) ** 2, -1))

    @jax.jit
    def step(carry, idx):
        net, opt_state = carry
        loss, grad = jax.value_and_grad(loss_fn)(net, obs[idx], target[idx])
        upd, opt_state = opt.update(grad, opt_state, net)
        return (optax.apply_updates(net, upd), opt_state), loss

    size = obs.shape[0]
    batch = min(batch, size)  # a dataset smaller than one batch is one batch
    per_epoch = max(1, size // batch)
    net, opt_state = params["net"], opt.init(params["net"])
    loss = jnp.float32(np.nan)
    for _ in range(epochs):
        key, k = jax.random.split(key)
        perm = jax.random.permutation(k, size)[: per_epoch * batch].reshape(per_epoch, batch)
        (net, opt_state), losses = jax.lax.scan(step, (net, opt_state), perm)
        loss = losses[-1]
    return {**params, "net": net}, float(loss)


def dagger(
    config: TrainConfig,
    iterations: int = 4,
    envs: int = 16,
    steps: int = 1200,
    noise: float = 0.3,
    epochs: int = 6,
    batch: int = 512,
    lr: float = 3e-3,
    max_samples: int = 400_000,
    seed: int = 0,
    scenarios: tuple[str, ...] = (),
    log=print,
):
    """DAgger from ``CorridorYield`` into the residual ``gnn``; returns ``(params, history)``.

    Samples are robot-steps, collected in every one of ``scenarios`` (default: the config's)
    with the config's robot count; the aggregate keeps at most ``max_samples`` (a uniform
    subsample of each iteration's and scenario's equal share).  ``history`` has one row per
    iteration: samples, loss, the success per scenario of that iteration's rollouts (noisy
    actions) and the wall time [s].
    """
    if config.policy != "gnn" or not config.residual:
        raise ValueError("imitation trains the residual gnn policy (policy gnn, residual > 0)")
    base = NavigationEnv(config.env_config())
    env_params = base.default_params()
    student = GNNPolicy(base, env_params, hidden=config.hidden, residual=config.residual)
    teacher = CorridorYield(base, env_params)
    tp = teacher.init()
    key = jax.random.PRNGKey(seed)
    key, k_init = jax.random.split(key)
    params = student.init(k_init)
    scenarios = scenarios or (config.scenario,)
    collectors = {
        sc: _collector(replace(config, scenario=sc), student, teacher, envs, steps)
        for sc in scenarios
    }
    dim = base.obs_layout.dim
    all_obs, all_target, history = [], [], []
    per_iter = max_samples // (iterations * len(scenarios))
    t0 = time.perf_counter()
    for it in range(iterations):
        success = {}
        for sc, collect in collectors.items():
            key, k_roll, k_sub = jax.random.split(key, 3)
            obs, target, ok = collect(params, tp, k_roll, it > 0, jnp.float32(noise))
            obs = np.asarray(obs).reshape(-1, dim)
            target = np.asarray(target).reshape(-1, target.shape[-1])
            keep = np.asarray(jax.random.permutation(k_sub, obs.shape[0]))[:per_iter]
            all_obs.append(obs[keep])
            all_target.append(target[keep])
            success[sc] = float(np.mean(np.asarray(ok)))
        key, k_fit = jax.random.split(key)
        data_obs = jnp.asarray(np.concatenate(all_obs))
        data_target = jnp.asarray(np.concatenate(all_target))
        params["obs_mean"] = jnp.mean(data_obs, 0)
        params["obs_std"] = jnp.sqrt(jnp.var(data_obs, 0) + 1e-8)
        params, loss = _fit(student, params, data_obs, data_target, k_fit, epochs, batch, lr)
        row = {
            "iteration": it,
            "samples": int(data_obs.shape[0]),
            "loss": loss,
            "rollout_policy": "student" if it > 0 else "teacher",
            "rollout_success": success,
            "wall_time_s": time.perf_counter() - t0,
        }
        history.append(row)
        log(json.dumps(row))
    return params, history


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m marl_robots.policies.imitation")
    p.add_argument("--robots", type=int, default=8)
    p.add_argument("--scenario", default="corridor", help="comma-separated; the first is saved")
    p.add_argument("--residual", type=float, default=1.0)
    p.add_argument("--iterations", type=int, default=4)
    p.add_argument("--envs", type=int, default=16)
    p.add_argument("--steps", type=int, default=1200)
    p.add_argument("--noise", type=float, default=0.3)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    if a.robots < 2 or a.iterations < 1 or a.envs < 1 or a.steps < 1:
        print("error: robots >= 2, iterations, envs and steps >= 1", file=sys.stderr)
        return 2
    scenarios = tuple(a.scenario.split(","))
    config = TrainConfig(
        policy="gnn",
        robots=a.robots,
        scenario=scenarios[0],
        residual=a.residual,
        num_envs=a.envs,
        rollout_steps=a.steps,
        episode_length=a.steps,
    )
    t0 = time.perf_counter()
    params, history = dagger(
        config,
        a.iterations,
        a.envs,
        a.steps,
        a.noise,
        a.epochs,
        lr=a.lr,
        seed=a.seed,
        scenarios=scenarios,
    )
    summary = {
        "method": "dagger",
        "teacher": CorridorYield.name,
        "scenarios": list(scenarios),
        "seed": a.seed,
        "updates": a.iterations,
        "env_steps": a.iterations * len(scenarios) * a.envs * a.steps,
        "wall_time_s": time.perf_counter() - t0,
        "device": device_name(),
        "history": history,
        "options": vars(a) | {"out": str(a.out)},
    }
    save_policy(a.out / "policy", "gnn", params, config, {"training": summary})
    print(f"wrote {a.out / 'policy'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
