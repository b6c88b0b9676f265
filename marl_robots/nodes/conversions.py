"""The one place where ROS 2 messages meet arrays: every node packs and unpacks through here.

Conventions: REP-103 (SI units, x forward / y left / z up), REP-105 frames (odometry in the
fleet's fixed frame ``world`` or ``odom``, child ``<namespace>/base_link``), quaternions
(x, y, z, w) as declared in ``marl_robots.core.math3d``.  Unicycle commands travel as
``geometry_msgs/Twist`` with ``linear.x = v`` [m/s] and ``angular.z = omega`` [rad/s].
"""

from __future__ import annotations

import math
import struct

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point, Pose, PoseArray, PoseStamped, Twist
from nav_msgs.msg import Odometry
from rclpy.serialization import deserialize_message
from rosgraph_msgs.msg import Clock
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

from marl_robots.core.math3d import quat_to_yaw, yaw_to_quat

#: A quaternion whose norm is off by more than this is garbage (its yaw becomes NaN).
QUAT_NORM_TOL = 0.1


def time_msg(seconds: float) -> Time:
    """``builtin_interfaces/Time`` of a time in seconds."""
    sec = math.floor(seconds)
    return Time(sec=int(sec), nanosec=min(int(round((seconds - sec) * 1e9)), 999_999_999))


def time_to_sec(stamp: Time) -> float:
    """Seconds of a ``builtin_interfaces/Time``."""
    return stamp.sec + 1e-9 * stamp.nanosec


def clock_msg(seconds: float) -> Clock:
    """``rosgraph_msgs/Clock`` for simulated time ``seconds``."""
    return Clock(clock=time_msg(seconds))


def _pose_row(pose: Pose) -> tuple[float, ...]:
    """(x, y, z, qx, qy, qz, qw) of a ``geometry_msgs/Pose``."""
    p, q = pose.position, pose.orientation
    return (p.x, p.y, p.z, q.x, q.y, q.z, q.w)


def pose_from_odom(msg: Odometry) -> np.ndarray:
    """Base pose (x [m], y [m], yaw [rad]) of an odometry message.

    A quaternion far from unit norm (or non-finite) yields a NaN yaw, so that garbage fails
    closed downstream instead of silently reading as yaw 0.
    """
    return base_poses_from_quaternion_poses(_pose_row(msg.pose.pose))[0]


def poses_from_pose_array(msg: PoseArray) -> np.ndarray:
    """Base poses [n, 3] (x [m], y [m], yaw [rad]) of a fleet-state ``PoseArray``.

    Row ``i`` is the ``i``-th pose of the message (fleet-file order); a bad quaternion gives a
    NaN yaw in its row, exactly as ``pose_from_odom`` does for one robot.
    """
    return base_poses_from_quaternion_poses([_pose_row(pose) for pose in msg.poses])


def base_poses_from_quaternion_poses(raw) -> np.ndarray:
    """Base poses [n, 3] (x [m], y [m], yaw [rad]) of ``geometry_msgs/Pose`` rows [n, 7].

    Rows hold the position and the (x, y, z, w) quaternion.  The yaw is
    ``core.math3d.quat_to_yaw`` of the normalised quaternion, NaN where the quaternion is
    non-finite or its norm is off by more than ``QUAT_NORM_TOL``.  The one conversion behind
    both the message objects and the raw CDR reads.
    """
    raw = np.asarray(raw, dtype=float).reshape(-1, 7)
    q = raw[:, 3:7]
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        norm = np.sqrt(q[:, 0] * q[:, 0] + q[:, 1] * q[:, 1] + q[:, 2] * q[:, 2]
                       + q[:, 3] * q[:, 3])
        yaw = quat_to_yaw(*(q / norm[:, None]).T)
    bad = ~np.isfinite(norm) | (np.abs(norm - 1.0) > QUAT_NORM_TOL)
    return np.stack([raw[:, 0], raw[:, 1], np.where(bad, np.nan, yaw)], axis=1)


class CdrError(ValueError):
    """A serialized message this reader does not handle (callers fall back to rclpy)."""


#: CDR encapsulation identifiers (first two bytes, big-endian) -> (little endian, largest
#: alignment): classic CDR aligns doubles to 8, XCDR2 (``PLAIN_CDR2``) to 4.
_ENCAPSULATIONS = {0x0000: (False, 8), 0x0001: (True, 8), 0x0006: (False, 4),
                   0x0007: (True, 4)}


def _cdr_header(data: bytes, strings: int) -> tuple[memoryview, str, int, int, int, int]:
    """(body, byte order, max alignment, sec, nanosec, offset after ``strings`` strings).

    Reads a ``std_msgs/Header`` (stamp, frame_id) and then ``strings - 1`` more strings.
    """
    if len(data) < 16:
        raise CdrError(f"{len(data)} bytes is too short for a header")
    kind = (data[0] << 8) | data[1]
    if kind not in _ENCAPSULATIONS:
        raise CdrError(f"unknown CDR encapsulation 0x{kind:04x}")
    little, align = _ENCAPSULATIONS[kind]
    order = "<" if little else ">"
    body = memoryview(data)[4:]
    sec, nanosec = struct.unpack_from(order + "iI", body, 0)
    offset = 8
    for _ in range(strings):
        offset = (offset + 3) & ~3
        (length,) = struct.unpack_from(order + "I", body, offset)
        offset += 4 + length
    return body, order, align, sec, nanosec, offset


def _cdr_doubles(body: memoryview, order: str, align: int, offset: int, count: int):
    """``count`` float64 at ``offset`` rounded up to the doubles' alignment."""
    offset = (offset + align - 1) & ~(align - 1)
    if offset + 8 * count > len(body):
        raise CdrError("message shorter than its poses")
    return np.frombuffer(body, dtype=order + "f8", count=count, offset=offset)


def poses_from_pose_array_cdr(data: bytes) -> tuple[Time, np.ndarray]:
    """(stamp, base poses [n, 3]) of a *serialized* ``geometry_msgs/PoseArray``.

    What ``poses_from_pose_array`` returns, read straight from the CDR bytes of a raw
    subscription: rclpy's deserialisation builds a Python object per pose, point and
    quaternion, which cost most of a fleet-state callback (about 0.3 ms for 16 poses).
    Raises ``CdrError`` for an encoding it does not read.
    """
    body, order, align, sec, nanosec, offset = _cdr_header(data, strings=1)
    offset = (offset + 3) & ~3
    (n,) = struct.unpack_from(order + "I", body, offset)
    raw = _cdr_doubles(body, order, align, offset + 4, 7 * n) if n else np.zeros(0)
    return Time(sec=sec, nanosec=nanosec), base_poses_from_quaternion_poses(raw)


def pose_from_odom_cdr(data: bytes) -> tuple[Time, np.ndarray]:
    """(stamp, base pose [3]) of a *serialized* ``nav_msgs/Odometry`` (as ``pose_from_odom``).

    Raises ``CdrError`` for an encoding it does not read.
    """
    body, order, align, sec, nanosec, offset = _cdr_header(data, strings=2)
    raw = _cdr_doubles(body, order, align, offset, 7)
    return Time(sec=sec, nanosec=nanosec), base_poses_from_quaternion_poses(raw)[0]


def read_pose_array(data: bytes) -> tuple[Time, np.ndarray]:
    """(stamp, base poses [n, 3]) of a serialized ``PoseArray`` from a raw subscription.

    ``poses_from_pose_array_cdr``, or rclpy's deserialisation for an encoding it does not read.
    """
    try:
        return poses_from_pose_array_cdr(data)
    except (CdrError, struct.error):
        msg = deserialize_message(data, PoseArray)
        return msg.header.stamp, poses_from_pose_array(msg)


def read_odometry(data: bytes) -> tuple[Time, np.ndarray]:
    """(stamp, base pose [3]) of a serialized ``Odometry`` (as ``read_pose_array``)."""
    try:
        return pose_from_odom_cdr(data)
    except (CdrError, struct.error):
        msg = deserialize_message(data, Odometry)
        return msg.header.stamp, pose_from_odom(msg)


def pose_array_msg(poses, stamp: Time, frame_id: str) -> PoseArray:
    """Fleet state: every robot's base pose in one ``PoseArray``, in fleet order.

    Args:
        poses: [n, 3] base poses (x [m], y [m], yaw [rad]) in ``frame_id``, fleet-file order.
        stamp: time of the state (simulated time under ``use_sim_time``).
        frame_id: fixed frame (``world`` or the fleet file's ``frame_id``).

    """
    msg = PoseArray()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    out = []
    for x, y, yaw in np.asarray(poses, dtype=float).reshape(-1, 3):
        pose = Pose()
        pose.position.x, pose.position.y = float(x), float(y)
        o = pose.orientation
        o.x, o.y, o.z, o.w = yaw_to_quat(float(yaw))
        out.append(pose)
    msg.poses = out
    return msg


def odom_msg(pose, command, stamp: Time, frame_id: str, child_frame_id: str) -> Odometry:
    """Odometry of a unicycle.

    Args:
        pose: (x [m], y [m], yaw [rad]) of ``base_link`` in ``frame_id``.
        command: (v [m/s], omega [rad/s]) being applied (the body-frame twist).
        stamp: message time.
        frame_id: fixed frame (``world`` or ``odom``).
        child_frame_id: ``<ns>/base_link``.

    """
    msg = Odometry()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.child_frame_id = child_frame_id
    msg.pose.pose.position.x = float(pose[0])
    msg.pose.pose.position.y = float(pose[1])
    qx, qy, qz, qw = yaw_to_quat(float(pose[2]))
    o = msg.pose.pose.orientation
    o.x, o.y, o.z, o.w = qx, qy, qz, qw
    msg.twist.twist.linear.x = float(command[0])
    msg.twist.twist.angular.z = float(command[1])
    return msg


def command_from_twist(msg: Twist) -> np.ndarray:
    """Unicycle command (v [m/s], omega [rad/s]) of a Twist (other components ignored)."""
    return np.array([msg.linear.x, msg.angular.z], dtype=float)


def twist_msg(command) -> Twist:
    """Twist of a unicycle command (v [m/s], omega [rad/s])."""
    msg = Twist()
    msg.linear.x = float(command[0])
    msg.angular.z = float(command[1])
    return msg


#: CDR encapsulation of a little-endian classic-CDR message (what rclpy serialises here).
_CDR_LE = b"\x00\x01\x00\x00"
_TWIST = struct.Struct("<6d")


def twist_cdr(command) -> bytes:
    """``twist_msg(command)`` serialised (classic CDR, little endian), for ``publish(bytes)``.

    A ``Twist`` is six doubles after the 4-byte encapsulation header; publishing the bytes
    skips building the message object and rclpy's serialisation on the filter's per-period
    path.  ``tests/ros/test_fleet_state.py`` pins it to ``serialize_message(twist_msg(...))``.
    """
    return _CDR_LE + _TWIST.pack(float(command[0]), 0.0, 0.0, 0.0, 0.0, float(command[1]))


def goal_from_pose(msg: PoseStamped) -> np.ndarray:
    """Goal (x, y) [m] of a ``PoseStamped`` (orientation ignored: goals are points)."""
    return np.array([msg.pose.position.x, msg.pose.position.y], dtype=float)


def goal_msg(goal, stamp: Time, frame_id: str) -> PoseStamped:
    """``PoseStamped`` of a goal point (x, y) [m] with identity orientation."""
    msg = PoseStamped()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.pose.position.x = float(goal[0])
    msg.pose.position.y = float(goal[1])
    msg.pose.orientation.w = 1.0
    return msg


def level_int(level) -> int:
    """A diagnostic level as int (the message constants are 1-byte ``bytes``)."""
    return level[0] if isinstance(level, (bytes, bytearray)) else int(level)


#: Diagnostic levels as ints.
LEVEL_OK, LEVEL_WARN, LEVEL_ERROR, LEVEL_STALE = (
    level_int(v) for v in (DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR,
                           DiagnosticStatus.STALE)
)


def diagnostic_array(stamp: Time, name: str, hardware_id: str, level, message: str,
                     values: dict) -> DiagnosticArray:
    """A one-status ``DiagnosticArray``.

    Args:
        stamp: message time.
        name: status name (``<node>: <robot>``).
        hardware_id: the robot's namespace.
        level: ``DiagnosticStatus.OK``/``WARN``/``ERROR``/``STALE`` (bytes or int).
        message: human-readable summary (the fallback reason).
        values: key -> value, written with ``repr`` for floats so they round-trip exactly.

    """
    status = DiagnosticStatus(level=bytes([level_int(level)]), name=name, message=message,
                              hardware_id=hardware_id)
    status.values = [KeyValue(key=str(k), value=repr(v) if isinstance(v, float) else str(v))
                     for k, v in values.items()]
    return DiagnosticArray(header=_header(stamp), status=[status])


def diagnostic_values(msg: DiagnosticArray) -> list[tuple[str, int, str, dict]]:
    """(name, level, message, values) of each status of a ``DiagnosticArray``."""
    out = []
    for st in msg.status:
        values = {kv.key: kv.value for kv in st.values}
        out.append((st.name, level_int(st.level), st.message, values))
    return out


def _header(stamp: Time):
    from std_msgs.msg import Header  # noqa: PLC0415 - only here

    return Header(stamp=stamp)


def _color(r: float, g: float, b: float, a: float = 1.0) -> ColorRGBA:
    return ColorRGBA(r=float(r), g=float(g), b=float(b), a=float(a))


def _palette(i: int) -> tuple[float, float, float]:
    """Distinct colour of robot ``i`` (golden-angle hue walk)."""
    h = (i * 0.618034) % 1.0
    k = np.array([5.0, 3.0, 1.0])
    rgb = 1.0 - 0.7 * np.clip(np.minimum(np.abs((h * 6.0 + k) % 6.0 - 3.0) - 1.0, 1.0), 0, 1)
    return tuple(float(c) for c in rgb)


def markers_msg(stamp: Time, frame_id: str, names, poses, goals, diameter_m: float,
                safety_distance_m: float, obstacles) -> MarkerArray:
    """RViz markers: robot bodies (with a heading arrow), safety discs, goals, obstacles.

    Args:
        stamp: message time.
        frame_id: fixed frame of the markers.
        names: robot namespaces [n].
        poses: [n, 3] base poses (x, y, yaw) [m, m, rad].
        goals: [n, 2] goals [m].
        diameter_m: body diameter [m].
        safety_distance_m: centre distance kept [m] (the disc drawn has this diameter, so
            touching discs mean the limit).
        obstacles: [O, 3] (x, y, r) [m].

    """
    out = MarkerArray()

    def marker(ns, mid, mtype, x, y, sx, sy, sz, color, z=0.0):
        m = Marker()
        m.header.stamp = stamp
        m.header.frame_id = frame_id
        m.ns, m.id, m.type, m.action = ns, int(mid), mtype, Marker.ADD
        m.pose.position.x, m.pose.position.y, m.pose.position.z = float(x), float(y), float(z)
        m.pose.orientation.w = 1.0
        m.scale.x, m.scale.y, m.scale.z = float(sx), float(sy), float(sz)
        m.color = color
        return m

    for i, (name, pose, goal) in enumerate(zip(names, poses, goals, strict=True)):
        rgb = _palette(i)
        body = marker("robots", i, Marker.CYLINDER, pose[0], pose[1], diameter_m, diameter_m,
                      0.05, _color(*rgb), 0.025)
        body.text = name
        out.markers.append(body)
        arrow = marker("headings", i, Marker.ARROW, 0.0, 0.0, 0.01, 0.02, 0.0, _color(*rgb),
                       0.05)
        arrow.pose.orientation.w = 1.0
        tip = 0.5 * diameter_m + 0.04
        arrow.points = [Point(x=float(pose[0]), y=float(pose[1]), z=0.05),
                        Point(x=float(pose[0] + tip * math.cos(pose[2])),
                              y=float(pose[1] + tip * math.sin(pose[2])), z=0.05)]
        out.markers.append(arrow)
        out.markers.append(marker("safety_discs", i, Marker.CYLINDER, pose[0], pose[1],
                                  safety_distance_m, safety_distance_m, 0.005,
                                  _color(*rgb, 0.25), 0.0025))
        out.markers.append(marker("goals", i, Marker.SPHERE, goal[0], goal[1], 0.04, 0.04, 0.04,
                                  _color(*rgb, 0.8), 0.02))
    for j, (x, y, r) in enumerate(obstacles):
        out.markers.append(marker("obstacles", j, Marker.CYLINDER, x, y, 2 * r, 2 * r, 0.1,
                                  _color(0.3, 0.3, 0.3), 0.05))
    return out
