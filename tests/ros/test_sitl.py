"""Single-process software in the loop: sim_node + one swarm_host with 8 robots' nodes.

The launch default for simulation (``one_process``): two processes, the simulator and a host
running every robot's controller and safety filter as node instances, on the ``/fleet/poses``
fleet state.  One run: the hosted nodes appear in the ROS graph under the same names and
namespaces as in the multi-process layout; every robot reaches its goal in the antipodal swap
with 0 collisions; SIGINT twice to both processes: both exit 0 within ``EXIT_BUDGET_S``, no
traceback in either log, and the last command received from every commanding node is zero.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

pytest.importorskip("rclpy")

from conftest import BAD_LOG_MARKS, MIN_TIMEOUT_S  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import Twist  # noqa: E402
from std_msgs.msg import UInt32  # noqa: E402

from marl_robots.nodes import conversions as conv  # noqa: E402
from marl_robots.nodes.common import COMMAND_QOS, DIAGNOSTICS_QOS, LATCHED_QOS  # noqa: E402
from marl_robots.nodes.expansion import expand_swarm  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]

N_ROBOTS = 8
#: Wall-clock budget until every robot reached its goal, start-up included [s].
GOAL_BUDGET_S = 150.0
#: Simulated-time budget of the antipodal swap [s] (the pure loop needs ~16 s).
SIM_BUDGET_S = 45.0
#: Every process must be gone this long after the first SIGINT [s] (issue 10).
EXIT_BUDGET_S = 10.0


def test_one_process_swarm_reaches_goals_and_stops_cleanly(launcher, probe):
    specs = expand_swarm(robots=N_ROBOTS, one_process=True)
    assert [s.executable for s in specs] == ["sim_node", "swarm_host"]
    names = [f"robot_{i}" for i in range(N_ROBOTS)]
    status, collisions, last = {}, [], {}
    topics = [f"/{ns}/{t}" for ns in names for t in ("cmd_vel", "cmd_vel_nominal")]
    node = probe.node
    node.create_subscription(DiagnosticArray, "/diagnostics",
                             lambda m: status.update(v=conv.diagnostic_values(m)[0][3]),
                             DIAGNOSTICS_QOS)
    node.create_subscription(UInt32, "/collisions", lambda m: collisions.append(m.data),
                             LATCHED_QOS)
    for topic in topics:
        node.create_subscription(Twist, topic,
                                 lambda m, t=topic: last.__setitem__(t, (m.linear.x,
                                                                         m.angular.z)),
                                 COMMAND_QOS)
    for spec in specs:
        launcher.start_spec(spec)

    def reached():
        return "v" in status and int(status["v"]["robots_at_goal_once"]) == N_ROBOTS

    assert probe.wait_for(reached, timeout=GOAL_BUDGET_S), \
        f"not every robot reached its goal: {status.get('v')}\n{launcher.logs()}"
    values = status["v"]
    assert int(values["collisions"]) == 0, launcher.logs()
    assert float(values["sim_time_s"]) <= SIM_BUDGET_S
    assert probe.wait_for(lambda: bool(collisions)) and collisions[-1] == 0

    graph = {f"{ns.rstrip('/')}/{name}" for name, ns in node.get_node_names_and_namespaces()}
    expected = {f"/{ns}/{n}" for ns in names for n in ("controller", "safety_filter")}
    assert expected | {"/sim", "/swarm_host"} <= graph, sorted(graph)

    t0 = time.monotonic()
    for _ in range(2):  # a terminal's Ctrl-C plus ros2 launch forwarding it
        for p in launcher.procs:
            if p.proc.poll() is None:
                os.killpg(p.proc.pid, signal.SIGINT)
    exited = {}

    def all_exited():
        for p in launcher.procs:
            if p.tag not in exited and p.proc.poll() is not None:
                exited[p.tag] = time.monotonic() - t0
        return len(exited) == len(launcher.procs)

    probe.wait_for(all_exited, timeout=EXIT_BUDGET_S + 5.0)
    probe.wait_for(lambda: all(last.get(t) == (0.0, 0.0) for t in topics), timeout=MIN_TIMEOUT_S)
    codes = launcher.stop_all()
    logs = launcher.logs()
    slow = {tag: round(s, 2) for tag, s in exited.items() if s > EXIT_BUDGET_S}
    assert len(exited) == 2 and not slow, f"not exited in {EXIT_BUDGET_S} s: {exited}\n{logs}"
    assert codes == {"/sim": 0, "/swarm_host": 0}, logs
    for p in launcher.procs:
        text = p.log_path.read_text(errors="replace")
        marks = [m for m in BAD_LOG_MARKS if m in text]
        assert not marks, f"{p.tag}: {marks} in its log:\n{text[-3000:]}"
    not_zero = {t: last.get(t) for t in topics if last.get(t) != (0.0, 0.0)}
    assert not not_zero, f"last command received is not zero: {not_zero}"
