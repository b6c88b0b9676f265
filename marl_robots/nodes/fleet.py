"""Fleets: which robots exist, their ids, namespaces, initial poses and goals (ROS-free).

A fleet comes either from a fleet file under ``hardware/`` (usable by the simulator now and by
hardware drivers later) or from a simulated scenario (``robots`` count + ``scenario`` name).
Fleet file format (strict: unknown keys are errors)::

    fleet:
      frame_id: world              # REP-105 fixed frame of poses and goals
      arena_m: [3.2, 2.0]          # arena size (x, y) [m], centred on the origin
      obstacles: [[0.0, 0.0, 0.1]] # optional circular obstacles (x, y, radius) [m]
      robot_types:                 # optional; default: one type named 'default' (core.defaults)
        - {name: gritsbot, robot: unicycle, diameter_m: 0.11, v_max: 0.2, omega_max: 3.6,
           lookahead_m: 0.04}
      robots:
        - {name: robot_0, id: 0, type: gritsbot, initial_pose: [x, y, yaw], goal: [x, y]}

``robot_types`` (as Crazyswarm2's ``crazyflies.yaml`` has ``robot_types``) names each kind of
robot once: its family (a name in ``sim.robots.ROBOTS``) and physical parameters; every robot
refers to one by ``type``.  The nodes check their ``robot`` and physical parameters against
their robot's type.

``initial_pose`` is the pose of ``<name>/base_link`` (axle centre) [m, m, rad]; ``goal`` is the
goal of the robot's *control point* (the look-ahead point of a unicycle) [m], as in the
navigation task.  ``name`` is the robot's ROS namespace.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from marl_robots.core import defaults, validate
from marl_robots.core.config import ConfigError, load_config
from marl_robots.core.paths import content_path
from marl_robots.sim.layout import SAFETY_DISTANCE_M, check_ground_layout
from marl_robots.sim.robots import ROBOTS

#: ROS 2 name token: letters, digits and underscores, not starting with a digit.
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: Fleet-file section that holds the fleet.
FLEET_SECTION = "fleet"


#: Physical parameters of a robot type, in ``GroundParams`` order.
TYPE_PARAMETERS = ("diameter_m", "v_max", "omega_max", "lookahead_m")


@dataclass(frozen=True)
class RobotType:
    """A kind of robot in a fleet file's ``robot_types``.

    Attributes:
        name: the type's name (robots refer to it by ``type``).
        robot: robot family, a name in ``sim.robots.ROBOTS``.
        diameter_m, v_max, omega_max, lookahead_m: physical parameters [m, m/s, rad/s, m]
            (see ``sim.robots.ground.GroundParams``).

    """

    name: str = "default"
    robot: str = defaults.ROBOT
    diameter_m: float = defaults.DIAMETER_M
    v_max: float = defaults.V_MAX
    omega_max: float = defaults.OMEGA_MAX
    lookahead_m: float = defaults.LOOKAHEAD_M

    def __post_init__(self) -> None:
        if self.robot not in ROBOTS:
            raise ValueError(f"robot type {self.name!r}: unknown robot {self.robot!r}; known "
                             f"robots: {', '.join(ROBOTS.names())}")
        for key in TYPE_PARAMETERS:
            validate.positive(f"robot type {self.name!r}: {key}", getattr(self, key))


@dataclass(frozen=True)
class RobotEntry:
    """One robot of a fleet.

    Attributes:
        name: ROS namespace of the robot (one token, e.g. ``robot_3``).
        id: unique non-negative integer id.
        initial_pose: (x [m], y [m], yaw [rad]) of ``base_link`` in the fleet frame.
        goal: (x, y) goal of the control point [m].
        type: name of the robot's entry in the fleet's ``robot_types``.

    """

    name: str
    id: int
    initial_pose: tuple[float, float, float] = (0.0, 0.0, 0.0)
    goal: tuple[float, float] = (0.0, 0.0)
    type: str = "default"


@dataclass(frozen=True)
class Fleet:
    """A fleet and its surroundings.

    Attributes:
        robots: the robots, in fleet order.
        frame_id: fixed frame of poses, goals and odometry (``world`` or ``odom``).
        arena_m: arena size (x, y) [m], centred on the origin.
        obstacles: circular obstacles (x, y, radius) [m].
        robot_types: the kinds of robot (family and physical parameters) robots refer to.

    """

    robots: tuple[RobotEntry, ...]
    frame_id: str = "world"
    arena_m: tuple[float, float] = defaults.ARENA_M
    obstacles: tuple[tuple[float, float, float], ...] = ()
    robot_types: tuple[RobotType, ...] = (RobotType(),)

    def __post_init__(self) -> None:
        if not self.robots:
            raise ValueError("a fleet needs at least one robot")
        names = [r.name for r in self.robots]
        ids = [r.id for r in self.robots]
        for r in self.robots:
            if not _NAME_RE.match(r.name):
                raise ValueError(f"robot name {r.name!r} is not a valid ROS name token")
            if r.id < 0:
                raise ValueError(f"robot {r.name!r} has negative id {r.id}")
        if len(set(names)) != len(names) or len(set(ids)) != len(ids):
            raise ValueError(f"robot names and ids must be unique, got {names} / {ids}")
        if len(self.arena_m) != 2:
            raise ValueError(f"arena_m must be (x, y), got {self.arena_m}")
        for v in self.arena_m:
            validate.positive("arena_m", v)
        for k, obstacle in enumerate(self.obstacles):
            if len(obstacle) != 3:
                raise ValueError(f"obstacle {k} must be (x, y, radius), got {obstacle}")
            validate.finite(f"obstacle {k}", obstacle)
            if not obstacle[2] > 0:
                raise ValueError(f"obstacle {k} has radius {obstacle[2]:g} (must be > 0)")
        if not _NAME_RE.match(self.frame_id):
            raise ValueError(f"frame_id {self.frame_id!r} is not a valid frame name")
        types = [t.name for t in self.robot_types]
        if len(set(types)) != len(types):
            raise ValueError(f"robot_types names must be unique, got {types}")
        for r in self.robots:
            if r.type not in types:
                raise ValueError(f"robot {r.name!r} has type {r.type!r}, which is not in "
                                 f"robot_types ({', '.join(types)})")

    def robot_type(self, index: int) -> RobotType:
        """The ``RobotType`` of the robot at fleet row ``index``."""
        name = self.robots[index].type
        return next(t for t in self.robot_types if t.name == name)

    @property
    def ids(self) -> list[int]:
        """Robot ids in fleet order."""
        return [r.id for r in self.robots]

    @property
    def names(self) -> list[str]:
        """Robot namespaces in fleet order."""
        return [r.name for r in self.robots]

    @property
    def arena_bounds(self) -> tuple[float, float, float, float]:
        """(x_min, x_max, y_min, y_max) [m]."""
        w, h = self.arena_m
        return (-0.5 * w, 0.5 * w, -0.5 * h, 0.5 * h)

    def index_of(self, robot_id: int) -> int:
        """Position of ``robot_id`` in the fleet.

        Raises:
            KeyError: naming the unknown id and the known ones.

        """
        for i, r in enumerate(self.robots):
            if r.id == robot_id:
                return i
        raise KeyError(f"unknown robot id {robot_id}; fleet ids: {self.ids}")


def resolve_fleet_path(fleet_file: str | Path) -> Path:
    """Find a fleet file: an existing path as given, else ``hardware/<fleet_file>`` content.

    Raises:
        FileNotFoundError: naming every place that was searched.

    """
    path = Path(fleet_file).expanduser()
    if path.is_file():
        return path
    try:
        return content_path("hardware", str(fleet_file))
    except FileNotFoundError as err:
        raise FileNotFoundError(f"fleet file {str(fleet_file)!r} not found ({err})") from err


def load_fleet(fleet_file: str | Path) -> Fleet:
    """Load and validate a fleet file.

    Besides the format, the layout is checked with ``check_fleet_layout`` for the default robot
    and safety distance (the nodes check it again with their own parameters).

    Args:
        fleet_file: path, or a file name under the package's ``hardware/`` folder.

    Returns:
        The ``Fleet``.

    Raises:
        FileNotFoundError: the file does not exist.
        ConfigError: the file does not match the format or its layout is unsafe (one line
            naming the file, the key or robot, and the rule).

    """
    path = resolve_fleet_path(fleet_file)
    fleet = load_config(Fleet, path, section=FLEET_SECTION)
    try:
        check_fleet_layout(fleet, what=f"fleet file {path}")
    except validate.ValidationError as err:
        raise ConfigError(str(err)) from None
    return fleet


def check_fleet_layout(fleet: Fleet, model=None, safety_distance_m: float = SAFETY_DISTANCE_M,
                       what: str = "fleet", dt_s: float = defaults.DT_S) -> None:
    """Check a fleet's starts and goals against the filter's margins (``check_ground_layout``).

    Finite poses and goals, inside the arena less the wall margin, no two starts or goals
    closer than the pair margin, none inside an obstacle's margin, obstacle radii > 0.

    Args:
        fleet: the fleet (robots with initial poses and goals).
        model: robot parameters (``diameter_m``, ``lookahead_m``, ...); ``None``: those of the
            fleet's robot type.
        safety_distance_m: least distance between robot centres [m] (>= body diameter).
        what: name of the fleet in messages (e.g. ``fleet file <path>``).
        dt_s: control period [s] of the filter (sizes the margins' step part).

    Raises:
        ValidationError: one line naming ``what``, the robot (by name) and the broken rule.

    """
    from marl_robots.nodes.onboard import RobotModel  # noqa: PLC0415 - cycle

    names = fleet.names
    kinds = sorted({r.type for r in fleet.robots})
    if len(kinds) > 1:
        raise validate.ValidationError(
            f"{what}: robots of types {', '.join(kinds)}: a fleet of mixed robot types is not "
            "supported yet (the filter's margins assume one robot model)")
    kind = fleet.robot_type(0)
    robot = ROBOTS.get(kind.robot)
    if model is None:
        model = RobotModel(*(getattr(kind, key) for key in TYPE_PARAMETERS))
    for r in fleet.robots:
        for key in ("initial_pose", "goal"):
            value = getattr(r, key)
            if not all(math.isfinite(float(v)) for v in value):
                raise validate.ValidationError(
                    f"{what}: robot {r.name!r} has a non-finite {key} {list(value)}")
    pos = [r.initial_pose[:2] for r in fleet.robots]
    yaw = [r.initial_pose[2] for r in fleet.robots]
    goals = [r.goal for r in fleet.robots]
    obstacles = [list(o) for o in fleet.obstacles]
    try:
        check_ground_layout(robot, model, pos, yaw, goals, obstacles, fleet.arena_bounds,
                            safety_distance_m, what, dt_s)
    except validate.ValidationError as err:
        raise validate.ValidationError(_robot_names(str(err), names)) from None


def _robot_names(message: str, names: list[str]) -> str:
    """Replace the layout check's robot indices by the fleet's robot names."""
    def one(m: re.Match) -> str:
        return f"robot {names[int(m.group(1))]!r}" if int(m.group(1)) < len(names) else m[0]

    def pair(m: re.Match) -> str:
        i, j = int(m.group(1)), int(m.group(2))
        if max(i, j) >= len(names):
            return m[0]
        return f"robots {names[i]!r} and {names[j]!r}"

    message = re.sub(r"robots (\d+) and (\d+)", pair, message)
    return re.sub(r"robot (\d+)(?=\D|$)", one, message)


def default_name(robot_id: int) -> str:
    """Namespace of robot ``robot_id`` when no fleet file names it."""
    return f"robot_{robot_id}"


def fleet_from_scenario(robots: int, scenario: str = "antipodal", seed: int = 0) -> Fleet:
    """Fleet of ``robots`` unicycles laid out by a navigation scenario.

    Imports JAX (the scenarios are JAX functions); the result is plain Python data.

    Args:
        robots: number of robots (>= 1).
        scenario: scenario name (``marl_robots.sim.scenarios``).
        seed: PRNG seed of random scenarios.

    Returns:
        A ``Fleet`` named ``robot_0 .. robot_<n-1>`` with the scenario's poses and goals.

    """
    import jax  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    from marl_robots.sim.tasks.navigation import (  # noqa: PLC0415 - JAX only when needed
        NavigationConfig,
        NavigationTask,
    )

    task = NavigationTask(NavigationConfig(robots=int(robots), scenario=scenario))
    state = task.reset(jax.random.PRNGKey(int(seed)), task.default_params())
    pos, yaw, goal = (np.asarray(a, dtype=float) for a in (state.pos, state.yaw, state.goal))
    obstacles = np.asarray(state.obstacles, dtype=float)[np.asarray(state.obstacle_mask)]
    entries = tuple(
        RobotEntry(
            name=default_name(i),
            id=i,
            initial_pose=(float(pos[i, 0]), float(pos[i, 1]), float(yaw[i])),
            goal=(float(goal[i, 0]), float(goal[i, 1])),
        )
        for i in range(task.n)
    )
    return Fleet(
        robots=entries,
        arena_m=tuple(float(a) for a in task.config.arena_m),
        obstacles=tuple(tuple(float(v) for v in o) for o in obstacles),
    )


def make_fleet(robots: int = 8, scenario: str = "antipodal", fleet_file: str = "",
               seed: int = 0) -> Fleet:
    """The fleet of a launch: the fleet file if one is given, else the scenario layout.

    Args:
        robots: robot count used when ``fleet_file`` is empty.
        scenario: scenario used when ``fleet_file`` is empty.
        fleet_file: fleet file path or name under ``hardware/`` ('' for none).
        seed: PRNG seed of random scenarios.

    Raises:
        FileNotFoundError, ConfigError, ValueError: with a message naming the bad input.

    """
    if fleet_file:
        return load_fleet(fleet_file)
    if int(robots) < 1:
        raise ValueError(f"robots must be >= 1, got {robots}")
    return fleet_from_scenario(int(robots), scenario, seed)


def fleet_to_dict(fleet: Fleet) -> dict:
    """The fleet-file mapping of ``fleet`` (``yaml.safe_dump`` it to write a fleet file)."""
    return {
        FLEET_SECTION: {
            "frame_id": fleet.frame_id,
            "arena_m": list(fleet.arena_m),
            "obstacles": [list(o) for o in fleet.obstacles],
            "robot_types": [dict(vars(t)) for t in fleet.robot_types],
            "robots": [
                {"name": r.name, "id": r.id, "type": r.type,
                 "initial_pose": [round(v, 6) for v in r.initial_pose],
                 "goal": [round(v, 6) for v in r.goal]}
                for r in fleet.robots
            ],
        }
    }


__all__ = [
    "ConfigError",
    "check_fleet_layout",
    "Fleet",
    "RobotEntry",
    "RobotType",
    "default_name",
    "fleet_from_scenario",
    "fleet_to_dict",
    "load_fleet",
    "make_fleet",
    "resolve_fleet_path",
]
