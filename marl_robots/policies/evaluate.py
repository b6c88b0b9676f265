"""Evaluate a policy on many episodes at once: the figures of ``marl-robots sim``, averaged.

Every episode runs the full ``steps`` horizon (as ``marl-robots sim`` does) with the policy's
deterministic action behind the env's CBF safety filter, all episodes vmapped in one compiled
``lax.scan``.  Per episode: success (fraction of robots at their goal at the end), mean time to
goal of the robots that got there, collisions (robot pairs that ever came closer than the body
diameter), minimum separation and obstacle clearance, filter interventions, relaxed and
infeasible filter calls.  ``summary`` averages them (collisions and filter counts are summed).
"""

from __future__ import annotations

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from marl_robots.controllers.safety_filter import FilterStatus
from marl_robots.policies import POLICIES
from marl_robots.sim import wrappers as wr
from marl_robots.sim.closed_loop import SAFETY_DISTANCE_M
from marl_robots.sim.env import DEFAULT_GAMMA, EnvConfig, NavigationEnv


def resolve_policy(source: str, env, env_params):
    """``(policy, params, meta)`` for a registered name (``go-to-goal``) or a bundle folder."""
    from marl_robots.policies.mappo import load_policy  # noqa: PLC0415

    path = Path(source)
    if (path / "policy.json").is_file():
        return load_policy(path, env, env_params)
    from marl_robots.core.paths import content_path  # noqa: PLC0415

    try:
        shipped = content_path("policies", source)
    except FileNotFoundError:  # not a shipped bundle: a registered name, then
        shipped = None
    if shipped is not None and (Path(shipped) / "policy.json").is_file():
        return load_policy(Path(shipped), env, env_params)
    policy = POLICIES.get(source)(env, env_params)
    if getattr(policy, "learned", False):
        raise ValueError(f"policy {source!r} needs trained parameters: pass a policy folder")
    return policy, policy.init(jax.random.PRNGKey(0)), {"policy": source}


_RUNNERS: dict = {}


def compiled_runner(env_config: EnvConfig, policy, params, episodes: int, steps: int,
                    key_shape: tuple[int, ...] = (2,)):
    """``(compiled (params, key, gamma) -> aggregates, compile seconds or 0 if cached)``.

    Compiled once per (env config, policy kind, episodes, steps, key shape): the gain is an
    argument, so a gain sweep reuses one program.  ``key_shape`` (2,) takes one key that the
    episodes split; (episodes, 2) one reset key per episode (see ``rollout_episodes``).
    """
    cache_key = (env_config, getattr(policy, "name", type(policy).__name__), episodes, steps,
                 tuple(key_shape))
    if cache_key in _RUNNERS:
        return _RUNNERS[cache_key], 0.0
    t0 = time.perf_counter()
    run = _make_runner(env_config, policy, episodes, steps)
    key = jnp.zeros(key_shape, jax.random.PRNGKey(0).dtype)
    compiled = run.lower(params, key, jnp.float32(1.0)).compile()
    _RUNNERS[cache_key] = compiled
    return compiled, time.perf_counter() - t0


def episode_runner(env_config: EnvConfig, policy, episodes: int, steps: int, gamma: float):
    """``(policy_params, key) -> per-episode aggregates`` (see the module doc)."""

    def call(params, key):
        compiled, _ = compiled_runner(env_config, policy, params, episodes, steps)
        return compiled(params, key, jnp.float32(gamma))

    return call


def _make_runner(env_config: EnvConfig, policy, episodes, steps):
    base = NavigationEnv(env_config)
    env = wr.SafetyFilter(wr.Vmap(base, episodes))
    n = base.n
    eye = jnp.eye(n, dtype=bool)

    def pairs_close(state, env_params):
        diff = state.task.pos[:, :, None] - state.task.pos[:, None]
        return (jnp.sum(diff * diff, -1) < env_params.robot.diameter_m**2) & ~eye

    def touching(state, env_params):  # [episodes, n] body on an obstacle or past a wall
        return jax.vmap(lambda t: base.task.metrics(t, env_params.robot).touching)(state.task)

    def body(carry, _):
        s, agg, params, env_params = carry
        s = env.step(s, policy.apply(params, s.obs), env_params)
        status = s.info["filter_status"]
        agg = {
            "min_separation_m": jnp.minimum(
                agg["min_separation_m"], s.metrics["min_separation_m"]
            ),
            "min_obstacle_clearance_m": jnp.minimum(
                agg["min_obstacle_clearance_m"], s.metrics["obstacle_clearance_m"]
            ),
            "collided": agg["collided"] | pairs_close(s, env_params),
            "touched": agg["touched"] | touching(s, env_params),
            "filter_interventions": agg["filter_interventions"] + s.metrics["interventions"],
            "qp_relaxed": agg["qp_relaxed"] + jnp.sum(status == FilterStatus.RELAXED, -1),
            "qp_infeasible": agg["qp_infeasible"] + jnp.sum(status >= FilterStatus.INFEASIBLE, -1),
        }
        return (s, agg, params, env_params), None

    def run(params, key, gamma):
        env_params = base.default_params()
        env_params = env_params._replace(
            cbf=env_params.cbf._replace(gamma=jnp.broadcast_to(gamma, (n,)))
        )
        s = env.reset(key, env_params)
        zero = jnp.zeros((episodes,), jnp.float32)
        agg = {
            "min_separation_m": s.metrics["min_separation_m"],
            "min_obstacle_clearance_m": s.metrics["obstacle_clearance_m"],
            "collided": pairs_close(s, env_params),
            "touched": touching(s, env_params),
            "filter_interventions": zero,
            "qp_relaxed": zero,
            "qp_infeasible": zero,
        }
        carry = (s, agg, params, env_params)
        (s, agg, _, _), _ = jax.lax.scan(body, carry, None, length=steps)
        agg["collisions"] = jnp.sum(jnp.triu(agg.pop("collided"), 1), axis=(-2, -1))
        agg["obstacle_contacts"] = jnp.sum(agg.pop("touched"), axis=-1)
        agg["success_rate"] = s.metrics["success"]
        agg["reached_step"] = s.task.reached_step
        return agg

    return jax.jit(run)


def rollout_episodes(env_config: EnvConfig, policy, params, episodes, steps, seed, gamma,
                     reset_keys=None):
    """Run ``episodes`` episodes of ``steps`` steps; returns per-episode NumPy arrays.

    Episode e starts from ``reset(split(PRNGKey(seed), episodes)[e])``, or from
    ``reset(reset_keys[e])`` when ``reset_keys`` [episodes, 2] is given (e.g.
    ``PRNGKey(seed)[None]``: the layout ``nodes.fleet.fleet_from_scenario(seed=seed)`` gives
    the ROS side).
    """
    key = (jax.random.PRNGKey(seed) if reset_keys is None
           else jnp.asarray(reset_keys).reshape(episodes, -1))
    compiled, compile_s = compiled_runner(env_config, policy, params, episodes, steps, key.shape)
    t1 = time.perf_counter()
    out = jax.device_get(compiled(params, key, jnp.float32(gamma)))
    t2 = time.perf_counter()
    timing = {"compile_time_s": compile_s, "run_s": t2 - t1}
    return {k: np.asarray(v) for k, v in out.items()}, timing


def evaluate(
    source: str,
    scenario: str = "corridor",
    robots: int = 8,
    robot: str = "unicycle",
    episodes: int = 100,
    steps: int = 2000,
    seed: int = 0,
    gamma: float = DEFAULT_GAMMA,
    reset_keys=None,
):
    """Evaluate ``source`` (policy folder or registered name); returns ``(summary, rows)``.

    ``reset_keys``: see ``rollout_episodes``.  Each row also carries ``reached_rate``, the
    fraction of robots that ever reached their goal.
    """
    from marl_robots.sim.tasks.navigation import NavigationConfig  # noqa: PLC0415

    env_config = EnvConfig(task=NavigationConfig(robots=robots, scenario=scenario, robot=robot))
    base = NavigationEnv(env_config)
    policy, params, meta = resolve_policy(source, base, base.default_params(gamma))
    agg, timing = rollout_episodes(env_config, policy, params, episodes, steps, seed, gamma,
                                   reset_keys)
    dt = env_config.task.dt_s
    rows = []
    for e in range(episodes):
        reached = agg["reached_step"][e]
        times = reached[reached >= 0] * dt
        clear = float(agg["min_obstacle_clearance_m"][e])
        rows.append(
            {
                "episode": e,
                "success_rate": float(agg["success_rate"][e]),
                "reached_rate": float((reached >= 0).mean()),
                "mean_time_to_goal_s": float(times.mean()) if times.size else None,
                "collisions": int(agg["collisions"][e]),
                "obstacle_contacts": int(agg["obstacle_contacts"][e]),
                "min_separation_m": float(agg["min_separation_m"][e]),
                "min_obstacle_clearance_m": clear if np.isfinite(clear) else None,
                "filter_interventions": int(agg["filter_interventions"][e]),
                "qp_relaxed": int(agg["qp_relaxed"][e]),
                "qp_infeasible": int(agg["qp_infeasible"][e]),
            }
        )
    ttg = [r["mean_time_to_goal_s"] for r in rows if r["mean_time_to_goal_s"] is not None]
    clear = [
        r["min_obstacle_clearance_m"] for r in rows if r["min_obstacle_clearance_m"] is not None
    ]
    robot_steps = episodes * steps * robots
    summary = {
        "task": "navigation",
        "scenario": scenario,
        "robot": robot,
        "policy": meta.get("policy", source),
        "policy_source": source,
        "filter": "cbf",
        "filter_mode": "decentralised",
        "class_k": "linear",
        "gamma": gamma if meta.get("policy") != "cbf-tuning" else "learned",
        "seed": seed,
        "episodes": episodes,
        "robots": robots,
        "steps": steps,
        "dt_s": dt,
        "safety_distance_m": SAFETY_DISTANCE_M,
        "robot_diameter_m": float(base.default_params().robot.diameter_m),
        "collisions": int(sum(r["collisions"] for r in rows)),
        "obstacle_contacts": int(sum(r["obstacle_contacts"] for r in rows)),
        "min_separation_m": float(min(r["min_separation_m"] for r in rows)),
        "min_obstacle_clearance_m": float(min(clear)) if clear else None,
        "success_rate": float(np.mean([r["success_rate"] for r in rows])),
        "mean_time_to_goal_s": float(np.mean(ttg)) if ttg else None,
        "filter_interventions": int(sum(r["filter_interventions"] for r in rows)),
        "qp_relaxed": int(sum(r["qp_relaxed"] for r in rows)),
        "qp_infeasible": int(sum(r["qp_infeasible"] for r in rows)),
        "relaxed_or_infeasible_rate": float(
            sum(r["qp_relaxed"] + r["qp_infeasible"] for r in rows) / robot_steps
        ),
        "compile_time_s": timing["compile_time_s"],
        "wall_time_s": timing["compile_time_s"] + timing["run_s"],
        "env_steps_per_s": episodes * steps / max(timing["run_s"], 1e-9),
    }
    return summary, rows


def simulate_policy(spec, source: str, progress=None):
    """One ``marl-robots sim`` episode with ``source`` (policy folder or name) in the loop.

    The policy's deterministic action passes the env's CBF safety filter (decentralised), as
    in ``evaluate``; the result has the shapes of ``sim.run.simulate`` so that
    ``sim.run.metrics_of`` and ``sim.run.write_outputs`` write the usual files.

    Args:
        spec: ``sim.run.RunSpec`` (robots, scenario, robot, gamma, steps, seed; the filter
            must be ``cbf`` in ``decentralised`` mode with ``linear`` class-K).
        source: policy folder, shipped policy name or registered name.
        progress: optional ``(done, total)`` callback.

    Returns:
        ``(task, robot params, trajectory dict of NumPy arrays, aggregates, timing dict)``.
    """
    from marl_robots.sim.run import build, prng_key  # noqa: PLC0415
    from marl_robots.sim.tasks.navigation import NavigationConfig  # noqa: PLC0415

    if (spec.filter, spec.filter_mode, spec.class_k) != ("cbf", "decentralised", "linear"):
        raise ValueError(
            "--policy runs behind the env's filter: --filter cbf --filter-mode decentralised "
            "--class-k linear"
        )
    task, _, robot_params, _ = build(spec)  # validates steps, safety distance and layout
    cfg = EnvConfig(
        task=NavigationConfig(robots=spec.robots, scenario=spec.scenario, robot=spec.robot)
    )
    base = NavigationEnv(cfg)
    env_params = base.default_params(spec.gamma)
    policy, params, _ = resolve_policy(source, base, env_params)
    env = wr.SafetyFilter(base)
    n = base.n
    robot = base.task.robot

    def body(s, _):
        action = policy.apply(params, s.obs)
        u, _ = env.filter(s, action, env_params)
        cmd = robot.from_point_velocity(u, s.task.yaw, env_params.robot, jnp)
        s = env.step(s, action, env_params)
        m = base.task.metrics(s.task, env_params.robot)
        diff = s.task.pos[:, None] - s.task.pos[None]
        close = jnp.sum(diff * diff, -1) < env_params.robot.diameter_m**2
        close = close & ~jnp.eye(n, dtype=bool)
        rec = {
            "pos": s.task.pos,
            "yaw": s.task.yaw,
            "action": cmd,
            "status": s.info["filter_status"],
            "intervened": s.cost["intervention"] > 0,
            "min_separation_m": m.min_separation_m,
            "colliding_pairs": m.colliding_pairs,
            "at_goal": m.at_goal,
            "obstacle_clearance_m": m.obstacle_clearance_m,
            "touching": m.touching,
            "close": close,
        }
        return s, rec

    chunk = min(250, spec.steps)
    s0 = env.reset(prng_key(spec.seed), env_params)
    t0 = time.perf_counter()
    run = {
        k: jax.jit(lambda s, k=k: jax.lax.scan(body, s, None, length=k)).lower(s0).compile()
        for k in {chunk, spec.steps % chunk} - {0}
    }
    compile_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    s, pieces, done = s0, [], 0
    while done < spec.steps:
        k = min(chunk, spec.steps - done)
        s, rec = run[k](s)
        pieces.append(jax.device_get(rec))
        done += k
        if progress is not None:
            progress(done, spec.steps)
    run_s = time.perf_counter() - t1
    rec = {k: np.concatenate([p[k] for p in pieces]) for k in pieces[0]}
    traj = {
        "pos": np.concatenate([np.asarray(s0.task.pos)[None], rec["pos"]]),
        "yaw": np.concatenate([np.asarray(s0.task.yaw)[None], rec["yaw"]]),
    }
    for name in ("action", "status", "intervened", "min_separation_m", "colliding_pairs"):
        traj[name] = rec[name]
    traj["at_goal"] = rec["at_goal"]
    traj["goal"] = np.asarray(s.task.goal)
    traj["obstacles"] = np.asarray(s.task.obstacles)
    traj["obstacle_mask"] = np.asarray(s.task.obstacle_mask)
    traj["reached_step"] = np.asarray(s.task.reached_step)
    first = base.task.metrics(s0.task, env_params.robot)
    agg = {
        "min_separation_m": float(min(first.min_separation_m, rec["min_separation_m"].min())),
        "collided": np.logical_or.reduce(rec["close"], axis=0),
        "interventions": int(rec["intervened"].sum()),
        "relaxed": int((rec["status"] == FilterStatus.RELAXED).sum()),
        "infeasible": int((rec["status"] >= FilterStatus.INFEASIBLE).sum()),
        "min_obstacle_clearance_m": float(rec["obstacle_clearance_m"].min()),
        "touched": np.asarray(first.touching) | np.logical_or.reduce(rec["touching"], axis=0),
    }
    return task, robot_params, traj, agg, {"compile_s": compile_s, "run_s": run_s}
