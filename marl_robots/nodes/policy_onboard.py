"""ROS-free part of ``policy_node`` and of the filter's gain input (the CBF-tuning seam).

``policy_node`` runs a policy bundle (``policies.runtime``) for one robot: from the fleet's
base poses it builds the robot's observation exactly as the env does
(``policies.observation.observe``, control points of the robot family named by the ``robot``
parameter, velocities from the last period's displacement), runs the network and turns the
output into a message:

* ``gnn`` bundles: the control-point velocity becomes the robot's own command through the robot
  model (``from_point_velocity``), published as ``cmd_vel_nominal`` into the safety filter;
* ``cbf-tuning`` bundles: the class-K gain [1/s], published as ``std_msgs/Float64`` on
  ``cbf_gain``; ``safety_filter_node`` takes it through ``tuned_gain``: clipped to its
  ``gamma_bounds`` while fresh and finite, else its fixed ``gamma`` (nominal commands then come
  from ``controller_node``, the same cooperative go-to-goal the policy was trained around).

Configuration refuses, naming the parameter: a missing bundle (``bundle``), a bundle for another
robot family or observation spec or with bad hashes (``bundle``, the message says which), and
a ``cbf-tuning`` bundle whose gain bounds exceed the filter defaults'.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from marl_robots.core import defaults
from marl_robots.core.paths import content_path
from marl_robots.nodes.fleet import Fleet
from marl_robots.nodes.onboard import (
    _FLEET,
    _ROBOT,
    _WORLD,
    ParameterError,
    ParamSpec,
    RobotModel,
    robot_family,
    robot_model,
    sensing_config,
)
from marl_robots.policies.bundle import MANIFEST, BundleError
from marl_robots.policies.observation import observe
from marl_robots.policies.runtime import OnboardPolicy, load_bundle

#: Parameters of the filter's gain input (appended to ``safety_filter_node``'s table).
GAIN_PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("gamma_bounds", "double_array", list(defaults.GAMMA_BOUNDS),
              "a tuned class-K gain on cbf_gain is clipped to these (low, high) [1/s]"),
)

#: Parameters of ``policy_node``.
POLICY_PARAMS: tuple[ParamSpec, ...] = (
    *_FLEET,
    *_ROBOT,
    *_WORLD,
    ParamSpec("bundle", "string", "",
              "policy bundle: a folder with manifest.json, or the name of a shipped policy "
              "(policies/<name>/bundle)"),
    ParamSpec("backend", "string", "", "onnx or torch ('' = the first installed)"),
    ParamSpec("dt_s", "double", defaults.DT_S,
              "control period [s]: observed velocities are displacements over this"),
    ParamSpec("state_timeout_s", "double", 0.5,
              "fleet state older than this is a stale observation: no output [s]"),
    ParamSpec("max_position_m", "double", 100.0, "poses farther than this are garbage [m]"),
    ParamSpec("autostart", "bool", True, "configure and activate on start-up"),
)


def tuned_gain(value: float, age_s: float, timeout_s: float, bounds, default: float):
    """The class-K gain the filter uses, and where it came from.

    Args:
        value: last gain received on ``cbf_gain`` [1/s] (NaN if none).
        age_s: its age [s] (inf if none).
        timeout_s: older gains are stale.
        bounds: (low, high) [1/s]; default: the fixed gain [1/s].

    Returns:
        ``(gamma, source)``: ``(clip(value, low, high), "policy")`` when fresh and finite, else
        ``(default, "default: <why>")``.
    """
    if not math.isfinite(age_s):
        return default, "default: no tuned gain"
    if age_s > timeout_s:
        return default, f"default: tuned gain {age_s:.2f} s old"
    if not math.isfinite(value):
        return default, "default: non-finite tuned gain"
    lo, hi = bounds
    return min(max(float(value), lo), hi), "policy"


def gain_bounds(p: dict) -> tuple[float, float]:
    """Validated ``gamma_bounds`` (0 < low < high)."""
    b = [float(v) for v in (p.get("gamma_bounds") or [])]
    if len(b) != 2 or not all(math.isfinite(v) for v in b) or not 0 < b[0] < b[1]:
        raise ParameterError("gamma_bounds", f"expected (low, high) with 0 < low < high, got {b}")
    return b[0], b[1]


def resolve_bundle(name: str) -> Path:
    """The bundle folder of a ``bundle`` parameter (a path, or a shipped policy's name).

    Raises:
        ParameterError: naming ``bundle`` and where it looked.
    """
    if not name:
        raise ParameterError("bundle", "not set: give a bundle folder (marl-robots export "
                             "--out) or the name of a shipped policy")
    path = Path(name).expanduser()
    if (path / MANIFEST).is_file():
        return path
    tried = [str(path)]
    for parts in (("policies", name, "bundle"), ("policies", name)):
        try:
            cand = Path(content_path(*parts))
        except FileNotFoundError:
            tried.append("/".join(parts))
            continue
        if (cand / MANIFEST).is_file():
            return cand
        tried.append(str(cand))
    raise ParameterError("bundle", f"no policy bundle {name!r} (looked for {MANIFEST} in "
                         f"{', '.join(tried)})")


@dataclass(frozen=True)
class PolicySetup:
    """Everything ``policy_step`` needs besides the live state."""

    policy: OnboardPolicy
    robot: type
    model: RobotModel
    neighbours: int
    sensing_radius_m: float
    obstacle_slots: int
    obstacles: np.ndarray
    arena: tuple[float, float, float, float]
    dt_s: float


def policy_setup(p: dict, fleet: Fleet) -> PolicySetup:
    """Load and check the bundle against this robot (see the module docstring).

    Raises:
        ParameterError: naming the parameter (``bundle`` for anything about the bundle).
    """
    robot = robot_family(p)
    model = robot_model(p)
    sensing = sensing_config(p)
    path = resolve_bundle(str(p.get("bundle", "")))
    try:
        policy = load_bundle(path, backend=p.get("backend") or None, robot=robot.name, d=2,
                             neighbours=sensing.neighbours)
    except BundleError as err:
        raise ParameterError("bundle", f"{path}: {err}") from None
    m = policy.manifest
    if not math.isclose(m["observation"]["sensing_radius_m"], sensing.sensing_radius_m):
        raise ParameterError("sensing_radius_m", f"{sensing.sensing_radius_m} but bundle {path} "
                             f"was trained with {m['observation']['sensing_radius_m']}")
    if policy.kind == "cbf-tuning":
        lo, hi = m["filter"]["gamma_bounds"]
        if lo < defaults.GAMMA_BOUNDS[0] or hi > defaults.GAMMA_BOUNDS[1]:
            raise ParameterError("bundle", f"{path}: gain bounds {lo, hi} exceed the filter's "
                                 f"{defaults.GAMMA_BOUNDS}")
    dt = float(p["dt_s"])
    if not math.isfinite(dt) or dt <= 0:
        raise ParameterError("dt_s", f"must be a positive number, got {p['dt_s']!r}")
    obstacles = np.asarray(fleet.obstacles, float).reshape(-1, 3)
    return PolicySetup(policy, robot, model, sensing.neighbours, sensing.sensing_radius_m,
                       int(m["observation"]["obstacle_slots"]), obstacles,
                       tuple(fleet.arena_bounds), dt)


def control_points(poses: np.ndarray, setup: PolicySetup) -> np.ndarray:
    """Control points [n, 2] of base poses [n, 3]; non-finite rows stay non-finite."""
    poses = np.asarray(poses, float)
    with np.errstate(invalid="ignore"):
        return setup.robot.control_point(poses[:, :2], poses[:, 2], setup.model, np)


def point_velocities(points, prev_points, elapsed_s: float, dt_s: float) -> np.ndarray:
    """Control-point velocities [n, 2] [m/s]: displacement since the last period / elapsed.

    Zero (as the env's first step) when there is no previous period, when ``elapsed_s`` is not
    within (0, 2.5 dt_s], and for rows that are not finite in both.
    """
    vel = np.zeros_like(points)
    if prev_points is None or not 0.0 < elapsed_s <= 2.5 * dt_s:
        return vel
    with np.errstate(invalid="ignore"):
        v = (points - prev_points) / elapsed_s
    return np.where(np.isfinite(v), v, 0.0)


def policy_step(points, vel, index: int, goal, setup: PolicySetup):
    """Observation [obs_dim] and the bundle's output [a] for robot ``index``.

    Args:
        points: [n, 2] fleet control points [m]; rows that are not finite are not sensed.
        vel: [n, 2] their velocities [m/s]; goal: (x, y) goal of the control point [m].
    """
    pts = np.where(np.isfinite(points), points, 1e9)  # unsensed: far outside any radius
    goals = np.zeros_like(pts)
    goals[index] = goal
    x0, x1, y0, y1 = setup.arena
    obs = observe(pts, vel, goals, setup.obstacles, np.ones(len(setup.obstacles), bool),
                  (x0, x1, y0, y1), setup.neighbours, setup.sensing_radius_m,
                  setup.obstacle_slots, rows=[index])
    return obs[0], setup.policy(obs)[0]


def velocity_command(u, yaw: float, setup: PolicySetup) -> np.ndarray:
    """The robot's own command for a control-point velocity ``u`` [2] [m/s].

    Unicycle: (v [m/s], omega [rad/s]) at heading ``yaw`` [rad].
    """
    return setup.robot.from_point_velocity(np.asarray(u, float)[None], np.array([yaw]),
                                           setup.model, np)[0]
