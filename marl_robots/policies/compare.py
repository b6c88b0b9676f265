r"""The evaluation table: fixed CBF at its best swept gain vs learned policies.

    python -m marl_robots.policies.compare --out runs/compare \\
        --policy gnn=policies/navigation_gnn --policy cbf-tuning=policies/navigation_cbf_tuning

For each scenario, the fixed-gain filter (cooperative go-to-goal behind the CBF filter, one
gain for every robot) is swept over ``--gammas`` with ``--sweep-robots`` robots and the best
gain is kept (highest success, then shortest mean time to goal); then the fixed CBF at that
gain and every ``--policy`` are evaluated with each ``--robots`` count, ``--episodes``
episodes of ``--steps`` steps per cell (``marl-robots eval`` semantics).  Writes
``compare.json`` (every cell's metrics, the sweep) and ``table.md``; prints the table.
Deterministic scenarios (antipodal, corridor, crossing) give identical episodes: their cells
are one episode repeated, so ``--deterministic-episodes`` may run fewer of them (the table's
``episodes`` column says how many ran).  ``--fixed-gamma corridor=1,...`` skips the sweep for
the scenarios it names (use the gains of an earlier sweep, and say so).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from marl_robots.policies.evaluate import evaluate

#: Scenarios whose layout ignores the seed: every episode of a cell is the same.
DETERMINISTIC = ("antipodal", "corridor", "crossing")
COLUMNS = (
    ("episodes", "episodes", "{}"),
    ("success_rate", "success", "{:.3f}"),
    ("mean_time_to_goal_s", "time to goal [s]", "{:.1f}"),
    ("min_separation_m", "min sep. [m]", "{:.3f}"),
    ("collisions", "collisions", "{}"),
    ("obstacle_contacts", "obstacle contacts", "{}"),
    ("min_obstacle_clearance_m", "min obstacle clear. [m]", "{:.4f}"),
    ("filter_interventions", "interventions", "{}"),
    ("relaxed_or_infeasible_rate", "relaxed/infeasible", "{:.4f}"),
)


def _fmt(v, f):
    return "-" if v is None else f.format(v)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m marl_robots.policies.compare")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--scenarios", default="antipodal,random,corridor,crossing")
    p.add_argument("--robots", default="8,32")
    p.add_argument("--sweep-robots", type=int, default=8)
    p.add_argument("--gammas", default="1,3,10,30")
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--policy", action="append", default=[], help="label=folder (repeatable)")
    p.add_argument("--deterministic-episodes", type=int, default=None)
    p.add_argument("--fixed-gamma", default="", help="scenario=gain,... (no sweep for these)")
    args = p.parse_args(argv)
    fixed = dict(kv.split("=") for kv in args.fixed_gamma.split(",") if kv)
    scenarios = args.scenarios.split(",")
    robots = [int(r) for r in args.robots.split(",")]
    gammas = [float(g) for g in args.gammas.split(",")]
    policies = [tuple(s.split("=", 1)) for s in args.policy]
    args.out.mkdir(parents=True, exist_ok=True)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    result = {"protocol": vars(args) | {"out": str(args.out)}, "sweep": {}, "cells": []}
    for sc in scenarios:
        episodes = args.episodes
        if sc in DETERMINISTIC and args.deterministic_episodes:
            episodes = args.deterministic_episodes
        common = dict(episodes=episodes, steps=args.steps, seed=args.seed)
        best = (None, float(fixed[sc])) if sc in fixed else None
        for g in [] if sc in fixed else gammas:
            m, _ = evaluate("go-to-goal", sc, args.sweep_robots, gamma=g, **common)
            log(f"sweep {sc} gamma={g:g}: success {m['success_rate']:.3f}")
            result["sweep"].setdefault(sc, []).append(m)
            ttg = m["mean_time_to_goal_s"] or float("inf")
            rank = (m["success_rate"], -ttg)
            if best is None or rank > best[0]:
                best = (rank, g)
        for n in robots:
            cells = [(f"fixed CBF (gamma={best[1]:g})", "go-to-goal", best[1])]
            cells += [(label, folder, 10.0) for label, folder in policies]
            for label, source, g in cells:
                m, _ = evaluate(source, sc, n, gamma=g, **common)
                m["label"] = label
                result["cells"].append(m)
                log(f"{sc} n={n} {label}: success {m['success_rate']:.3f}")
    (args.out / "compare.json").write_text(json.dumps(result, indent=2) + "\n")
    head = "| scenario | robots | policy | " + " | ".join(c[1] for c in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (3 + len(COLUMNS))]
    for m in result["cells"]:
        vals = " | ".join(_fmt(m.get(k), f) for k, _, f in COLUMNS)
        lines.append(f"| {m['scenario']} | {m['robots']} | {m['label']} | {vals} |")
    table = "\n".join(lines) + "\n"
    (args.out / "table.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
