"""Fleet state in one message: the ``/fleet/poses`` PoseArray input of the per-robot nodes.

* conversions: poses -> PoseArray -> poses round-trips; a bad quaternion reads as a NaN yaw;
* ``FleetState`` (property): whatever PoseArray arrives (any length, any values), the state
  keeps one row per fleet robot and every row it calls usable is finite and inside
  ``max_position_m``;
* two ``safety_filter_node`` processes with ``fleet_state:=pose_array``: a NaN pose, a PoseArray
  of the wrong length and a PoseArray that stops coming each make both filters brake and say
  why, exactly as the odometry input does (test_faults.py), and they recover.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import PoseArray, Twist  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from marl_robots.nodes import conversions as conv  # noqa: E402
from marl_robots.nodes.common import COMMAND_QOS, DIAGNOSTICS_QOS, STATE_QOS  # noqa: E402
from marl_robots.nodes.expansion import expand_swarm  # noqa: E402
from marl_robots.nodes.fleet_state import FLEET_POSES_TOPIC, FleetState  # noqa: E402

#: Poses travel as float64 positions and a unit quaternion: yaw round-trips to this [rad].
YAW_ATOL = 1e-12
MAX_POSITION_M = 100.0
GOOD_POSES = np.array([(-0.4, 0.0, 0.0), (0.4, 0.3, math.pi)])
NOMINAL = (0.1, 0.2)

finite_pose = st.tuples(st.floats(-50, 50), st.floats(-50, 50), st.floats(-math.pi, math.pi))
any_float = st.floats(allow_nan=True, allow_infinity=True, width=64)


@given(st.lists(finite_pose, min_size=0, max_size=12))
@settings(max_examples=30, deadline=None)
def test_pose_array_round_trips(poses):
    poses = np.asarray(poses, dtype=float).reshape(-1, 3)
    back = conv.poses_from_pose_array(conv.pose_array_msg(poses, conv.time_msg(1.5), "world"))
    assert back.shape == poses.shape
    np.testing.assert_array_equal(back[:, :2], poses[:, :2])
    wrapped = np.angle(np.exp(1j * (back[:, 2] - poses[:, 2])))
    assert np.all(np.abs(wrapped) <= YAW_ATOL)


def test_a_bad_quaternion_reads_as_nan_yaw():
    msg = conv.pose_array_msg(GOOD_POSES, conv.time_msg(0.0), "world")
    msg.poses[1].orientation.w = 0.0
    msg.poses[1].orientation.z = 0.0
    poses = conv.poses_from_pose_array(msg)
    assert np.isfinite(poses[0]).all() and math.isnan(poses[1, 2])


#: The raw CDR readers must agree with rclpy's deserialisation + conversion to this [m, rad]
#: (the same float64 arithmetic, NumPy's vectorised atan2 against ``math.atan2``).
CDR_ATOL = 1e-12
any_quaternion = st.tuples(any_float, any_float, any_float, any_float)
unit_ish = st.tuples(st.floats(-1, 1), st.floats(-1, 1), st.floats(-1, 1),
                     st.floats(-1, 1)).filter(lambda q: sum(v * v for v in q) > 1e-3)


@given(poses=st.lists(st.tuples(any_float, any_float, any_float,
                                st.one_of(unit_ish, any_quaternion), st.booleans()),
                      min_size=0, max_size=20),
       frame=st.text(max_size=12), child=st.text(max_size=20),
       sec=st.integers(-2**31, 2**31 - 1), nanosec=st.integers(0, 2**32 - 1))
@settings(max_examples=60, deadline=None)
def test_raw_cdr_readers_equal_rclpy_deserialisation(poses, frame, child, sec, nanosec):
    """``read_pose_array`` / ``read_odometry`` (the nodes' raw subscriptions) equal rclpy's
    deserialisation followed by ``poses_from_pose_array`` / ``pose_from_odom``: any values,
    NaN and inf included, any frame-id lengths (they shift the CDR alignment), 0-20 poses."""
    from geometry_msgs.msg import Pose
    from nav_msgs.msg import Odometry
    from rclpy.serialization import serialize_message

    msg = PoseArray()
    msg.header.frame_id, msg.header.stamp.sec, msg.header.stamp.nanosec = frame, sec, nanosec
    for x, y, z, q, normalise in poses:
        pose = Pose()
        pose.position.x, pose.position.y, pose.position.z = x, y, z
        if normalise and all(math.isfinite(v) for v in q):
            norm = math.sqrt(sum(v * v for v in q)) or 1.0
            q = tuple(v / norm for v in q)
        pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w = q
        msg.poses.append(pose)
    stamp, got = conv.read_pose_array(serialize_message(msg))
    assert stamp == msg.header.stamp
    expected = conv.poses_from_pose_array(msg)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=CDR_ATOL, equal_nan=True)
    odom = Odometry()
    odom.header, odom.child_frame_id = msg.header, child
    if msg.poses:
        odom.pose.pose = msg.poses[0]
    stamp, pose = conv.read_odometry(serialize_message(odom))
    assert stamp == odom.header.stamp
    np.testing.assert_allclose(pose, conv.pose_from_odom(odom), rtol=0, atol=CDR_ATOL,
                               equal_nan=True)


@given(v=any_float, omega=any_float)
@settings(max_examples=100, deadline=None)
def test_twist_bytes_equal_rclpy_serialisation(v, omega):
    """``twist_cdr`` (the filter's ``cmd_vel``, published as bytes) is byte for byte what rclpy
    serialises for ``twist_msg``, and reads back as the command (NaN and inf included)."""
    from rclpy.serialization import deserialize_message, serialize_message

    assert conv.twist_cdr((v, omega)) == serialize_message(conv.twist_msg((v, omega)))
    back = deserialize_message(conv.twist_cdr((v, omega)), Twist)
    np.testing.assert_array_equal([back.linear.x, back.angular.z], [v, omega])


def test_raw_reader_falls_back_for_an_encoding_it_does_not_read():
    """An unknown encapsulation or a truncated message raises ``CdrError`` (which sends the
    nodes to rclpy's deserialisation), never a wrong pose."""
    from rclpy.serialization import serialize_message

    data = bytearray(serialize_message(conv.pose_array_msg(GOOD_POSES, conv.time_msg(2.0),
                                                           "world")))
    with pytest.raises(conv.CdrError):
        conv.poses_from_pose_array_cdr(b"\x00\x09" + bytes(data[2:]))
    stamp, poses = conv.read_pose_array(bytes(data))
    np.testing.assert_allclose(poses[:, :2], GOOD_POSES[:, :2])
    with pytest.raises(conv.CdrError):
        conv.poses_from_pose_array_cdr(bytes(data[:-8]))  # truncated: no silent short read


@given(n=st.integers(1, 6),
       arrivals=st.lists(st.lists(st.tuples(any_float, any_float, any_float), max_size=8),
                         min_size=1, max_size=4))
@settings(max_examples=60, deadline=None)
def test_fleet_state_never_calls_garbage_usable(n, arrivals):
    state = FleetState(n)
    for k, poses in enumerate(arrivals):
        state.set_all(np.asarray(poses, dtype=float).reshape(-1, 3), conv.time_msg(k), float(k))
        assert state.poses.shape == (n, 3)
        bad = state.bad_rows(MAX_POSITION_M)
        usable = state.poses[~bad]
        assert np.all(np.isfinite(usable))
        assert np.all(np.hypot(usable[:, 0], usable[:, 1]) <= MAX_POSITION_M)
        if len(poses) != n:
            assert bad.all() and "fleet state has" in state.first_problem(MAX_POSITION_M)[1]
        assert (state.first_problem(MAX_POSITION_M) is None) == (not bad.any())


class PoseArrayHarness:
    """Feeds two pose_array safety filters one PoseArray + nominal commands; records output."""

    def __init__(self, probe):
        self.probe = probe
        node = probe.node
        self.poses = GOOD_POSES.copy()
        self.sending = True
        self.cmds = {0: [], 1: []}
        self.reports = {0: None, 1: None}
        self.pose_pub = node.create_publisher(PoseArray, FLEET_POSES_TOPIC, STATE_QOS)
        self.nom_pubs = {i: node.create_publisher(Twist, f"/robot_{i}/cmd_vel_nominal",
                                                  COMMAND_QOS) for i in (0, 1)}
        for i in (0, 1):
            node.create_subscription(
                Twist, f"/robot_{i}/cmd_vel",
                lambda m, i=i: self.cmds[i].append((m.linear.x, m.angular.z)), COMMAND_QOS)
            node.create_subscription(
                DiagnosticArray, f"/robot_{i}/diagnostics",
                lambda m, i=i: self.reports.__setitem__(i, conv.diagnostic_values(m)[0]),
                DIAGNOSTICS_QOS)

    def publish(self):
        for i in (0, 1):
            self.nom_pubs[i].publish(conv.twist_msg(NOMINAL))
        if self.sending:
            stamp = self.probe.node.get_clock().now().to_msg()
            self.pose_pub.publish(conv.pose_array_msg(self.poses, stamp, "world"))

    def wait(self, message_part: str, zero: bool) -> bool:
        def settled(i):
            report, cmds = self.reports[i], self.cmds[i]
            return (report is not None and bool(cmds) and message_part in report[2]
                    and (cmds[-1] == (0.0, 0.0)) == zero)

        return self.probe.wait_for(lambda: settled(0) and settled(1), timeout=20.0,
                                   every=self.publish, period=0.03)


@pytest.mark.ros
def test_pose_array_faults_brake_both_filters_and_say_why(launcher, probe):
    for spec in expand_swarm(robots=2, use_sim_time=False, fleet_state="pose_array"):
        if spec.executable == "safety_filter_node":
            launcher.start_spec(spec)
    h = PoseArrayHarness(probe)
    assert h.wait("ok", zero=False), f"filters never became ready: {h.reports}\n" \
        + launcher.logs()
    cases = [
        ("NaN pose", lambda: h.poses.__setitem__((1, 0), math.nan),
         "invalid odometry from robot_1: non-finite"),
        ("absurd pose", lambda: h.poses.__setitem__((1, 1), 1e9), "absurd odometry"),
        ("wrong length", lambda: setattr(h, "poses", GOOD_POSES[:1].copy()),
         "fleet state has 1 poses, the fleet has 2 robots"),
        ("no more poses", lambda: setattr(h, "sending", False), "stale state"),
    ]
    for label, corrupt, reason in cases:
        h.poses, h.sending = GOOD_POSES.copy(), True
        assert h.wait("ok", zero=False), f"no recovery before {label}: {h.reports}"
        corrupt()
        assert h.wait(reason, zero=True), f"{label}: {h.reports}\n{launcher.logs()}"
    for i in (0, 1):
        assert all(math.isfinite(v) and math.isfinite(w) for v, w in h.cmds[i])
