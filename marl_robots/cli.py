"""The ``marl-robots`` command line.

    marl-robots sim navigation --robots 16 --scenario antipodal --filter cbf --steps 2000 \
        --seed 0 --out runs/demo
    marl-robots bench navigation --out bench.json
    marl-robots train navigation --policy cbf-tuning --robots 8 --scenario corridor --out runs/x
    marl-robots eval runs/x/policy --scenario corridor --robots 32 --episodes 100 --out DIR
    marl-robots bench quad --out bench_quad.json     (quadrotor backends)

User errors (unknown names, bad numbers, a non-empty output folder) print one line and exit 2;
no tracebacks.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from marl_robots.controllers.cbf import CLASS_K_NAMES
from marl_robots.controllers.safety_filter import FILTER_MODES
from marl_robots.core import defaults
from marl_robots.core.registry import UnknownNameError
from marl_robots.core.validate import MAX_STEPS

FILTERS = ("cbf", "none")
EXIT_USAGE = 2


class UsageError(Exception):
    """A mistake in the user's input; reported in one line with exit code 2."""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def _nonneg_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = _nonneg_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be positive, got 0")
    return value


def _choice(kind: str, value: str, known) -> str:
    if value not in known:
        raise UsageError(f"unknown {kind} {value!r}; known {kind}s: {', '.join(sorted(known))}")
    return value


def _prepare_out(out: Path, overwrite: bool) -> None:
    """Refuse an output folder that cannot take the results, *before* any work is done."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UsageError(f"--out {out} is not empty; pass --overwrite to replace its files")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as err:
        raise UsageError(f"--out {out} cannot be written: {err.strerror or err}") from None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="marl-robots", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True, metavar="{sim,bench,train,eval}")

    sim = sub.add_parser("sim", help="run one simulated episode and write its files")
    sim.add_argument("task", help="task name (navigation)")
    sim.add_argument("--robots", type=_positive_int, default=16, help="number of robots")
    sim.add_argument(
        "--scenario", default="antipodal", help="antipodal | random | corridor | crossing"
    )
    sim.add_argument("--robot", default="unicycle", help="unicycle | single_integrator")
    sim.add_argument("--filter", default="cbf", help="cbf | none")
    sim.add_argument("--filter-mode", default="decentralised", help=" | ".join(FILTER_MODES))
    sim.add_argument("--class-k", default="linear", help=" | ".join(CLASS_K_NAMES))
    sim.add_argument(
        "--gamma",
        type=_positive_float,
        default=None,
        help=f"class-K gain for every robot (default {defaults.GAMMA:g} /s)",
    )
    sim.add_argument(
        "--safety-distance",
        type=_nonneg_float,
        default=None,
        help="minimum distance between robot centres [m], at least the body diameter "
        f"(default {defaults.SAFETY_DISTANCE_M:g})",
    )
    sim.add_argument(
        "--steps",
        type=_positive_int,
        default=2000,
        help=f"control periods, at most {MAX_STEPS} (the trajectory is kept in memory)",
    )
    sim.add_argument(
        "--seed", type=int, default=0, help="random seed (any integer; no aliasing mod 2^32)"
    )
    sim.add_argument("--out", type=Path, default=None, help="output folder")
    sim.add_argument("--overwrite", action="store_true", help="replace files in a non-empty --out")
    sim.add_argument("--no-animation", action="store_true", help="skip the GIF (faster)")
    sim.add_argument("--quiet", action="store_true", help="no progress lines")

    bench = sub.add_parser("bench", help="measure simulation throughput against a NumPy loop")
    bench.add_argument("task", help="task name (navigation), or quad (quadrotor backends)")
    bench.add_argument("--robots", type=_positive_int, default=16)
    bench.add_argument("--envs", default="1,64,1024", help="comma-separated environment counts")
    bench.add_argument("--steps", type=_positive_int, default=100, help="steps per timed call")
    bench.add_argument("--out", type=Path, default=None, help="write the JSON report here")
    _add_learning_parsers(sub)
    return p


def _add_learning_parsers(sub) -> None:
    """``train`` and ``eval`` (learned policies, ``marl_robots.policies``)."""
    tr = sub.add_parser("train", help="train a learned policy with MAPPO")
    tr.add_argument("task", help="task name (navigation)")
    tr.add_argument("--policy", default="gnn", help="gnn | cbf-tuning")
    tr.add_argument("--robots", type=_positive_int, default=8)
    tr.add_argument(
        "--scenario", default="corridor", help="antipodal | random | corridor | crossing"
    )
    tr.add_argument("--robot", default="unicycle", help="unicycle | single_integrator")
    tr.add_argument("--num-envs", type=_positive_int, default=64)
    tr.add_argument("--rollout-steps", type=_positive_int, default=64)
    tr.add_argument("--episode-length", type=_positive_int, default=900, help="steps")
    tr.add_argument("--total-steps", type=_positive_float, default=1e6, help="env steps")
    tr.add_argument("--lr", type=_positive_float, default=3e-4)
    tr.add_argument("--centralised-critic", action="store_true")
    tr.add_argument("--checkpoint-every", type=_positive_int, default=10, help="updates")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--out", type=Path, required=True, help="run folder")
    tr.add_argument("--resume", action="store_true", help="continue from --out/checkpoint")
    tr.add_argument("--overwrite", action="store_true", help="replace files in a non-empty --out")
    tr.add_argument("--quiet", action="store_true", help="no progress lines")

    ev = sub.add_parser("eval", help="evaluate a policy over many episodes")
    ev.add_argument("policy", help="policy folder, shipped policy name, or go-to-goal")
    ev.add_argument("--scenario", default="corridor")
    ev.add_argument("--robots", type=_positive_int, default=8)
    ev.add_argument("--robot", default="unicycle")
    ev.add_argument("--episodes", type=_positive_int, default=100)
    ev.add_argument("--steps", type=_positive_int, default=2000, help="steps per episode")
    ev.add_argument(
        "--gamma", type=_positive_float, default=defaults.GAMMA, help="fixed class-K gain [1/s]"
    )
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--out", type=Path, default=None, help="write metrics.json, episodes.jsonl")
    ev.add_argument("--overwrite", action="store_true")


def _cmd_sim(args) -> int:
    from marl_robots.sim.robots import ROBOTS  # noqa: PLC0415
    from marl_robots.sim.run import RunSpec, run_navigation  # noqa: PLC0415 - imports JAX
    from marl_robots.sim.scenarios import SCENARIOS  # noqa: PLC0415
    from marl_robots.sim.tasks import TASKS  # noqa: PLC0415

    _choice("task", args.task, TASKS.names())
    _choice("scenario", args.scenario, SCENARIOS.names())
    _choice("robot", args.robot, ROBOTS.names())
    _choice("filter", args.filter, FILTERS)
    _choice("filter mode", args.filter_mode, FILTER_MODES)
    _choice("class-K function", args.class_k, CLASS_K_NAMES)
    if args.out is not None:
        _prepare_out(args.out, args.overwrite)
    spec = RunSpec(
        robots=args.robots,
        scenario=args.scenario,
        robot=args.robot,
        filter=args.filter,
        filter_mode=args.filter_mode,
        class_k=args.class_k,
        steps=args.steps,
        seed=args.seed,
    )
    if args.gamma is not None:
        spec = _replace(spec, gamma=args.gamma)
    if args.safety_distance is not None:
        spec = _replace(spec, safety_distance_m=args.safety_distance)
    try:
        metrics = run_navigation(spec, args.out, animation=not args.no_animation, quiet=args.quiet)
    except ValueError as err:  # a layout that cannot hold this many robots, for example
        raise UsageError(str(err)) from None
    keys = (
        "robots",
        "steps",
        "collisions",
        "min_separation_m",
        "success_rate",
        "mean_time_to_goal_s",
        "filter_interventions",
        "qp_infeasible",
        "env_steps_per_s",
    )
    print(f"navigation/{spec.scenario}: {spec.robots} {spec.robot} robots, filter={spec.filter}")
    for k in keys:
        v = metrics[k]
        print(f"  {k:<22} {v:.4g}" if isinstance(v, float) else f"  {k:<22} {v}")
    if args.out is not None:
        print(
            f"  wrote {args.out}/metrics.json, rollout.npz, trajectories.png"
            + ("" if args.no_animation else ", rollout.gif")
        )
    return 0


def _replace(spec, **changes):
    from dataclasses import replace  # noqa: PLC0415

    return replace(spec, **changes)


def _cmd_bench(args) -> int:
    from marl_robots.sim.bench import main_bench  # noqa: PLC0415
    from marl_robots.sim.tasks import TASKS  # noqa: PLC0415

    _choice("task", args.task, [*TASKS.names(), "quad"])
    try:
        envs = tuple(int(e) for e in args.envs.split(","))
    except ValueError:
        raise UsageError(f"--envs expects comma-separated integers, got {args.envs!r}") from None
    if not envs or min(envs) <= 0:
        raise UsageError(f"--envs must all be positive, got {args.envs!r}")
    if args.task == "quad":  # quadrotor backends (sim/backends/bench.py); --envs: JAX batches
        from marl_robots.sim.backends.bench import main as main_quad  # noqa: PLC0415

        out = ["--out", str(args.out)] if args.out else []
        return main_quad(["--jax-envs", args.envs, *out])
    return main_bench(args.out, args.robots, envs, args.steps)


def _check_instance(args) -> None:
    from marl_robots.sim.robots import ROBOTS  # noqa: PLC0415
    from marl_robots.sim.scenarios import SCENARIOS  # noqa: PLC0415

    _choice("scenario", args.scenario, SCENARIOS.names())
    _choice("robot", args.robot, ROBOTS.names())


def _cmd_train(args) -> int:
    from marl_robots.policies.mappo import TrainConfig  # noqa: PLC0415 - imports JAX
    from marl_robots.policies.train import train  # noqa: PLC0415
    from marl_robots.sim.tasks import TASKS  # noqa: PLC0415

    _choice("task", args.task, TASKS.names())
    _choice("policy kind", args.policy, ("gnn", "cbf-tuning"))
    if "," in args.scenario:
        raise UsageError("train takes one --scenario for now (curriculum not implemented)")
    _check_instance(args)
    if not args.resume:
        _prepare_out(args.out, args.overwrite)
    elif not (args.out / "checkpoint" / "state.msgpack").is_file():
        raise UsageError(f"--resume: no checkpoint in {args.out}/checkpoint")
    try:
        config = TrainConfig(
            policy=args.policy,
            robots=args.robots,
            scenario=args.scenario,
            robot=args.robot,
            num_envs=args.num_envs,
            rollout_steps=args.rollout_steps,
            episode_length=args.episode_length,
            lr=args.lr,
            centralised_critic=args.centralised_critic,
        )
        summary = train(
            config,
            int(args.total_steps),
            args.seed,
            args.out,
            args.resume,
            args.checkpoint_every,
            args.quiet,
        )
    except ValueError as err:
        raise UsageError(str(err)) from None
    final = summary["final"] or {}
    print(
        f"trained {summary['updates']} updates, {summary['env_steps']:,} env steps in "
        f"{summary['wall_time_s']:.0f} s on {summary['device']}; "
        f"success {final.get('success', float('nan')):.2f}; wrote {args.out}/policy"
    )
    return 0


def _cmd_eval(args) -> int:
    import json  # noqa: PLC0415

    from marl_robots.policies.evaluate import evaluate  # noqa: PLC0415 - imports JAX

    _check_instance(args)
    if args.out is not None:
        _prepare_out(args.out, args.overwrite)
    try:
        summary, rows = evaluate(
            args.policy,
            args.scenario,
            args.robots,
            args.robot,
            args.episodes,
            args.steps,
            args.seed,
            args.gamma,
        )
    except (ValueError, FileNotFoundError) as err:
        raise UsageError(str(err)) from None
    print(
        f"navigation/{args.scenario}: {args.robots} robots, policy {summary['policy']}, "
        f"{args.episodes} episodes"
    )
    for k in (
        "success_rate",
        "mean_time_to_goal_s",
        "collisions",
        "min_separation_m",
        "filter_interventions",
        "relaxed_or_infeasible_rate",
        "env_steps_per_s",
    ):
        v = summary[k]
        print(f"  {k:<26} {v:.4g}" if isinstance(v, float) else f"  {k:<26} {v}")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
        with (args.out / "episodes.jsonl").open("w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
        print(f"  wrote {args.out}/metrics.json, episodes.jsonl")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``marl-robots`` console script; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "sim":
            return _cmd_sim(args)
        if args.command == "train":
            return _cmd_train(args)
        if args.command == "eval":
            return _cmd_eval(args)
        return _cmd_bench(args)
    except (UsageError, UnknownNameError) as err:
        print(f"marl-robots: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("marl-robots: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
