"""Benchmark: real-time factor of software in the loop, per layout and fleet size (not a test).

For every fleet size (``--robots``) and layout (``--layout``) it starts the swarm from the
launch expansion on a private domain (loopback discovery), exactly as ``ros2 launch
marl_robots sim_swarm.launch.py`` would (``sim_node`` + per-robot controller and safety filter:
the filter runs on every robot), lets every robot command, then measures over
``--duration-s`` wall-clock seconds:

* ``sim_rtf``: simulated seconds per wall-clock second (``sim_node`` steps on a steady timer at
  ``--rtf`` x real time and falls behind when its core is busy);
* ``answered``: filtered commands the simulator received per robot and step (1.0: every robot
  answered every state; less: the nodes cannot keep up and the simulator applies older
  commands);
* ``rtf`` = ``sim_rtf x min(1, answered)``: the closed loop's speed, simulated control periods
  completed per wall-clock period;
* collisions, robots at their goal, minimum separation (from ``sim_node``'s status), and the
  CPU each process used (cores).

Layouts: ``one_process`` (``sim_node`` + one ``swarm_host`` hosting every robot's nodes,
``fleet_state:=pose_array``: the launch default for simulation), ``multi_process`` (two
processes per robot, ``fleet_state:=pose_array``), ``multi_process_odometry`` (two processes per
robot reading N odometry topics each: the layout before this benchmark existed).  Layouts with
more than ``--max-processes`` processes are not started (reported as skipped, with why).

    python -m marl_robots.nodes.sitl_bench --robots 16,64 --layout one_process,multi_process \
        --duration-s 20 --json sitl_rtf.json
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

from marl_robots.nodes.latency_bench import machine_description

LAYOUTS = ("one_process", "multi_process", "multi_process_odometry")
#: Real-time factor targets of issue 10 on the 2-core development machine.
TARGETS = {16: 1.0, 64: 0.5}
#: Longest wait for every robot to command (process start-up, JAX compile, discovery) [s].
START_TIMEOUT_S = 300.0


def _layout_specs(robots: int, layout: str, scenario: str, rate_hz: float, seed: int):
    from marl_robots.nodes.expansion import expand_swarm  # noqa: PLC0415

    return expand_swarm(robots=robots, scenario=scenario, seed=seed,
                        sim_overrides={"rate_hz": rate_hz},
                        one_process=layout == "one_process",
                        fleet_state="odometry" if layout.endswith("odometry") else "pose_array")


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _renice(niceness: int) -> None:
    """In a new session's child: nice increment for it and for its scheduler autogroup.

    With ``CONFIG_SCHED_AUTOGROUP`` (Linux default) every session is one scheduling group and
    the CPU is shared between groups first; a plain ``nice`` only ranks processes inside their
    group, so the group's own nice (``/proc/self/autogroup``) is set too where it exists.
    """
    try:
        Path("/proc/self/autogroup").write_text(str(niceness))
    except OSError:
        pass  # no autogroups here: plain nice is what counts
    os.nice(niceness)


def run_layout(robots: int, layout: str, duration_s: float, rtf: float, scenario: str,
               seed: int, log_dir: Path, niceness: int = 0) -> dict:
    """Start one swarm, measure it for ``duration_s`` wall seconds, stop it (SIGINT).

    Args:
        niceness: ``nice`` increment of the swarm's processes (negative: ahead of the other
            jobs of a shared machine; needs the privilege).

    Returns:
        The figures of this row (see the module docstring).

    """
    import rclpy  # noqa: PLC0415
    from diagnostic_msgs.msg import DiagnosticArray  # noqa: PLC0415
    from rclpy.executors import SingleThreadedExecutor  # noqa: PLC0415

    from marl_robots.nodes import conversions as conv  # noqa: PLC0415
    from marl_robots.nodes.common import DIAGNOSTICS_QOS  # noqa: PLC0415
    from marl_robots.nodes.expansion import ros_arguments  # noqa: PLC0415

    dt_s = 0.033
    specs = _layout_specs(robots, layout, scenario, rtf / dt_s, seed)
    domain = 1 + (os.getpid() * 7 + robots * 13 + LAYOUTS.index(layout)) % 232
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               PYTHONUNBUFFERED="1")
    env.pop("ROS_LOCALHOST_ONLY", None)
    env.setdefault("AMENT_PREFIX_PATH", sys.prefix)
    os.environ.update(ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    procs = []
    for spec in specs:
        log = open(log_dir / f"{layout}_{robots}_{spec.fqn.strip('/').replace('/', '_') or 'x'}"
                   ".log", "w")  # noqa: SIM115 - closed with the process
        procs.append((spec.fqn, log, subprocess.Popen(
            [sys.executable, "-m", spec.module, *ros_arguments(spec)], env=env, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=(lambda: _renice(niceness)) if niceness else None)))
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain)
    node = rclpy.create_node("sitl_bench", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    status = []

    def on_status(msg):
        values = conv.diagnostic_values(msg)[0][3]
        status.append((time.monotonic(), {k: float(v) for k, v in values.items()
                                          if k != "reached_step"}))

    node.create_subscription(DiagnosticArray, "/diagnostics", on_status, DIAGNOSTICS_QOS)

    def spin_until(predicate, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end and not predicate():
            if any(p.poll() is not None for _, _, p in procs):
                return False
            executor.spin_once(timeout_sec=0.05)
        return predicate()

    t_launch = time.monotonic()
    result = {"robots": robots, "layout": layout, "processes": len(procs)}
    try:
        ready = spin_until(lambda: bool(status) and status[-1][1]["robots_commanding"] == robots,
                           START_TIMEOUT_S)
        if not ready:
            dead = [(fqn, p.returncode) for fqn, _, p in procs if p.poll() is not None]
            raise RuntimeError(f"{layout} with {robots} robots did not start within "
                               f"{START_TIMEOUT_S} s (exited: {dead}); logs in {log_dir}")
        result["start_s"] = time.monotonic() - t_launch
        first = len(status)
        spin_until(lambda: len(status) > first, 30.0)
        t0, s0 = status[-1]
        cpu0 = {fqn: _cpu_s(p.pid) for fqn, _, p in procs}
        spin_until(lambda: status[-1][0] - t0 >= duration_s, duration_s + 60.0)
        t1, s1 = status[-1]
        cpu1 = {fqn: _cpu_s(p.pid) for fqn, _, p in procs}
        wall = t1 - t0
        steps = s1["steps"] - s0["steps"]
        sim_rtf = (s1["sim_time_s"] - s0["sim_time_s"]) / wall
        answered = (s1["commands_received"] - s0["commands_received"]) / max(1.0, steps * robots)
        cores = {fqn: (cpu1[fqn] - cpu0[fqn]) / wall for fqn in cpu0}
        result.update(
            wall_s=wall, sim_s=s1["sim_time_s"] - s0["sim_time_s"], target_rtf=rtf,
            sim_rtf=sim_rtf, answered=answered, rtf=sim_rtf * min(1.0, answered),
            collisions=int(s1["collisions"]), at_goal=int(s1["robots_at_goal_once"]),
            min_separation_m=s1["min_separation_m"], sim_time_total_s=s1["sim_time_s"],
            cores_sim=cores.get("/sim", 0.0),
            cores_nodes=sum(c for fqn, c in cores.items() if fqn != "/sim"),
        )
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
        for _, _, p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGINT)
        codes = []
        for _, log, p in procs:
            try:
                codes.append(p.wait(timeout=30))
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                codes.append(p.wait())
            log.close()
    result["exit_codes_nonzero"] = sum(1 for c in codes if c != 0)
    return result


def _load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def main(argv=None) -> int:
    """Run the benchmark rows, print a table and write the JSON record."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--robots", default="16,64", help="comma-separated fleet sizes")
    parser.add_argument("--layout", default="one_process,multi_process",
                        help=f"comma-separated layouts: {', '.join(LAYOUTS)}")
    parser.add_argument("--duration-s", type=float, default=20.0, help="measured window [s]")
    parser.add_argument("--rtf", type=float, default=1.0,
                        help="simulator target: simulated seconds per wall second")
    parser.add_argument("--scenario", default="antipodal")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-processes", type=int, default=40,
                        help="skip layouts that would start more processes than this")
    parser.add_argument("--nice", type=int, default=0,
                        help="nice increment of the swarm's processes (negative: ahead of the "
                             "other jobs of a shared machine, needs root); recorded")
    parser.add_argument("--json", type=Path, default=Path("sitl_rtf.json"))
    args = parser.parse_args(argv)
    if args.nice < 0 and os.geteuid() != 0:
        parser.exit(2, f"error: --nice {args.nice} (a negative increment) needs root\n")
    try:
        sizes = [int(v) for v in args.robots.split(",") if v.strip()]
    except ValueError:
        parser.exit(2, f"error: --robots must be comma-separated integers, got {args.robots!r}\n")
    layouts = [v.strip() for v in args.layout.split(",") if v.strip()]
    bad = [v for v in layouts if v not in LAYOUTS]
    if bad or not layouts:
        parser.exit(2, f"error: unknown --layout {bad}; choose from {', '.join(LAYOUTS)}\n")
    if not sizes or min(sizes) < 1:
        parser.exit(2, f"error: --robots must be >= 1, got {args.robots!r}\n")
    if not (args.duration_s > 0 and args.rtf > 0):
        parser.exit(2, "error: --duration-s and --rtf must be > 0\n")
    log_dir = Path(tempfile.mkdtemp(prefix="sitl_bench_"))
    rows = []
    record = {"benchmark": "software-in-the-loop real-time factor (sim_node + per-robot "
                           "controller and safety filter)",
              "machine": machine_description(), "date_utc": time.strftime(
                  "%Y-%m-%d %H:%M", time.gmtime()), "load_before": _load(),
              "scenario": args.scenario, "duration_s": args.duration_s, "nice": args.nice,
              "rows": rows}
    header = (f"{'robots':>6} {'layout':<23} {'procs':>5} {'sim_rtf':>7} {'answered':>8} "
              f"{'rtf':>6} {'target':>6} {'coll':>4} {'goal':>7} {'cores':>11} {'start_s':>7}")
    print(header)
    for robots in sizes:
        for layout in layouts:
            processes = 2 if layout == "one_process" else 1 + 2 * robots
            if processes > args.max_processes:
                row = {"robots": robots, "layout": layout, "processes": processes,
                       "skipped": f"{processes} processes > --max-processes "
                                  f"{args.max_processes}"}
                rows.append(row)
                print(f"{robots:>6} {layout:<23} {processes:>5} skipped: {row['skipped']}")
                continue
            row = run_layout(robots, layout, args.duration_s, args.rtf, args.scenario,
                             args.seed, log_dir, args.nice)
            row["load_after"] = _load()
            target = TARGETS.get(robots)
            row["target"] = target
            row["meets_target"] = None if target is None else bool(
                row["rtf"] >= target and row["collisions"] == 0)
            rows.append(row)
            cores = f"{row['cores_sim']:.2f}+{row['cores_nodes']:.2f}"
            print(f"{robots:>6} {layout:<23} {processes:>5} {row['sim_rtf']:>7.3f} "
                  f"{row['answered']:>8.3f} {row['rtf']:>6.3f} "
                  f"{'-' if target is None else target:>6} {row['collisions']:>4} "
                  f"{row['at_goal']:>3}/{robots:<3} {cores:>11} {row['start_s']:>7.1f}",
                  flush=True)
    record["load_after"] = _load()
    m = record["machine"]
    print(f"machine: {m['cpu']}, {m['cores']} cores, {m['os']}, Python {m['python']}, "
          f"{m['rmw']}; load before {record['load_before']}, after {record['load_after']}"
          f"; swarm niceness {args.nice:+d}")
    args.json.write_text(json.dumps(record, indent=2))
    print(f"wrote {args.json} (node logs in {log_dir})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
