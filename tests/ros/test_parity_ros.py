"""Parity: safety_filter_node's cmd_vel equals the pure filter's output for recorded inputs.

Inputs are recorded from the batched JAX closed loop (the simulation's filter path) at steps
where the filter intervenes.  The node's output is compared with (a) the pure NumPy filter
(``onboard.filter_command``) on the same transmitted inputs, to 1e-9, and (b) the JAX batched
action of the simulation, to float32 tolerance.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy")
jax = pytest.importorskip("jax")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import Twist  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from test_onboard import OMEGA_ATOL, V_ATOL, node_params  # noqa: E402

from marl_robots.nodes import conversions as conv  # noqa: E402
from marl_robots.nodes import onboard  # noqa: E402
from marl_robots.nodes.common import COMMAND_QOS, DIAGNOSTICS_QOS, STATE_QOS  # noqa: E402
from marl_robots.nodes.expansion import expand_swarm  # noqa: E402
from marl_robots.nodes.fleet import fleet_from_scenario  # noqa: E402
from marl_robots.sim import closed_loop  # noqa: E402
from marl_robots.sim.tasks.navigation import NavigationConfig, NavigationTask  # noqa: E402

pytestmark = pytest.mark.ros

N_ROBOTS = 8
#: Robots whose filter nodes are started (the two with the most interventions).
ROBOTS_UNDER_TEST = 2
SAMPLES_PER_ROBOT = 4
#: Same float64 code on the same inputs: only summation-order noise is allowed.
PARITY_ATOL = 1e-9
#: Consecutive matching outputs required once the node has all inputs of a sample.
STABLE_OUTPUTS = 3


def _recorded_samples():
    """(robot, poses [n, 3], nominal [2], JAX action [2], JAX status) where the filter acts."""
    task = NavigationTask(NavigationConfig(robots=N_ROBOTS, scenario="antipodal"))
    params = task.default_params()
    state = task.reset(jax.random.PRNGKey(0), params)
    cfg = closed_loop.ControlConfig()
    cbf = closed_loop.cbf_params(task, params)
    _, _, traj = closed_loop.rollout(task, cfg, state, params, cbf, 400)
    control = jax.jit(lambda st: closed_loop.control(task, cfg, st, params, cbf))
    samples = {i: [] for i in range(N_ROBOTS)}
    for t in range(0, 400, 2):
        out = control(state._replace(pos=traj.pos[t], yaw=traj.yaw[t]))
        poses = np.concatenate([np.asarray(traj.pos[t], float),
                                np.asarray(traj.yaw[t], float)[:, None]], axis=1)
        for i in range(N_ROBOTS):
            if bool(out.intervened[i]) and len(samples[i]) < SAMPLES_PER_ROBOT:
                samples[i].append((i, poses, np.asarray(out.nominal[i], float),
                                   np.asarray(out.action[i], float), int(out.status[i])))
    robots = sorted(samples, key=lambda i: -len(samples[i]))[:ROBOTS_UNDER_TEST]
    return sorted(robots), [s for i in sorted(robots) for s in samples[i]]


def test_safety_filter_node_matches_the_pure_filter(launcher, probe):
    robots, samples = _recorded_samples()
    assert len(samples) == SAMPLES_PER_ROBOT * ROBOTS_UNDER_TEST, "too few interventions"
    fleet = fleet_from_scenario(N_ROBOTS)
    for spec in expand_swarm(robots=N_ROBOTS, use_sim_time=False):
        if spec.executable == "safety_filter_node" and \
                spec.parameters["robot_id"] in robots:
            launcher.start_spec(spec)
    node = probe.node
    odom_pubs = [node.create_publisher(Odometry, f"/{name}/odom", STATE_QOS)
                 for name in fleet.names]
    nom_pubs = {i: node.create_publisher(Twist, f"/robot_{i}/cmd_vel_nominal", COMMAND_QOS)
                for i in robots}
    cmds = {i: [] for i in robots}
    reports = {}
    for i in robots:
        node.create_subscription(Twist, f"/robot_{i}/cmd_vel",
                                 lambda m, i=i: cmds[i].append((m.linear.x, m.angular.z)),
                                 COMMAND_QOS)
        node.create_subscription(DiagnosticArray, f"/robot_{i}/diagnostics",
                                 lambda m, i=i: reports.__setitem__(
                                     i, conv.diagnostic_values(m)[0]), DIAGNOSTICS_QOS)

    for robot, poses, nominal, jax_action, jax_status in samples:
        setup = onboard.pipeline_setup(node_params("safety_filter_node", fleet, robot), fleet)
        stamp = node.get_clock().now().to_msg()
        msgs = [conv.odom_msg(p, (0.0, 0.0), stamp, "world", f"{name}/base_link")
                for p, name in zip(poses, fleet.names, strict=True)]
        # What the node decodes is what the reference gets.
        received = np.array([conv.pose_from_odom(m) for m in msgs])
        expected = onboard.filter_command(received, robot, nominal, setup)
        assert expected.status == jax_status

        def publish(robot=robot, msgs=msgs, nominal=nominal):
            nom_pubs[robot].publish(conv.twist_msg(nominal))
            for j, m in enumerate(msgs):  # own odometry last: it triggers the filter
                if j != robot:
                    odom_pubs[j].publish(m)
            odom_pubs[robot].publish(msgs[robot])

        def matches(k, robot=robot, expected=expected):
            out = cmds[robot]
            return len(out) >= k and all(
                np.allclose(c, expected.command, rtol=0, atol=PARITY_ATOL) for c in out[-k:])

        cmds[robot].clear()
        ok = probe.wait_for(lambda: matches(1), timeout=20.0, every=publish, period=0.03)
        assert ok, (f"robot_{robot}: node never output {expected.command}; last "
                    f"{cmds[robot][-3:]}; report {reports.get(robot)}\n{launcher.logs()}")
        n_before = len(cmds[robot])
        def stable(robot=robot, n_before=n_before, matches=matches):
            return len(cmds[robot]) >= n_before + STABLE_OUTPUTS and matches(STABLE_OUTPUTS)

        assert probe.wait_for(stable, timeout=20.0, every=publish, period=0.03), \
            f"robot_{robot}: output not stable"
        got = np.array(cmds[robot][-1])
        np.testing.assert_allclose(got[0], jax_action[0], atol=V_ATOL)
        np.testing.assert_allclose(got[1], jax_action[1], atol=OMEGA_ATOL)
