"""Whole stack in separate processes: sim_node + 8 x (controller_node + safety_filter_node).

Started from the same per-robot expansion the launch file uses.  One run (module fixture)
drives the antipodal swap to completion, then stops sim_node to check that every filter falls
back to zero velocity for stale state, then SIGINTs everything; the tests assert on what the
run recorded.
"""

from __future__ import annotations

import math
import re
import time

import numpy as np
import pytest

pytest.importorskip("rclpy")

from conftest import Launcher, Probe, next_domain_id  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import Twist  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from std_msgs.msg import UInt32  # noqa: E402

from marl_robots.nodes import conversions as conv  # noqa: E402
from marl_robots.nodes.common import DIAGNOSTICS_QOS, LATCHED_QOS, STATE_QOS  # noqa: E402
from marl_robots.nodes.expansion import expand_swarm  # noqa: E402
from marl_robots.nodes.fleet import fleet_from_scenario  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]

N_ROBOTS = 8
#: Wall-clock budget for all robots to reach their goals (start-up included) [s]; the pure
#: loop needs ~16 s of simulated time, and a loaded 2-core machine runs the sim below real time.
GOAL_BUDGET_S = 180.0
#: Simulated-time budget for the swap [s].
SIM_BUDGET_S = 45.0
#: The filters' state timeout (controllers/safety_filter_node.yaml) [s].
STATE_TIMEOUT_S = 0.5
#: Goal tolerance of the navigation task, plus float32 odometry rounding [m].
GOAL_TOL_M = 0.05 + 1e-4
LOOKAHEAD_M = 0.04


class StackRun:
    """What the probe saw during one whole-stack run."""

    def __init__(self):
        self.status = None
        self.collisions = None
        self.min_goal_dist = np.full(N_ROBOTS, np.inf)
        self.cmds = {i: [] for i in range(N_ROBOTS)}
        self.diags = {i: [] for i in range(N_ROBOTS)}
        self.reached = False
        self.wall_to_goal_s = math.inf
        self.t_kill = math.inf
        self.return_codes = {}
        self.logs = ""


def _run_stack(tmp_dir) -> StackRun:
    run = StackRun()
    domain = next_domain_id()
    fleet = fleet_from_scenario(N_ROBOTS)
    goals = np.array([r.goal for r in fleet.robots])
    launcher = Launcher(domain, tmp_dir)
    probe = Probe(domain)
    node = probe.node

    def on_status(msg):
        run.status = conv.diagnostic_values(msg)[0]

    def on_odom(i, msg):
        x, y, yaw = conv.pose_from_odom(msg)
        point = np.array([x + LOOKAHEAD_M * math.cos(yaw), y + LOOKAHEAD_M * math.sin(yaw)])
        run.min_goal_dist[i] = min(run.min_goal_dist[i], float(np.linalg.norm(point - goals[i])))

    node.create_subscription(DiagnosticArray, "/diagnostics", on_status, DIAGNOSTICS_QOS)
    node.create_subscription(UInt32, "/collisions",
                             lambda m: setattr(run, "collisions", m.data), LATCHED_QOS)
    for i, name in enumerate(fleet.names):
        node.create_subscription(Odometry, f"/{name}/odom", lambda m, i=i: on_odom(i, m),
                                 STATE_QOS)
        node.create_subscription(
            Twist, f"/{name}/cmd_vel",
            lambda m, i=i: run.cmds[i].append((time.monotonic(), m.linear.x, m.angular.z)),
            STATE_QOS)
        node.create_subscription(
            DiagnosticArray, f"/{name}/diagnostics",
            lambda m, i=i: run.diags[i].append((time.monotonic(),
                                                conv.diagnostic_values(m)[0][2])),
            DIAGNOSTICS_QOS)
    try:
        t0 = time.monotonic()
        for spec in expand_swarm(robots=N_ROBOTS, scenario="antipodal"):
            launcher.start_spec(spec)

        def all_reached():
            return run.status is not None and int(run.status[3]["robots_at_goal_once"]) == \
                N_ROBOTS

        run.reached = probe.wait_for(all_reached, timeout=GOAL_BUDGET_S)
        run.wall_to_goal_s = time.monotonic() - t0
        probe.wait_for(lambda: run.collisions is not None)
        if run.reached:
            # Fault: the simulator goes away, so odometry stops for every robot.
            run.t_kill = time.monotonic()
            sim = launcher.procs[0]
            # SIGINT without waiting for the exit: the probe must keep spinning meanwhile, or
            # every message would be time-stamped when the simulator's teardown ended.
            sim.interrupt()

            def all_braked():
                return all(_braked_since(run, i) is not None for i in range(N_ROBOTS))

            probe.wait_for(all_braked, timeout=10.0)
            run.return_codes[sim.tag] = sim.stop()
    finally:
        probe.close()
        run.return_codes.update(launcher.stop_all() | run.return_codes)
        run.logs = launcher.logs()
    return run


def _braked_since(run: StackRun, i: int):
    """(first zero command of the final all-zero streak, the state age [s] the first stale
    report after the kill gives) - or None.

    The report is judged by the age it states, not by when it reached the probe: diagnostics
    are a reliable stream, and a datagram lost on a loaded machine holds the samples behind
    it until the repair (once seen: every report 1 s late while the zero commands came on
    time).
    """
    after = [c for c in run.cmds[i] if c[0] >= run.t_kill]
    stale = [msg for t, msg in run.diags[i] if t >= run.t_kill and msg.startswith("stale state")]
    if not after or not stale or after[-1][1:] != (0.0, 0.0):
        return None
    k = len(after)
    while k > 0 and after[k - 1][1:] == (0.0, 0.0):
        k -= 1
    age = re.search(r"([0-9.]+) s old", stale[0])
    return after[k][0], float(age.group(1)) if age else math.inf


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    return _run_stack(tmp_path_factory.mktemp("stack"))


def test_every_robot_reaches_its_goal_without_collision(stack):
    assert stack.reached, f"not every robot reached its goal:\n{stack.status}\n{stack.logs}"
    values = stack.status[3]
    assert int(values["collisions"]) == 0, stack.logs
    assert stack.collisions == 0
    assert float(values["sim_time_s"]) <= SIM_BUDGET_S
    assert stack.wall_to_goal_s <= GOAL_BUDGET_S
    # Independent of the simulator's own bookkeeping: the odometry we received came there.
    assert np.all(stack.min_goal_dist <= GOAL_TOL_M), stack.min_goal_dist


def test_stopping_the_simulator_makes_every_filter_brake_for_stale_state(stack):
    assert stack.reached, "the stack run did not get far enough to stop the simulator"
    for i in range(N_ROBOTS):
        braked = _braked_since(stack, i)
        cmds = [(round(t - stack.t_kill, 3), v, w) for t, v, w in stack.cmds[i]
                if t >= stack.t_kill]
        reports = [(round(t - stack.t_kill, 3), m) for t, m in stack.diags[i]
                   if t >= stack.t_kill]
        seen = f"robot_{i}: commands after the kill {cmds[:8]}, reports {reports[:4]}"
        assert braked is not None, f"no zero command with 'stale state' reported; {seen}"
        t_zero, stale_age = braked
        assert t_zero - stack.t_kill <= 2 * STATE_TIMEOUT_S, seen
        assert STATE_TIMEOUT_S <= stale_age <= 2 * STATE_TIMEOUT_S, seen  # printed to 0.01 s


def test_sigint_stops_every_process_with_exit_code_zero(stack):
    assert len(stack.return_codes) == 1 + 2 * N_ROBOTS
    bad = {tag: rc for tag, rc in stack.return_codes.items() if rc != 0}
    assert not bad, f"processes that did not exit 0 on SIGINT: {bad}\n{stack.logs}"


def test_no_command_was_ever_non_finite(stack):
    for i in range(N_ROBOTS):
        assert stack.cmds[i], f"robot_{i} never commanded"
        assert all(math.isfinite(v) and math.isfinite(w) for _, v, w in stack.cmds[i])
