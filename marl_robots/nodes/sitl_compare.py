r"""JAX vs ROS side by side: one policy, the same scenarios, evaluated both ways (not a test).

For every scenario and seed it runs

* **JAX**: ``policies.evaluate.evaluate`` - one episode of ``--steps`` periods, the policy's
  deterministic action behind the env's CBF filter, all in one compiled program;
* **ROS**: the launch expansion with ``policy:=<bundle>`` - ``sim_node`` plus one
  ``swarm_host`` hosting every robot's ``policy_node`` and ``safety_filter_node`` (the
  simulation launch default; ``--multi-process`` starts one process per node instead), real
  processes on a private loopback domain, until ``--steps`` simulated periods have passed;
  the figures come from ``sim_node``'s status.

and prints one row per (scenario, seed, side): the fraction of robots that reached their goal
(JAX also: at their goal at the end), mean time to goal [s], minimum separation [m],
collisions (pairs closer than the body diameter) and filter interventions (robot-steps where
the filter changed the command; ROS: the sum of every ``safety_filter_node``'s count from its
diagnostics, which it updates once per state it answers).  The bundle is exported from the policy
folder first (``marl-robots export``, parity checked) unless ``--bundle`` is given.

    python -m marl_robots.nodes.sitl_compare runs/x --scenarios corridor,antipodal --robots 8 \
        --seeds 0,1,2 --steps 2000 --rtf 0.5 --json side_by_side.json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from marl_robots.core import defaults
from marl_robots.core.machine import machine_description

#: Longest wait for the swarm to start commanding (start-up, JAX compile, discovery) [s].
START_TIMEOUT_S = 300.0


def ros_episode(bundle: str, scenario: str, robots: int, seed: int, steps: int, rtf: float,
                log_dir: Path, one_process: bool = True) -> dict:
    """One ROS software-in-the-loop episode; returns the ``sim_node`` figures at ``steps``."""
    import rclpy  # noqa: PLC0415
    from diagnostic_msgs.msg import DiagnosticArray  # noqa: PLC0415
    from rclpy.executors import SingleThreadedExecutor  # noqa: PLC0415

    from marl_robots.nodes import conversions as conv  # noqa: PLC0415
    from marl_robots.nodes.common import DIAGNOSTICS_QOS  # noqa: PLC0415
    from marl_robots.nodes.expansion import expand_swarm, ros_arguments  # noqa: PLC0415
    from marl_robots.nodes.fleet import default_name  # noqa: PLC0415

    dt = defaults.DT_S
    specs = expand_swarm(robots=robots, scenario=scenario, seed=seed, policy=bundle,
                         sim_overrides={"rate_hz": rtf / dt}, one_process=one_process)
    domain = 1 + (os.getpid() * 7 + seed * 13 + len(scenario)) % 232
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               PYTHONUNBUFFERED="1")
    env.setdefault("AMENT_PREFIX_PATH", sys.prefix)
    os.environ.update(ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    procs = []
    for spec in specs:
        name = f"{scenario}_{seed}_{spec.fqn.strip('/').replace('/', '_') or 'x'}.log"
        log = open(log_dir / name, "w")  # noqa: SIM115 - closed with the process
        procs.append((log, subprocess.Popen(
            [sys.executable, "-m", spec.module, *ros_arguments(spec)], env=env, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True)))
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain)
    node = rclpy.create_node("sitl_compare", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    status = []
    node.create_subscription(
        DiagnosticArray, "/diagnostics",
        lambda m: status.append(conv.diagnostic_values(m)[0][3]), DIAGNOSTICS_QOS)
    interventions = {}  # robot -> newest count of its safety filter

    def on_robot_diagnostics(msg) -> None:
        for name, _, _, values in conv.diagnostic_values(msg):
            if name.startswith("safety_filter") and "interventions" in values:
                interventions[name.split(": ", 1)[-1]] = int(float(values["interventions"]))

    for i in range(robots):
        node.create_subscription(DiagnosticArray, f"/{default_name(i)}/diagnostics",
                                 on_robot_diagnostics, DIAGNOSTICS_QOS)

    def spin_until(predicate, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end and not predicate():
            if any(p.poll() is not None for _, p in procs):
                return False
            executor.spin_once(timeout_sec=0.05)
        return predicate()

    try:
        if not spin_until(lambda: bool(status)
                          and int(status[-1]["robots_commanding"]) == robots, START_TIMEOUT_S):
            dead = [p.returncode for _, p in procs if p.poll() is not None]
            raise RuntimeError(f"ROS swarm did not start (exit codes {dead}); logs in {log_dir}")
        t0 = time.monotonic()
        spin_until(lambda: int(status[-1]["steps"]) >= steps
                   or int(status[-1]["robots_at_goal_once"]) == robots,
                   steps * dt / max(rtf, 1e-3) * 3 + 120)
        wall = time.monotonic() - t0
        last = status[-1]
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
        for _, p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGINT)
        for log, p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
            log.close()
    reached = [int(r) for r in str(last["reached_step"]).split()]
    times = [r * dt for r in reached if r >= 0]
    return {
        "reached_rate": sum(r >= 0 for r in reached) / robots,
        "mean_time_to_goal_s": sum(times) / len(times) if times else None,
        "min_separation_m": float(last["min_separation_m"]),
        "collisions": int(float(last["collisions"])),
        # Sum of the filters' newest counts (diagnostics at 2 Hz: up to 0.5 s wall late).
        "filter_interventions": sum(interventions.values()) if len(interventions) == robots
        else None,
        "steps": int(float(last["steps"])),
        "real_time_factor": float(last["real_time_factor"]),
        "wall_s": wall,
    }


def jax_episode(policy_dir: str, scenario: str, robots: int, seed: int, steps: int) -> dict:
    """One JAX episode of ``policies.evaluate`` (same figures), from the ROS side's layout.

    ``fleet_from_scenario(seed=seed)`` resets with ``PRNGKey(seed)``; ``evaluate``'s episode 0
    of a seed would start from a split of it: another ``random`` layout.
    """
    import jax  # noqa: PLC0415 - JAX

    from marl_robots.policies.evaluate import evaluate  # noqa: PLC0415

    _, rows = evaluate(policy_dir, scenario, robots, "unicycle", 1, steps, seed,
                       defaults.GAMMA, reset_keys=jax.random.PRNGKey(seed)[None])
    r = rows[0]
    fig = {k: r[k] for k in ("reached_rate", "mean_time_to_goal_s", "min_separation_m",
                             "collisions", "filter_interventions")}
    return {**fig, "success_at_end": r["success_rate"]}


def main(argv=None) -> int:
    """Run both sides, print the table and write the JSON record."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("policy", help="trained policy folder (JAX side)")
    parser.add_argument("--bundle", default="", help="its bundle (default: exported here)")
    parser.add_argument("--scenarios", default="corridor,antipodal")
    parser.add_argument("--robots", type=int, default=8)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--rtf", type=float, default=0.5, help="simulated / wall-clock time")
    parser.add_argument("--multi-process", action="store_true",
                        help="one process per node (default: one swarm_host)")
    parser.add_argument("--json", type=Path, default=Path("side_by_side.json"))
    args = parser.parse_args(argv)
    log_dir = Path(tempfile.mkdtemp(prefix="sitl_compare_"))
    bundle = args.bundle
    if not bundle:
        from marl_robots.policies.export import export  # noqa: PLC0415

        bundle = str(log_dir / "bundle")
        export(args.policy, bundle)
    rows = []
    for scenario in args.scenarios.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            j = jax_episode(args.policy, scenario, args.robots, seed, args.steps)
            r = ros_episode(bundle, scenario, args.robots, seed, args.steps, args.rtf, log_dir,
                            not args.multi_process)
            for side, fig in (("JAX", j), ("ROS", r)):
                rows.append({"scenario": scenario, "seed": seed, "side": side, **fig})
                ttg = fig["mean_time_to_goal_s"]
                print(f"{scenario:<10} seed {seed}  {side}  reached {fig['reached_rate']:.3f}  "
                      f"time to goal {'-' if ttg is None else f'{ttg:.1f} s'}  "
                      f"min separation {fig['min_separation_m']:.3f} m  "
                      f"collisions {fig['collisions']}  "
                      f"interventions {fig['filter_interventions']}", flush=True)
    record = {"policy": args.policy, "bundle": bundle, "robots": args.robots,
              "steps": args.steps, "rtf": args.rtf, "machine": machine_description(),
              "load": Path("/proc/loadavg").read_text().split()[:3], "rows": rows}
    args.json.write_text(json.dumps(record, indent=2))
    print(f"wrote {args.json} (logs in {log_dir})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
