"""The ``marl-robots`` command line.

    marl-robots sim navigation --robots 16 --scenario antipodal --filter cbf --steps 2000 \
        --seed 0 --out runs/demo
    marl-robots sim quad_navigation --backend mujoco --robots 8 --scenario antipodal \
        --controller pid --filter cbf --out runs/quad      (Crazyflie swarm, 3D filter)
    marl-robots bench navigation --out bench.json
    marl-robots train navigation --policy cbf-tuning --robots 8 --scenario corridor --out runs/x
    marl-robots eval runs/x/policy --scenario corridor --robots 32 --episodes 100 --out DIR
    marl-robots bench quad --out bench_quad.json     (quadrotor backends)
    marl-robots export runs/x --format onnx,torch --out bundles/x   (policy bundle, no JAX)
    marl-robots check-bundle bundles/x --robot unicycle               (what a robot would load)

User errors (unknown names, bad numbers, a non-empty output folder) print one line and exit 2;
no tracebacks.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

from marl_robots.controllers.cbf import CLASS_K_NAMES
from marl_robots.controllers.safety_filter import FILTER_MODES
from marl_robots.core import defaults
from marl_robots.core.registry import UnknownNameError
from marl_robots.core.validate import MAX_STEPS

FILTERS = ("cbf", "none")
QUAD_TASK = "quad_navigation"
EXIT_USAGE = 2


class UsageError(Exception):
    """A mistake in the user's input; reported in one line with exit code 2."""


def _print_metrics(metrics: dict, keys, width: int) -> None:
    """Print ``metrics[k]`` for each key, one indented line each (floats: 4 digits)."""
    for k in keys:
        v = metrics[k]
        print(f"  {k:<{width}} {v:.4g}" if isinstance(v, float) else f"  {k:<{width}} {v}")


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
    sub = p.add_subparsers(
        dest="command", required=True, metavar="{sim,bench,train,eval,export,check-bundle}"
    )

    sim = sub.add_parser("sim", help="run one simulated episode and write its files")
    sim.add_argument("task", help="task name (navigation | quad_navigation)")
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
        default=None,
        help=f"control periods, at most {MAX_STEPS} (the trajectory is kept in memory; "
        "default 2000, quad_navigation 400)",
    )
    sim.add_argument(
        "--backend",
        default="jax",
        help="quad_navigation: jax | mjx | mujoco | pybullet (mjx: no aerodynamics)",
    )
    sim.add_argument("--controller", default="pid", help="quad_navigation: pid | geometric")
    sim.add_argument(
        "--sphere",
        action="append",
        default=[],
        metavar="X,Y,Z,R",
        help="quad_navigation: a spherical obstacle, centre and radius [m] (repeatable)",
    )
    sim.add_argument(
        "--seed", type=int, default=0, help="random seed (any integer; no aliasing mod 2^32)"
    )
    sim.add_argument("--out", type=Path, default=None, help="output folder")
    sim.add_argument("--overwrite", action="store_true", help="replace files in a non-empty --out")
    sim.add_argument("--no-animation", action="store_true", help="skip the GIF (faster)")
    sim.add_argument(
        "--policy",
        default=None,
        help="navigation: trained policy folder or shipped name instead of go-to-goal",
    )
    sim.add_argument("--quiet", action="store_true", help="no progress lines")

    bench = sub.add_parser("bench", help="measure simulation throughput against a NumPy loop")
    bench.add_argument("task", help="task name (navigation), or quad (quadrotor backends)")
    bench.add_argument("--robots", type=_positive_int, default=16)
    bench.add_argument("--envs", default="1,64,1024", help="comma-separated environment counts")
    bench.add_argument("--steps", type=_positive_int, default=100, help="steps per timed call")
    bench.add_argument(
        "--devices",
        default=None,
        help="navigation: comma-separated JAX device counts per batch (default: 1 and one per "
        "core; on the CPU, XLA host devices, the batch split across them)",
    )
    bench.add_argument("--out", type=Path, default=None, help="write the JSON report here")
    _add_learning_parsers(sub)
    _add_bundle_parsers(sub)
    return p


def _add_bundle_parsers(sub) -> None:
    """``export`` and ``check-bundle`` (``marl_robots.policies.export`` / ``runtime``)."""
    ex = sub.add_parser("export", help="export a trained policy as a bundle (ONNX, PyTorch)")
    ex.add_argument("policy", help="policy folder (train --out or its policy/), or shipped name")
    ex.add_argument("--format", default="onnx,torch", help="comma-separated: onnx, torch")
    ex.add_argument("--out", type=Path, required=True, help="bundle folder")
    ex.add_argument(
        "--observations",
        type=_positive_int,
        default=1024,
        help="recorded observations for the JAX parity check",
    )
    ex.add_argument("--seed", type=int, default=0)
    ex.add_argument("--overwrite", action="store_true", help="replace files in a non-empty --out")
    ck = sub.add_parser("check-bundle", help="load and check a bundle as a robot would")
    ck.add_argument("bundle", help="bundle folder")
    ck.add_argument("--robot", default=None, help="this robot's family (refuse other bundles)")
    ck.add_argument("--neighbours", type=int, default=None, help="this robot's neighbour budget")
    ck.add_argument("--backend", default=None, help="onnx | torch (default: first installed)")


def _cmd_export(args) -> int:
    from marl_robots.policies.bundle import WEIGHT_FILES, BundleError  # noqa: PLC0415

    formats = tuple(f.strip() for f in args.format.split(",") if f.strip())
    for fmt in formats:
        _choice("format", fmt, WEIGHT_FILES)
    if not formats:
        raise UsageError("--format names no format; known formats: onnx, torch")
    _prepare_out(args.out, args.overwrite)
    from marl_robots.policies.export import ExportError, export  # noqa: PLC0415 - imports JAX

    try:
        m = export(args.policy, args.out, formats, args.observations, args.seed)
    except (FileNotFoundError, ExportError, BundleError) as err:
        raise UsageError(str(err)) from None
    except ImportError as err:
        raise UsageError(
            f"--format {args.format} needs {err.name} (pip install 'marl_robots[runtime]')"
        ) from None
    par = m["parity"]
    errs = ", ".join(f"{k} {v:.2g}" for k, v in par["max_abs_error"].items())
    print(
        f"exported {m['policy']} policy for {m['robot']['family']} robots to {args.out}: "
        f"{', '.join(m['weights'])}; parity with JAX on {par['observations']} recorded "
        f"observations: max |error| {errs} (tolerance {par['atol']:g})"
    )
    return 0


def _cmd_check_bundle(args) -> int:
    from marl_robots.policies.bundle import BundleError  # noqa: PLC0415
    from marl_robots.policies.runtime import load_bundle  # noqa: PLC0415 - no JAX

    try:
        policy = load_bundle(
            args.bundle, backend=args.backend, robot=args.robot, neighbours=args.neighbours
        )
    except BundleError as err:
        raise UsageError(str(err)) from None
    m = policy.manifest
    print(
        f"bundle {args.bundle}: {m['policy']} policy for {m['robot']['family']} robots, "
        f"observation {m['observation']['dim']} values, action {m['action']['dim']} "
        f"{m['action']['units']}; hashes ok; runs on {policy.backend}"
    )
    return 0


def _add_learning_parsers(sub) -> None:
    """``train`` and ``eval`` (learned policies, ``marl_robots.policies``)."""
    tr = sub.add_parser("train", help="train a learned policy with MAPPO")
    tr.add_argument("task", help="task name (navigation)")
    tr.add_argument("--policy", default="gnn", help="gnn | cbf-tuning")
    tr.add_argument("--robots", type=_positive_int, default=8)
    tr.add_argument(
        "--scenario",
        default="corridor",
        help="antipodal | random | corridor | crossing; several comma-separated share the envs",
    )
    tr.add_argument("--robot", default="unicycle", help="unicycle | single_integrator")
    tr.add_argument("--num-envs", type=_positive_int, default=64)
    tr.add_argument("--rollout-steps", type=_positive_int, default=64)
    tr.add_argument("--episode-length", type=_positive_int, default=900, help="steps")
    tr.add_argument("--total-steps", type=_positive_float, default=1e6, help="env steps")
    tr.add_argument("--lr", type=_positive_float, default=3e-4)
    tr.add_argument("--centralised-critic", action="store_true")
    tr.add_argument("--critic", default="mlp", help="mlp | gnn (value network, training only)")
    tr.add_argument("--hidden", type=_positive_int, default=32, help="GNN width")
    tr.add_argument("--epochs", type=_positive_int, default=2, help="PPO passes per update")
    tr.add_argument("--minibatches", type=_positive_int, default=2)
    tr.add_argument("--discount", type=_positive_float, default=0.99)
    tr.add_argument(
        "--residual",
        type=float,
        default=0.0,
        help="gnn: learned correction around go-to-goal, fraction of v_max (0: none)",
    )
    tr.add_argument(
        "--team-reward", type=float, default=0.0, help="weight of the team mean reward, 0..1"
    )
    tr.add_argument("--time-penalty", type=float, default=0.01,
                    help="reward subtracted per robot-step away from the goal (>= 0)")
    tr.add_argument("--checkpoint-every", type=_positive_int, default=10, help="updates")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--out", type=Path, required=True, help="run folder")
    tr.add_argument("--resume", action="store_true", help="continue from --out/checkpoint")
    tr.add_argument("--init", type=Path, default=None, metavar="RUN",
                    help="fine-tune: start from the networks, optimiser and statistics of the "
                         "run folder RUN (its checkpoint); scenarios, envs and seed are this "
                         "run's")
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

    if args.task == QUAD_TASK:
        return _cmd_sim_quad(args)
    _choice("task", args.task, [*TASKS.names(), QUAD_TASK])
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
        steps=args.steps or 2000,
        seed=args.seed,
    )
    if args.gamma is not None:
        spec = _replace(spec, gamma=args.gamma)
    if args.safety_distance is not None:
        spec = _replace(spec, safety_distance_m=args.safety_distance)
    try:
        if args.policy is not None:
            metrics = _sim_policy(spec, args)
        else:
            metrics = run_navigation(
                spec, args.out, animation=not args.no_animation, quiet=args.quiet
            )
    except ValueError as err:  # a layout that cannot hold this many robots, for example
        raise UsageError(str(err)) from None
    keys = (
        "robots",
        "steps",
        "collisions",
        "obstacle_contacts",
        "min_separation_m",
        "success_rate",
        "mean_time_to_goal_s",
        "filter_interventions",
        "qp_infeasible",
        "env_steps_per_s",
    )
    print(f"navigation/{spec.scenario}: {spec.robots} {spec.robot} robots, filter={spec.filter}")
    _print_metrics(metrics, keys, width=22)
    if args.out is not None:
        print(
            f"  wrote {args.out}/metrics.json, rollout.npz, trajectories.png"
            + ("" if args.no_animation else ", rollout.gif")
        )
    return 0


def _sim_policy(spec, args) -> dict:
    """``sim navigation --policy``: one episode with a trained policy behind the filter."""
    from marl_robots.policies.evaluate import simulate_policy  # noqa: PLC0415
    from marl_robots.sim.run import metrics_of, write_outputs  # noqa: PLC0415

    def progress(done, total):
        if not args.quiet:
            print(f"  step {done}/{total} ({100 * done // total}%)", file=sys.stderr, flush=True)

    try:
        task, params, traj, agg, timing = simulate_policy(spec, args.policy, progress)
    except FileNotFoundError as err:
        raise UsageError(f"--policy: {err}") from None
    metrics = metrics_of(spec, task, params, traj, agg, timing)
    metrics["policy"] = args.policy
    if args.out is not None:
        write_outputs(args.out, spec, task, params, traj, metrics, not args.no_animation)
    return metrics


def _cmd_sim_quad(args) -> int:
    """``sim quad_navigation``: Crazyflie drones on a backend (``sim/quad_run.py``)."""
    from marl_robots.sim import quad_run  # noqa: PLC0415 - imports JAX
    from marl_robots.sim.tasks.quad_navigation import (  # noqa: PLC0415
        QUAD_CONTROLLERS,
        QUAD_SCENARIOS,
    )

    _choice("backend", args.backend, quad_run.QUAD_BACKENDS)
    _choice("scenario", args.scenario, QUAD_SCENARIOS)
    _choice("controller", args.controller, QUAD_CONTROLLERS)
    _choice("filter", args.filter, FILTERS)
    spheres = tuple(_sphere(text) for text in args.sphere)
    if args.out is not None:
        _prepare_out(args.out, args.overwrite)
    spec = quad_run.QuadRunSpec(
        backend=args.backend,
        robots=args.robots,
        scenario=args.scenario,
        controller=args.controller,
        filter=args.filter,
        steps=args.steps or 400,
        seed=args.seed,
        aero=args.backend != "mjx",  # MJX has no aerodynamic effects
        obstacles=spheres,
    )
    try:
        metrics = quad_run.run_quad_navigation(spec, args.out, animation=not args.no_animation)
    except ValueError as err:  # a layout that cannot hold this many drones, for example
        raise UsageError(str(err)) from None
    print(
        f"quad_navigation/{spec.scenario}: {spec.robots} drones on {spec.backend}, "
        f"{spec.controller}, filter={spec.filter}"
    )
    keys = (
        "steps",
        "ellipsoid_violations",
        "collisions",
        "min_separation_m",
        "success_rate",
        "mean_time_to_goal_s",
        "filter_interventions",
        "qp_infeasible",
        "env_steps_per_s",
    )
    if spheres:
        keys += ("obstacle_violations", "obstacle_contacts", "min_obstacle_clearance_m")
    _print_metrics(metrics, keys, width=26 if spheres else 22)
    if args.out is not None:
        print(
            f"  wrote {args.out}/metrics.json, rollout.npz, trajectories.png"
            + ("" if args.no_animation else ", rollout.gif")
        )
    return 0


def _sphere(text: str) -> tuple[float, ...]:
    """``--sphere X,Y,Z,R`` -> (x, y, z, radius) [m]: four finite numbers, radius > 0."""
    try:
        values = tuple(float(x) for x in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4 or not all(math.isfinite(v) for v in values) or values[3] <= 0:
        raise UsageError(f"--sphere expects X,Y,Z,R in metres with R > 0, got {text!r}")
    return values


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
    devices = None
    if args.devices is not None:
        try:
            devices = tuple(int(d) for d in args.devices.split(","))
        except ValueError:
            raise UsageError(
                f"--devices expects comma-separated integers, got {args.devices!r}"
            ) from None
        if not devices or min(devices) <= 0:
            raise UsageError(f"--devices must all be positive, got {args.devices!r}")
    return main_bench(args.out, args.robots, envs, args.steps, devices)


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
    for scenario in args.scenario.split(","):  # several: the envs are split between them
        _check_instance(argparse.Namespace(scenario=scenario, robot=args.robot))
    if not args.resume:
        _prepare_out(args.out, args.overwrite)
    elif not (args.out / "checkpoint" / "state.msgpack").is_file():
        raise UsageError(f"--resume: no checkpoint in {args.out}/checkpoint")
    if args.init is not None and not (args.init / "checkpoint" / "state.msgpack").is_file():
        raise UsageError(f"--init: no checkpoint in {args.init}/checkpoint")
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
            critic=args.critic,
            hidden=args.hidden,
            epochs=args.epochs,
            minibatches=args.minibatches,
            discount=args.discount,
            residual=args.residual,
            team_reward=args.team_reward,
            time_penalty=args.time_penalty,
        )
        summary = train(
            config,
            int(args.total_steps),
            args.seed,
            args.out,
            args.resume,
            args.checkpoint_every,
            args.quiet,
            args.init,
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
    _print_metrics(
        summary,
        (
            "success_rate",
            "mean_time_to_goal_s",
            "collisions",
            "obstacle_contacts",
            "min_separation_m",
            "filter_interventions",
            "relaxed_or_infeasible_rate",
            "env_steps_per_s",
        ),
        width=26,
    )
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
        if args.command == "export":
            return _cmd_export(args)
        if args.command == "check-bundle":
            return _cmd_check_bundle(args)
        return _cmd_bench(args)
    except (UsageError, UnknownNameError) as err:
        print(f"marl-robots: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("marl-robots: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
