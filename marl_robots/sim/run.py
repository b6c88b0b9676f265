"""Run one navigation episode and write its files: metrics.json, rollout.npz, GIF, PNG.

Used by ``marl-robots sim``; tests call ``run_navigation`` directly.  The rollout is compiled
once per chunk length and advanced chunk by chunk so that long runs can report progress; the
chunking does not change the result (same computations in the same order).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from marl_robots.controllers.safety_filter import FilterConfig
from marl_robots.core import defaults, validate
from marl_robots.sim.closed_loop import SAFETY_DISTANCE_M, ControlConfig, cbf_params, rollout
from marl_robots.sim.tasks.navigation import NavigationConfig, NavigationTask

#: Default class-K gain [1/s] and right-hand bias (``core.defaults``).
DEFAULT_GAMMA = defaults.GAMMA
DEFAULT_BIAS = defaults.BIAS
CHUNK_STEPS = 250


@dataclass(frozen=True)
class RunSpec:
    """Everything that defines a navigation run (the CLI's arguments)."""

    robots: int = 16
    scenario: str = "antipodal"
    robot: str = "unicycle"
    filter: str = "cbf"
    filter_mode: str = "decentralised"
    class_k: str = "linear"
    gamma: float = DEFAULT_GAMMA
    bias: float = DEFAULT_BIAS
    safety_distance_m: float = SAFETY_DISTANCE_M
    steps: int = 2000
    seed: int = 0


#: Files a run writes; ``--overwrite`` removes all of them first so none is left stale.
OUTPUT_FILES = ("metrics.json", "rollout.npz", "trajectories.png", "rollout.gif")


def prng_key(seed: int) -> jax.Array:
    """PRNG key of a user seed: ``PRNGKey(seed)`` in [0, 2^32), else hashed (no aliasing)."""
    return jnp.asarray(validate.seed_key_data(seed), dtype=jnp.uint32)


def build(spec: RunSpec):
    """Task, control config, physical params and filter params for ``spec``.

    Raises:
        ValidationError: a step count outside [1, ``MAX_STEPS``], a safety distance below the
            body diameter, or a layout that breaks the filter's margins (naming the largest
            team that fits).
    """
    validate.steps(spec.steps)
    task = NavigationTask(
        NavigationConfig(robots=spec.robots, scenario=spec.scenario, robot=spec.robot)
    )
    dt = task.config.dt_s
    filt = (
        FilterConfig(mode=spec.filter_mode, class_k=spec.class_k, dt_s=dt)
        if spec.filter == "cbf"
        else None
    )
    cfg = ControlConfig(filter=filt, bias=spec.bias)
    params = task.default_params()
    validate.safety_distance(spec.safety_distance_m, float(params.diameter_m))
    task.check_layout(prng_key(spec.seed), params, spec.safety_distance_m)
    cbf = cbf_params(task, params, spec.safety_distance_m, spec.gamma)
    return task, cfg, params, cbf


def simulate(spec: RunSpec, progress: Callable[[int, int], None] | None = None):
    """Run the episode.

    Returns:
        ``(task, params, trajectory dict of NumPy arrays, aggregates, timing dict)``.
    """
    task, cfg, params, cbf = build(spec)
    state = task.reset(prng_key(spec.seed), params)
    chunk = min(CHUNK_STEPS, spec.steps)
    t0 = time.perf_counter()
    run_chunk = jax.jit(lambda s: rollout(task, cfg, s, params, cbf, chunk))
    compiled = run_chunk.lower(state).compile()
    rest = spec.steps % chunk
    compiled_rest = (
        jax.jit(lambda s: rollout(task, cfg, s, params, cbf, rest)).lower(state).compile()
        if rest
        else None
    )
    compile_s = time.perf_counter() - t0
    pieces, aggs = [], []
    done = 0
    t1 = time.perf_counter()
    while done < spec.steps:
        fn = compiled if spec.steps - done >= chunk else compiled_rest
        state, agg, traj = fn(state)
        pieces.append(jax.device_get(traj))
        aggs.append(jax.device_get(agg))
        done += traj.action.shape[0]
        if progress is not None:
            progress(done, spec.steps)
    jax.block_until_ready(state)
    run_s = time.perf_counter() - t1
    traj = {
        "pos": np.concatenate([pieces[0].pos[:1]] + [p.pos[1:] for p in pieces]),
        "yaw": np.concatenate([pieces[0].yaw[:1]] + [p.yaw[1:] for p in pieces]),
    }
    for name in (
        "action",
        "status",
        "intervened",
        "min_separation_m",
        "colliding_pairs",
        "at_goal",
    ):
        traj[name] = np.concatenate([getattr(p, name) for p in pieces])
    traj["goal"] = np.asarray(state.goal)
    traj["obstacles"] = np.asarray(state.obstacles)
    traj["obstacle_mask"] = np.asarray(state.obstacle_mask)
    traj["reached_step"] = np.asarray(state.reached_step)
    agg = {
        "min_separation_m": min(float(a.min_separation_m) for a in aggs),
        "collided": np.logical_or.reduce([np.asarray(a.collided) for a in aggs]),
        "interventions": int(sum(int(a.interventions) for a in aggs)),
        "relaxed": int(sum(int(a.relaxed) for a in aggs)),
        "infeasible": int(sum(int(a.infeasible) for a in aggs)),
        "min_obstacle_clearance_m": min(float(a.min_obstacle_clearance_m) for a in aggs),
        "touched": np.logical_or.reduce([np.asarray(a.touched) for a in aggs]),
    }
    return task, params, traj, agg, {"compile_s": compile_s, "run_s": run_s}


def metrics_of(spec: RunSpec, task, params, traj, agg, timing) -> dict[str, Any]:
    """The ``metrics.json`` record of a run."""
    dt = task.config.dt_s
    reached = traj["reached_step"]
    at_end = traj["at_goal"][-1]
    times = reached[reached >= 0] * dt
    clearance = agg["min_obstacle_clearance_m"]
    return {
        "task": "navigation",
        "scenario": spec.scenario,
        "robot": spec.robot,
        "filter": spec.filter,
        "filter_mode": spec.filter_mode if spec.filter == "cbf" else None,
        "class_k": spec.class_k,
        "gamma": spec.gamma,
        "seed": spec.seed,
        "robots": spec.robots,
        "steps": spec.steps,
        "dt_s": dt,
        "safety_distance_m": spec.safety_distance_m,
        "robot_diameter_m": float(params.diameter_m),
        "collisions": int(np.triu(agg["collided"], k=1).sum()),
        "obstacle_contacts": int(agg["touched"].sum()),
        "min_separation_m": validate.json_number(agg["min_separation_m"]),
        "min_obstacle_clearance_m": validate.json_number(clearance),
        "success_rate": float(at_end.mean()),
        "mean_time_to_goal_s": float(times.mean()) if times.size else None,
        "filter_interventions": agg["interventions"],
        "qp_relaxed": agg["relaxed"],
        "qp_infeasible": agg["infeasible"],
        "compile_time_s": timing["compile_s"],
        "wall_time_s": timing["compile_s"] + timing["run_s"],
        "env_steps_per_s": spec.steps / max(timing["run_s"], 1e-9),
    }


def write_outputs(out: Path, spec: RunSpec, task, params, traj, metrics, animation=True):
    """Write metrics.json, rollout.npz, trajectories.png and (optionally) rollout.gif."""
    from marl_robots.sim import render  # noqa: PLC0415 - matplotlib only when writing files

    out.mkdir(parents=True, exist_ok=True)
    for name in OUTPUT_FILES:
        (out / name).unlink(missing_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, allow_nan=False) + "\n")
    np.savez_compressed(out / "rollout.npz", dt_s=np.float32(task.config.dt_s), **traj)
    title = f"{spec.scenario}, {spec.robots} {spec.robot} robots, filter={spec.filter}"
    args = (
        traj["goal"],
        traj["obstacles"],
        traj["obstacle_mask"],
        task.config.arena_bounds,
        float(params.diameter_m),
    )
    render.plot_trajectories(out / "trajectories.png", traj["pos"], *args, title=title)
    if animation:
        render.animate(
            out / "rollout.gif", traj["pos"], traj["yaw"], *args, dt=task.config.dt_s, title=title
        )


def run_navigation(spec: RunSpec, out: Path | None, animation: bool = True, quiet: bool = False):
    """Simulate, write the files to ``out`` (if given) and return the metrics dict."""

    def progress(done, total):
        if not quiet and total > CHUNK_STEPS:
            print(f"  step {done}/{total} ({100 * done // total}%)", file=sys.stderr, flush=True)

    task, params, traj, agg, timing = simulate(spec, progress)
    metrics = metrics_of(spec, task, params, traj, agg, timing)
    if out is not None:
        write_outputs(out, spec, task, params, traj, metrics, animation)
    return metrics
