"""``policy_node`` over real rclpy in separate processes, with the safety filter behind it.

Bundles are written in the test (``export.write_bundle`` of randomised flax parameters: a
``gnn``, a ``cbf-tuning`` and a ``gnn`` whose attention turns NaN once a neighbour is sensed but
not on the mean one the loader tries).  The probe publishes both robots' odometry and robot_0's
goal, and checks:

* ``gnn``: the nominal command the node publishes equals the runtime's on the same state (one
  robot), the filter passes it; a stale observation (robot_1 silent) -> no nominal command,
  the node says why, the filter brakes;
* ``cbf-tuning``: the filter uses the policy's gain (clipped) and, once the policy stops, its
  fixed gain again;
* non-finite output: zero nominal command (brake) with the reason in diagnostics;
* configure refuses a missing bundle and a bundle for another robot family or observation
  spec: the process exits non-zero, naming the parameter and the mismatch.
"""

from __future__ import annotations

import math
from dataclasses import replace

import jax
import numpy as np
import pytest

pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import Twist  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402

from marl_robots.nodes import conversions as conv  # noqa: E402
from marl_robots.nodes.common import (  # noqa: E402
    COMMAND_QOS,
    DIAGNOSTICS_QOS,
    LATCHED_QOS,
    STATE_QOS,
)
from marl_robots.nodes.expansion import NodeSpec, expand_swarm, fleet_parameters  # noqa: E402
from marl_robots.nodes.fleet import make_fleet  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]

EXIT_TIMEOUT_S = 60.0
POSES = {0: (-0.4, 0.0, 0.0), 1: (0.4, 0.3, math.pi)}
GOAL0 = (0.6, -0.3)
#: Published nominal command vs the in-process runtime on the same state [m/s, rad/s].
CMD_ATOL = 1e-5


def _bundle(folder, kind: str, nan: bool = False):
    from marl_robots.policies import POLICIES
    from marl_robots.policies.export import build_manifest, write_bundle
    from marl_robots.policies.mappo import TrainConfig
    from marl_robots.sim.env import NavigationEnv

    config = TrainConfig(policy=kind, robots=8, scenario="random")
    env = NavigationEnv(config.env_config())
    env_params = env.default_params()
    policy = POLICIES.get(kind)(env, env_params)
    params = policy.init(jax.random.PRNGKey(1))
    leaves, tree = jax.tree_util.tree_flatten(params["net"])
    keys = jax.random.split(jax.random.PRNGKey(2), len(leaves))
    leaves = [x + 0.15 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys, strict=True)]
    params["net"] = jax.tree_util.tree_unflatten(tree, leaves)
    if nan:
        # Attention logit +inf: with a neighbour sensed, max-subtraction gives inf - inf = NaN;
        # at the mean observation (the loader's test inference) no neighbour is masked in, the
        # logits are replaced by -1e9 and the output is finite.
        params["net"]["params"]["attn"]["bias"] = np.full((1,), np.inf, np.float32)
    meta = {"policy": kind, "train_config": config.to_json()}
    manifest = build_manifest(policy, params, meta, env, env_params, folder)
    return write_bundle(folder, manifest, params)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundles")
    return {
        "gnn": _bundle(root / "gnn", "gnn"),
        "cbf-tuning": _bundle(root / "cbf", "cbf-tuning"),
        "nan": _bundle(root / "nan", "gnn", nan=True),
    }


def _policy_spec(bundle, robot_id: int = 0, **extra) -> NodeSpec:
    fleet = make_fleet(2, "antipodal")
    params = {**fleet_parameters(fleet, robot_id), "bundle": str(bundle), "use_sim_time": False,
              **extra}
    return NodeSpec("policy_node", "policy", f"/robot_{robot_id}", parameters=params)


def _filter_spec(robot_id: int = 0) -> NodeSpec:
    return next(s for s in expand_swarm(robots=2, use_sim_time=False)
                if s.executable == "safety_filter_node" and s.namespace == f"/robot_{robot_id}")


class Harness:
    """Publishes odometry (+ goal, + optionally a nominal command) and records the outputs."""

    def __init__(self, probe):
        self.probe, node = probe, probe.node
        self.alive = {0: True, 1: True}
        self.nominal = None
        self.cmd, self.nominal_seen, self.policy_report, self.filter_report = [], [], None, None
        self.odom = {i: node.create_publisher(Odometry, f"/robot_{i}/odom", STATE_QOS)
                     for i in (0, 1)}
        self.nom_pub = node.create_publisher(Twist, "/robot_0/cmd_vel_nominal", COMMAND_QOS)
        from geometry_msgs.msg import PoseStamped

        goal_pub = node.create_publisher(PoseStamped, "/robot_0/goal", LATCHED_QOS)
        goal_pub.publish(conv.goal_msg(GOAL0, node.get_clock().now().to_msg(), "world"))
        node.create_subscription(Twist, "/robot_0/cmd_vel",
                                 lambda m: self.cmd.append((m.linear.x, m.angular.z)),
                                 COMMAND_QOS)
        node.create_subscription(Twist, "/robot_0/cmd_vel_nominal",
                                 lambda m: self.nominal_seen.append((m.linear.x, m.angular.z)),
                                 COMMAND_QOS)
        node.create_subscription(DiagnosticArray, "/robot_0/diagnostics", self._on_diag,
                                 DIAGNOSTICS_QOS)

    def _on_diag(self, msg):
        for name, level, message, values in conv.diagnostic_values(msg):
            if name.startswith("policy"):
                self.policy_report = (level, message, values)
            else:
                self.filter_report = (level, message, values)

    def publish(self):
        stamp = self.probe.node.get_clock().now().to_msg()
        if self.nominal is not None:
            self.nom_pub.publish(conv.twist_msg(self.nominal))
        for i in (1, 0):
            if self.alive[i]:
                self.odom[i].publish(conv.odom_msg(POSES[i], (0.0, 0.0), stamp, "world",
                                                   f"robot_{i}/base_link"))

    def wait(self, predicate, timeout: float = 30.0) -> bool:
        return self.probe.wait_for(predicate, timeout=timeout, every=self.publish, period=0.033)


def _expected_nominal(bundle) -> np.ndarray:
    """The nominal command the runtime gives robot_0 in ``POSES`` (at rest: zero velocities)."""
    return _nominal_at(bundle, np.array([POSES[0], POSES[1]], float))


def test_gnn_policy_drives_the_filter_and_a_stale_observation_brakes(launcher, probe, bundles):
    want = _expected_nominal(bundles["gnn"])
    launcher.start_spec(_policy_spec(bundles["gnn"]))
    launcher.start_spec(_filter_spec())
    h = Harness(probe)

    def flowing():
        return (h.policy_report is not None and h.policy_report[1] == "ok" and h.nominal_seen
                and h.filter_report is not None and h.filter_report[1] == "ok" and h.cmd
                and h.cmd[-1] != (0.0, 0.0))

    assert h.wait(flowing), f"{h.policy_report} {h.filter_report}\n{launcher.logs()}"
    got = np.array(h.nominal_seen[-1])
    print(f"published nominal {got}, runtime {want}, |diff| {np.max(np.abs(got - want)):.2g}")
    np.testing.assert_allclose(got, want, atol=CMD_ATOL)
    assert np.max(np.abs(want)) > 1e-3, "the policy commands nothing: parity would prove little"

    h.alive[1] = False  # robot_1 goes silent: robot_0's observation is stale
    assert h.wait(lambda: h.policy_report[1].startswith("stale observation: state of robot_1")
                  and h.cmd and h.cmd[-1] == (0.0, 0.0)), \
        f"{h.policy_report} {h.filter_report} {h.cmd[-3:]}"


def test_cbf_tuning_policy_sets_the_filter_gain_and_falls_back(launcher, probe, bundles):
    from marl_robots.core import defaults

    policy = launcher.start_spec(_policy_spec(bundles["cbf-tuning"]))
    launcher.start_spec(_filter_spec())
    h = Harness(probe)
    h.nominal = (0.1, 0.0)
    lo, hi = defaults.GAMMA_BOUNDS

    def tuned():
        r, pr = h.filter_report, h.policy_report
        return (r is not None and pr is not None and pr[1] == "ok"
                and r[2].get("gamma_source") == "policy")

    assert h.wait(tuned), f"{h.policy_report} {h.filter_report}\n{launcher.logs()}"
    gamma = float(h.filter_report[2]["gamma"])
    out = float(h.policy_report[2]["output"])
    print(f"policy gain {out:.5g} /s, filter gain {gamma:.5g} /s")
    assert lo <= gamma <= hi and abs(gamma - min(max(out, lo), hi)) <= 1e-3 * gamma
    policy.stop()
    assert h.wait(lambda: h.filter_report[2].get("gamma_source", "").startswith(
        "default: tuned gain") and float(h.filter_report[2]["gamma"]) == defaults.GAMMA), \
        h.filter_report


def test_non_finite_policy_output_brakes_and_says_why(launcher, probe, bundles):
    launcher.start_spec(_policy_spec(bundles["nan"]))
    launcher.start_spec(_filter_spec())
    h = Harness(probe)
    assert h.wait(lambda: h.policy_report is not None
                  and h.policy_report[1].startswith("non-finite policy output")
                  and "braking" in h.policy_report[1]
                  and h.nominal_seen and h.nominal_seen[-1] == (0.0, 0.0)
                  and h.cmd and h.cmd[-1] == (0.0, 0.0)), \
        f"{h.policy_report} {h.filter_report}\n{launcher.logs()}"


def test_configure_refuses_missing_and_mismatching_bundles(launcher, bundles, tmp_path):
    cases = {
        "missing": (_policy_spec(tmp_path / "nope"),
                    "invalid parameter 'bundle': no policy bundle"),
        "unset": (_policy_spec(""), "invalid parameter 'bundle': not set"),
        "family": (_policy_spec(bundles["gnn"], robot="single_integrator"),
                   "bundle is for robot family 'unicycle', this robot is 'single_integrator'"),
        "spec": (_policy_spec(bundles["gnn"], neighbours=8),
                 "bundle observation spec differs: neighbours = 6 in the bundle, 8 on this"),
    }
    procs = {name: launcher.start_spec(spec) for name, (spec, _) in cases.items()}
    for name, (_, needle) in cases.items():
        code = procs[name].wait(EXIT_TIMEOUT_S)
        log = procs[name].log()
        assert code != 0, f"{name}: exit {code}\n{log[-800:]}"
        assert needle in log, f"{name}: {log[-800:]}"
        assert "Traceback" not in log, log


def test_expansion_swaps_the_controller_for_a_gnn_policy(bundles):
    from marl_robots.nodes.expansion import LaunchArgumentError, hosted_specs, launch_specs

    def kinds(specs):
        return sorted({(s.executable, s.namespace) for s in specs if s.namespace != "/"})

    gnn = expand_swarm(robots=2, policy=str(bundles["gnn"]))
    assert kinds(gnn) == [("policy_node", "/robot_0"), ("policy_node", "/robot_1"),
                          ("safety_filter_node", "/robot_0"), ("safety_filter_node", "/robot_1")]
    assert all(s.parameters["bundle"] == str(bundles["gnn"])
               for s in gnn if s.executable == "policy_node")
    cbf = expand_swarm(robots=2, policy=str(bundles["cbf-tuning"]))
    assert {e for e, _ in kinds(cbf)} == {"controller_node", "policy_node", "safety_filter_node"}
    host = expand_swarm(robots=2, policy=str(bundles["gnn"]), one_process=True)[1]
    assert kinds(hosted_specs(host.parameters)) == kinds(gnn)
    with pytest.raises(LaunchArgumentError, match="invalid launch argument policy:='/nope'"):
        launch_specs({"policy": "/nope"})


# One process per robot: policy linked to its filter (swarm_host namespaces:=robot_0) ---------

#: Two fleet states (x, y, yaw) in which robot_1 binds robot_0's filter: filtering either
#: state's nominal command in either state gives four commands 0.86 apart (fixture bundle).
STATES = ({0: (-0.4, 0.0, 0.0), 1: (-0.514, -0.232, -2.746)},
          {0: (-0.3, 0.12, 0.6), 1: (-0.265, 0.346, -0.659)})
#: The same for robot_0's go-to-goal controller (the states above filter its two commands to
#: the same value): filtered commands of the same and of the other state 1.48 apart.
CONTROLLER_STATES = ({0: (-0.189, -0.173, 1.101), 1: (-0.279, 0.037, -2.558)},
                     {0: (0.019, -0.241, -2.296), 1: (-0.255, -0.259, 0.24)})
#: Published cmd_vel vs the filter run in this process on the same inputs [m/s, rad/s].
LINK_ATOL = 1e-6
#: cmd_vel messages compared once the pair flows.
LINK_SAMPLES = 20


def _host_spec(bundle, order: str, **extra) -> NodeSpec:
    host = expand_swarm(robots=2, use_sim_time=False, policy=str(bundle), one_process=True)[1]
    return replace(host, parameters={**host.parameters, "namespaces": "robot_0",
                                     "policy_order": order, **extra})


def _nominal_at(bundle, poses) -> np.ndarray:
    """robot_0's nominal command from the runtime for ``poses`` at rest (zero velocities)."""
    from marl_robots.core import defaults
    from marl_robots.nodes.onboard import param_defaults
    from marl_robots.nodes.policy_onboard import (
        POLICY_PARAMS,
        control_points,
        policy_setup,
        policy_step,
        velocity_command,
    )

    fleet = make_fleet(2, "antipodal")
    setup = policy_setup({**param_defaults(POLICY_PARAMS), **fleet_parameters(fleet, 0),
                          "bundle": str(bundle)}, fleet)
    points = control_points(poses, setup)
    _, u = policy_step(points, np.zeros_like(points), 0, np.array(GOAL0), setup)
    assert setup.dt_s == defaults.DT_S
    return velocity_command(u, poses[0, 2], setup)


@pytest.mark.parametrize("order", ["policy_first", "filter_first", "controller"])
def test_linked_policy_hands_its_command_to_the_filter_in_order(launcher, probe, bundles,
                                                                order):
    """One ``swarm_host`` hosts robot_0's policy and filter; the prober alternates two fleet
    states A, B (every PoseArray with the same stamp, so the policy's velocity estimate is zero
    and its command a function of the state).  ``policy_first``: every cmd_vel is
    filter(A, nominal(A)) or filter(B, nominal(B)); ``filter_first``: filter(A, nominal(B)) or
    filter(B, nominal(A)) - the previous state's command.  Without the in-process hand-off the
    filter sees the nominal over the topic, after it filtered (``filter_first`` values under
    ``policy_first``); without the reordering ``filter_first`` gives the other pair.
    ``controller``: no policy, robot_0's go-to-goal ``controller_node`` linked to its filter
    (``ControllerNode.link``): the same state's command, as ``policy_first``."""
    from geometry_msgs.msg import PoseArray, PoseStamped

    from marl_robots.nodes.fleet_state import FLEET_POSES_TOPIC
    from marl_robots.nodes.onboard import (
        SAFETY_FILTER_PARAMS,
        filter_command,
        param_defaults,
        pipeline_setup,
    )

    controller = order == "controller"
    proc = launcher.start_spec(_host_spec("" if controller else bundles["gnn"],
                                          "policy_first" if controller else order))
    node = probe.node
    cmd, reports = [], {}
    poses_pub = node.create_publisher(PoseArray, FLEET_POSES_TOPIC, STATE_QOS)
    goal_pub = node.create_publisher(PoseStamped, "/robot_0/goal", LATCHED_QOS)
    goal_pub.publish(conv.goal_msg(GOAL0, node.get_clock().now().to_msg(), "world"))
    node.create_subscription(Twist, "/robot_0/cmd_vel",
                             lambda m: cmd.append((m.linear.x, m.angular.z)), COMMAND_QOS)

    def on_diag(msg):
        for name, _, message, _ in conv.diagnostic_values(msg):
            reports["policy" if name.startswith("policy") else "filter"] = message

    node.create_subscription(DiagnosticArray, "/robot_0/diagnostics", on_diag, DIAGNOSTICS_QOS)
    poses = [np.array([s[0], s[1]], float) for s in (CONTROLLER_STATES if controller
                                                        else STATES)]
    stamp = node.get_clock().now().to_msg()
    count = [0]

    def tick():
        poses_pub.publish(conv.pose_array_msg(poses[count[0] % 2], stamp, "world"))
        count[0] += 1

    def flowing():
        return reports.get("filter") == "ok" and (controller or reports.get("policy") == "ok")

    assert probe.wait_for(flowing, timeout=EXIT_TIMEOUT_S, every=tick, period=0.033), \
        f"{reports}\n{proc.log()[-2000:]}"
    start = len(cmd)
    assert probe.wait_for(lambda: len(cmd) >= start + LINK_SAMPLES + 2, timeout=30.0,
                          every=tick, period=0.033), f"{len(cmd) - start} cmd_vel; {reports}"
    got = np.array(cmd[start + 2:])  # the first may answer a state sent before "ok"

    fleet = make_fleet(2, "antipodal")
    setup = pipeline_setup(param_defaults(SAFETY_FILTER_PARAMS) | fleet_parameters(fleet, 0)
                           | {"obstacles": []}, fleet)
    if controller:
        from marl_robots.nodes.onboard import CONTROLLER_PARAMS, nominal_command

        csetup = pipeline_setup(param_defaults(CONTROLLER_PARAMS) | fleet_parameters(fleet, 0)
                                | {"obstacles": []}, fleet)
        nom = [nominal_command(p, 0, np.array(GOAL0), csetup) for p in poses]
    else:
        nom = [_nominal_at(bundles["gnn"], p) for p in poses]

    def filtered(state, command):
        return filter_command(poses[state], 0, command, setup).command

    pairs = {"policy_first": [filtered(0, nom[0]), filtered(1, nom[1])],
             "filter_first": [filtered(0, nom[1]), filtered(1, nom[0])]}
    pairs["controller"] = pairs["policy_first"]
    other = "policy_first" if order == "filter_first" else "filter_first"

    def distance(cands):  # per message: distance to the nearer of the two expected values
        return np.min([np.max(np.abs(got - c), axis=1) for c in cands], axis=0)

    err = distance(pairs[order])
    gap = float(np.min(distance(pairs[other])))
    print(f"{order}: {len(got)} cmd_vel, max |cmd_vel - expected| {err.max():.2g}; "
          f"nearest value of the other order {gap:.3g} away")
    assert float(err.max()) <= LINK_ATOL, (f"{order}: cmd_vel {got.tolist()}\nexpected one of "
                                          f"{[c.tolist() for c in pairs[order]]}")
    assert gap > 1e-2, f"the orders' commands barely differ ({gap:.2g}): nothing is tested"


def test_host_refuses_an_unknown_namespace_and_policy_order(launcher, bundles):
    cases = {
        "namespace": (_host_spec(bundles["gnn"], "policy_first", namespaces="robot_0,robot_9"),
                      "invalid parameter 'namespaces'", "no fleet robot 'robot_9'"),
        "order": (_host_spec(bundles["gnn"], "policy_last"),
                  "invalid parameter 'policy_order'", "policy_first"),
    }
    procs = {name: launcher.start_spec(spec) for name, (spec, *_) in cases.items()}
    for name, (_, *needles) in cases.items():
        code = procs[name].wait(EXIT_TIMEOUT_S)
        log = procs[name].log()
        assert code != 0, f"{name}: exit {code}\n{log[-800:]}"
        for needle in needles:
            assert needle in log, f"{name}: {needle!r} missing\n{log[-800:]}"
        assert "Traceback" not in log, log
