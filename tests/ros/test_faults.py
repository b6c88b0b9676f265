"""Fail-closed behaviour of the nodes, in separate processes over real rclpy.

* garbage odometry (NaN, absurd position, non-unit quaternion) and NaN nominal commands: the
  safety filter publishes zero and reports the fallback; no NaN command is ever published;
* invalid parameters: the node fails to configure, names the parameter and exits non-zero.

(Stale state when the simulator stops is covered by the whole-stack run in test_stack.py.)
"""

from __future__ import annotations

import dataclasses
import math
import subprocess

import numpy as np
import pytest

pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import Twist  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402

from marl_robots.nodes import conversions as conv  # noqa: E402
from marl_robots.nodes.common import COMMAND_QOS, DIAGNOSTICS_QOS, STATE_QOS  # noqa: E402
from marl_robots.nodes.expansion import expand_swarm  # noqa: E402

pytestmark = pytest.mark.ros

#: Exit of a node that fails to configure: start-up plus import time on a loaded machine [s].
EXIT_TIMEOUT_S = 60.0
GOOD_POSES = {0: (-0.4, 0.0, 0.0), 1: (0.4, 0.3, math.pi)}
NOMINAL = (0.1, 0.2)


def _filter_specs(robots: int = 2):
    return [s for s in expand_swarm(robots=robots, use_sim_time=False)
            if s.executable == "safety_filter_node"]


class FilterHarness:
    """Feeds two safety filters odometry + nominal commands and records what they publish."""

    def __init__(self, probe):
        self.probe = probe
        node = probe.node
        self.poses = dict(GOOD_POSES)
        self.quat = {0: None, 1: None}
        self.nominal = {0: NOMINAL, 1: NOMINAL}
        self.cmds = {0: [], 1: []}
        self.reports = {0: None, 1: None}
        self.odom_pubs = {i: node.create_publisher(Odometry, f"/robot_{i}/odom", STATE_QOS)
                          for i in (0, 1)}
        self.nom_pubs = {i: node.create_publisher(Twist, f"/robot_{i}/cmd_vel_nominal",
                                                  COMMAND_QOS) for i in (0, 1)}
        for i in (0, 1):
            node.create_subscription(Twist, f"/robot_{i}/cmd_vel",
                                     lambda m, i=i: self.cmds[i].append((m.linear.x,
                                                                         m.angular.z)),
                                     COMMAND_QOS)
            node.create_subscription(DiagnosticArray, f"/robot_{i}/diagnostics",
                                     lambda m, i=i: self.reports.__setitem__(
                                         i, conv.diagnostic_values(m)[0]), DIAGNOSTICS_QOS)

    def publish(self):
        stamp = self.probe.node.get_clock().now().to_msg()
        for i in (0, 1):
            self.nom_pubs[i].publish(conv.twist_msg(self.nominal[i]))
        for i in (1, 0):
            msg = conv.odom_msg(self.poses[i], (0.0, 0.0), stamp, "world",
                                f"robot_{i}/base_link")
            if self.quat[i] is not None:
                o = msg.pose.pose.orientation
                o.x, o.y, o.z, o.w = self.quat[i]
            self.odom_pubs[i].publish(msg)

    def settled(self, i: int, message_part: str, zero: bool) -> bool:
        """Robot i's newest report mentions ``message_part`` and its newest command is zero
        (``zero``) or non-zero."""
        report, cmds = self.reports[i], self.cmds[i]
        if report is None or not cmds or message_part not in report[2]:
            return False
        return (cmds[-1] == (0.0, 0.0)) == zero

    def wait(self, message_part: str, zero: bool, robots=(0, 1)) -> bool:
        return self.probe.wait_for(
            lambda: all(self.settled(i, message_part, zero) for i in robots),
            timeout=20.0, every=self.publish, period=0.03)


def test_garbage_odometry_and_commands_fail_closed_and_say_why(launcher, probe):
    for spec in _filter_specs():
        launcher.start_spec(spec)
    h = FilterHarness(probe)
    assert h.wait("ok", zero=False), f"filters never became ready: {h.reports}\n" \
        + launcher.logs()

    cases = [
        ("NaN position", lambda: h.poses.__setitem__(1, (math.nan, 0.3, 0.0)),
         "invalid odometry from robot_1: non-finite"),
        ("absurd position", lambda: h.poses.__setitem__(1, (1e12, -3e11, 0.0)),
         "absurd odometry"),
        ("overflowing position", lambda: h.poses.__setitem__(1, (1e308, 1e308, 0.0)),
         "absurd odometry"),
        ("zero quaternion", lambda: h.quat.__setitem__(1, (0.0, 0.0, 0.0, 0.0)),
         "invalid odometry from robot_1: non-finite"),
    ]
    for label, corrupt, reason in cases:
        h.poses, h.quat = dict(GOOD_POSES), {0: None, 1: None}
        assert h.wait("ok", zero=False), f"no recovery before {label}: {h.reports}"
        corrupt()
        # Both robots depend on robot_1's state: both must brake.
        assert h.wait(reason, zero=True), f"{label}: {h.reports}"

    h.poses, h.quat = dict(GOOD_POSES), {0: None, 1: None}
    h.nominal[0] = (math.nan, 0.0)
    assert h.wait("invalid nominal command", zero=True, robots=(0,)), h.reports
    h.nominal[0] = NOMINAL
    assert h.wait("ok", zero=False), f"filters did not recover: {h.reports}"

    for i in (0, 1):
        assert h.cmds[i]
        assert all(math.isfinite(v) and math.isfinite(w) for v, w in h.cmds[i]), \
            f"robot_{i} published a non-finite command"
    assert np.isfinite(np.asarray(h.cmds[0])).all()


def _with(spec, **overrides):
    return dataclasses.replace(spec, parameters={**spec.parameters, **overrides})


def test_invalid_parameters_fail_configuration_naming_the_parameter(launcher, tmp_path):
    specs = {s.fqn: s for s in expand_swarm(robots=2, use_sim_time=False)}
    filt, ctrl, sim = specs["/robot_0/safety_filter"], specs["/robot_1/controller"], specs["/sim"]
    cases = {
        "negative safety distance": (_with(filt, safety_distance_m=-0.1), "safety_distance_m"),
        "missing fleet file (filter)": (_with(filt, fleet_file=str(tmp_path / "nope.yaml")),
                                        "fleet_file"),
        "unknown robot id (filter)": (_with(filt, robot_id=42), "robot_id"),
        "unknown robot id (controller)": (_with(ctrl, robot_id=42), "robot_id"),
        "negative safety distance (controller)": (_with(ctrl, safety_distance_m=-0.1),
                                                  "safety_distance_m"),
        "missing fleet file (sim)": (_with(sim, fleet_file=str(tmp_path / "nope.yaml")),
                                     "fleet_file"),
    }
    procs = {label: (launcher.start_spec(spec), name) for label, (spec, name) in cases.items()}
    for label, (proc, name) in procs.items():
        try:
            rc = proc.wait(timeout=EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{label}: still running after {EXIT_TIMEOUT_S} s\n{proc.log()}")
        log = proc.log()
        assert rc != 0, f"{label}: exited {rc}\n{log}"
        assert f"invalid parameter '{name}'" in log, f"{label}: parameter not named\n{log}"
        assert "Traceback" not in log, f"{label}: crashed instead of failing cleanly\n{log}"
