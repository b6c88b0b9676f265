"""The README's navigation-outcome table as a command: ``python -m marl_robots.sim.outcomes``.

Runs every (robot model, team size, scenario, filter on/off) cell for 2000 steps with the
default settings, 1 episode for the deterministic scenarios and 8 seeds (0-7) for ``random``,
plus each scenario's largest accepted team with the filter on, and prints a Markdown table
(also written to ``--out`` as Markdown and JSON with the machine description).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from marl_robots.core.machine import machine_description
from marl_robots.sim.closed_loop import rollout
from marl_robots.sim.run import RunSpec, build, prng_key

STEPS = 2000
SEEDS = {"random": 8}
#: The largest team each scenario accepts in the default arena (unicycle margins).
LARGEST = {"antipodal": 73, "corridor": 64, "crossing": 64, "random": 37}


def cell(robot: str, n: int, scenario: str, filt: str, steps: int = STEPS) -> dict:
    """Outcome of one table cell, averaged over its seeds."""
    seeds = range(SEEDS.get(scenario, 1))
    spec = RunSpec(robots=n, scenario=scenario, robot=robot, filter=filt, steps=steps)
    task, cfg, params, cbf = build(spec)
    states = jax.vmap(lambda k: task.reset(k, params))(jnp.stack([prng_key(s) for s in seeds]))
    run = jax.jit(jax.vmap(lambda s: rollout(task, cfg, s, params, cbf, steps, record=False)))
    final, agg, _ = run(states)
    reached = np.asarray(final.reached_step)
    at_goal = np.asarray(jax.vmap(lambda s: task.metrics(s, params).at_goal)(final))
    clearance = float(np.min(agg.min_obstacle_clearance_m))
    times = reached[reached >= 0] * task.config.dt_s
    return {
        "robot": robot,
        "robots": n,
        "scenario": scenario,
        "filter": filt,
        "episodes": len(seeds),
        "success_rate": float(at_goal.mean()),
        "collisions": int(np.triu(np.asarray(agg.collided), k=1).sum()),
        "min_separation_m": float(np.min(agg.min_separation_m)),
        "min_obstacle_clearance_m": clearance if np.isfinite(clearance) else None,
        "mean_time_to_goal_s": float(times.mean()) if times.size else None,
        "relaxed_robot_steps": int(np.sum(agg.relaxed)),
        "braked_robot_steps": int(np.sum(agg.infeasible)),
    }


def _fmt(v, digits=3):
    return "-" if v is None else f"{v:.{digits}f}"


def table(rows: list[dict]) -> str:
    """Markdown table of ``cell`` results."""
    head = (
        "| robot | N | scenario | filter | success | collisions | min separation [m] | "
        "min obstacle clearance [m] | mean time to goal [s] | relaxed / braked robot-steps |\n"
        "|---|---:|---|---|---:|---:|---:|---:|---:|---:|\n"
    )
    return head + "".join(
        f"| {r['robot']} | {r['robots']} | {r['scenario']} | {r['filter']} | "
        f"{r['success_rate']:.3f} | {r['collisions']} | {r['min_separation_m']:.3f} | "
        f"{_fmt(r['min_obstacle_clearance_m'])} | {_fmt(r['mean_time_to_goal_s'], 1)} | "
        f"{r['relaxed_robot_steps']} / {r['braked_robot_steps']} |\n"
        for r in rows
    )


def main(argv: list[str] | None = None) -> int:
    """Run the table and print it; ``--out`` writes ``outcomes.md`` and ``outcomes.json``."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=None, help="folder for outcomes.md/json")
    p.add_argument("--largest-only", action="store_true", help="only the largest-team rows")
    args = p.parse_args(argv)
    cells = [] if args.largest_only else [
        (robot, n, scenario, filt)
        for robot, sizes in (("unicycle", (16, 32)), ("single_integrator", (16,)))
        for n in sizes
        for scenario in ("antipodal", "random", "corridor", "crossing")
        for filt in ("cbf", "none")
    ]
    cells += [
        (robot, LARGEST[s], s, "cbf")
        for robot in ("unicycle", "single_integrator")
        for s in ("antipodal", "random", "corridor", "crossing")
    ]
    rows = []
    t0 = time.perf_counter()
    for i, c in enumerate(cells):
        rows.append(cell(*c))
        print(f"  {i + 1}/{len(cells)} {c} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr,
              flush=True)
    text = table(rows)
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "outcomes.md").write_text(text)
        record = {"machine": machine_description(), "steps": STEPS, "rows": rows}
        (args.out / "outcomes.json").write_text(json.dumps(record, indent=2, allow_nan=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
