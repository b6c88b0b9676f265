"""Per-robot control pipeline of the onboard nodes, in NumPy and free of ROS.

The nodes unpack messages, call these functions and pack the results; the composition mirrors
``marl_robots.sim.closed_loop.control`` for one robot so that a robot driven through ROS 2 gets
the same command as the batched JAX simulation (a parity test pins it):

1. control points (look-ahead points) of every fleet robot from their base poses,
2. robot ``i``'s neighbour list: the ``k`` nearest control points within the sensing radius,
3. nominal go-to-goal on the control point with the right-hand bias (``controller_node``),
4. the decentralised CBF filter of robot ``i`` (``safety_filter_node``), then the map back to
   unicycle (v, omega).  ``filter_command`` runs it in plain Python floats
   (``controllers.scalar_filter``, tens of microseconds); ``filter_command_reference`` is
   ``filter_robots`` with ``xp=numpy`` and n = 1 (about a millisecond), which the fast path
   equals (``tests/test_scalar_filter.py``) and calls itself for non-finite or absurd input.

Also here: the parameter tables the nodes declare (so that static tests can check the
parameter YAML files without ROS) and their validation, which raises ``ParameterError`` naming
the offending parameter.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import yaml

from marl_robots.controllers import cbf as cbf_rows
from marl_robots.controllers import nominal, scalar_filter
from marl_robots.controllers.safety_filter import (
    CBFParams,
    FilterConfig,
    FilterInfo,
    FilterStatus,
    World,
    filter_robots,
)
from marl_robots.core import config, defaults, validate
from marl_robots.core.config import ConfigError
from marl_robots.core.registry import UnknownNameError
from marl_robots.nodes.fleet import (
    TYPE_PARAMETERS,
    Fleet,
    RobotEntry,
    check_fleet_layout,
    load_fleet,
)
from marl_robots.sim.layout import filter_margins
from marl_robots.sim.robots import ROBOTS


class ParameterError(ValueError):
    """An invalid node parameter; ``name`` is the parameter, the message says why.

    ``failure`` is ``(name, why)``, what a node keeps in its ``failed`` attribute.
    """

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"invalid parameter '{name}': {message}")
        self.name = name
        self.failure = (name, message)


@dataclass(frozen=True)
class ParamSpec:
    """One declared node parameter.

    Attributes:
        name: parameter name.
        kind: ``bool``, ``int``, ``double``, ``string``, ``int_array``, ``double_array`` or
            ``string_array``.
        default: default value (``None``: the parameter must be set, or an empty array).
        description: one line for ``ros2 param describe``.

    """

    name: str
    kind: str
    default: object
    description: str


_ROBOT = (
    ParamSpec("robot", "string", defaults.ROBOT,
              "robot family, a name in the robot registry (unicycle, single_integrator)"),
    ParamSpec("diameter_m", "double", defaults.DIAMETER_M, "robot body diameter [m]"),
    ParamSpec("v_max", "double", defaults.V_MAX, "top linear speed [m/s]"),
    ParamSpec("omega_max", "double", defaults.OMEGA_MAX, "top turn rate [rad/s]"),
    ParamSpec("lookahead_m", "double", defaults.LOOKAHEAD_M,
              "control point ahead of the axle [m]"),
)
_FLEET = (
    ParamSpec("robot_id", "int", -1, "id of this robot in the fleet"),
    ParamSpec("fleet_file", "string", "",
              "fleet file (path or name under hardware/); overrides fleet_ids/namespaces/arena/"
              "obstacles when set"),
    ParamSpec("fleet_ids", "int_array", None, "ids of every fleet robot (this one included)"),
    ParamSpec("fleet_namespaces", "string_array", None, "namespaces, in fleet_ids order"),
    ParamSpec("neighbours", "int", defaults.NEIGHBOURS, "neighbour budget k of the sensing graph"),
    ParamSpec("sensing_radius_m", "double", defaults.SENSING_RADIUS_M,
              "neighbours farther than this are ignored [m]"),
)

_WORLD = (
    ParamSpec("arena", "double_array", defaults.arena_bounds(),
              "arena walls (x_min, x_max, y_min, y_max) [m]"),
    ParamSpec("obstacles", "double_array", None, "circular obstacles, flat (x, y, r)* [m]"),
    ParamSpec("safety_distance_m", "double", defaults.SAFETY_DISTANCE_M,
              "minimum distance between robot centres [m]"),
)

#: Parameters of ``controller_node``.
CONTROLLER_PARAMS: tuple[ParamSpec, ...] = (
    *_FLEET,
    *_ROBOT,
    *_WORLD,
    ParamSpec("goal_gain", "double", defaults.GOAL_GAIN, "proportional go-to-goal gain [1/s]"),
    ParamSpec("bias", "double", defaults.BIAS, "right-hand bias, fraction of v_max"),
    ParamSpec("make_way", "double", defaults.MAKE_WAY,
              "largest step-aside speed, fraction of v_max"),
    ParamSpec("make_way_radius_m", "double", defaults.MAKE_WAY_RADIUS_M,
              "gap to a neighbour's safety disc below which the robot steps aside [m]"),
    ParamSpec("state_timeout_s", "double", 0.5, "odometry older than this stops the robot [s]"),
)

#: Parameters of ``safety_filter_node``.
SAFETY_FILTER_PARAMS: tuple[ParamSpec, ...] = (
    *_FLEET,
    *_ROBOT,
    *_WORLD,
    ParamSpec("gamma", "double", defaults.GAMMA, "class-K gain [1/s]"),
    ParamSpec("class_k", "string", defaults.CLASS_K, "class-K function: linear or cubic"),
    ParamSpec("dt_s", "double", defaults.DT_S, "control period for the discrete-time clip [s]"),
    ParamSpec("relax_weight", "double", defaults.RELAX_WEIGHT, "weight of the squared slack"),
    ParamSpec("relax_iters", "int", defaults.RELAX_ITERS,
              "interior-point iterations of the relaxed QP"),
    ParamSpec("state_timeout_s", "double", 0.5,
              "own/neighbour odometry or nominal command older than this brakes [s]"),
    ParamSpec("watchdog_rate_hz", "double", 20.0, "staleness checks and diagnostics [Hz]"),
    ParamSpec("max_position_m", "double", 100.0, "odometry farther than this is garbage [m]"),
    ParamSpec("autostart", "bool", True, "configure and activate on start-up"),
)

#: Parameters of ``sim_node``.
SIM_PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("robots", "int", 8, "robot count (ignored when fleet_file is set)"),
    ParamSpec("scenario", "string", "antipodal", "navigation scenario (without fleet_file)"),
    ParamSpec("fleet_file", "string", "", "fleet file (path or name under hardware/)"),
    ParamSpec("seed", "int", 0, "PRNG seed of random scenarios"),
    ParamSpec("dt_s", "double", defaults.DT_S, "simulation step [s]"),
    ParamSpec("rate_hz", "double", 0.0,
              "simulation steps per wall-clock second (0: real time, 1/dt_s)"),
    ParamSpec("cmd_timeout_s", "double", 0.5, "cmd_vel older than this is taken as zero [s]"),
    ParamSpec("publish_clock", "bool", True, "publish /clock (for use_sim_time)"),
    ParamSpec("marker_rate_hz", "double", 5.0, "RViz marker rate [Hz]"),
    ParamSpec("status_rate_hz", "double", 2.0, "status diagnostics rate [Hz]"),
)


def params_files(argv) -> list[str]:
    """The ``--params-file`` paths of the ``--ros-args`` sections of ``argv``."""
    files, in_ros, expect = [], False, False
    for token in argv:
        if expect:
            files.append(token)
            expect = False
        elif token == "--ros-args":
            in_ros = True
        elif token == "--":
            in_ros = False
        elif in_ros and token == "--params-file":
            expect = True
        elif in_ros and token.startswith("--params-file="):
            files.append(token.split("=", 1)[1])
    return files


class _ParamsFileLoader(config._StrictLoader):
    """The strict (duplicate-refusing) loader, reading tagged values as rcl does.

    launch_ros writes list parameters as ``!!python/tuple [...]``; rcl's parser ignores tags,
    so the check must too.
    """


def _untagged(loader, suffix, node):
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    return loader.construct_scalar(node)


_ParamsFileLoader.add_multi_constructor("tag:yaml.org,2002:python/", _untagged)


def check_params_files(argv) -> None:
    """Parse every ``--params-file`` strictly before rcl does (rcl keeps the last duplicate).

    Raises:
        ParameterError: naming the duplicated key (or ``--params-file`` for unreadable or
            invalid YAML), with the file and line.

    """
    for path in params_files(argv):
        try:
            text = Path(path).read_text()
        except OSError as err:
            raise ParameterError("--params-file", f"cannot read {path}: {err}") from err
        try:
            yaml.load(text, Loader=_ParamsFileLoader)  # noqa: S506 - a SafeLoader subclass
        except ConfigError as err:
            match = re.search(r"duplicate key '([^']+)'", str(err))
            raise ParameterError(match.group(1) if match else "--params-file",
                                 f"{path}: {err}") from err
        except yaml.YAMLError as err:
            raise ParameterError("--params-file", f"{path}: not valid YAML: "
                                 f"{' '.join(str(err).split())}") from err


def wants_help(argv) -> bool:
    """True if ``-h`` or ``--help`` comes before any ``--ros-args`` in ``argv`` (no program)."""
    for token in argv:
        if token == "--ros-args":
            return False
        if token in ("-h", "--help"):
            return True
    return False


def help_text(prog: str, summary: str, specs: tuple[ParamSpec, ...]) -> str:
    """``--help`` of a node executable: usage, what it does, every parameter with its default.

    Args:
        prog: executable name.
        summary: what the node does (a paragraph).
        specs: the node's parameter table (units are in each description).

    """
    lines = [
        f"usage: {prog} [-h] [--ros-args [-p NAME:=VALUE]... [--params-file FILE]... "
        "[-r FROM:=TO]...]",
        "",
        summary.strip(),
        "",
        "Exit status: 0 on SIGINT/SIGTERM (after a final zero command where the node commands),",
        "1 when a parameter is invalid or unknown (the message names it).",
        "",
        "parameters (name, type, default: meaning [unit]):",
    ]
    width = max((len(s.name) for s in specs), default=0)
    for spec in specs:
        default = "[]" if spec.default is None else repr(spec.default)
        lines.append(f"  {spec.name:<{width}}  {spec.kind:<12} {default:<22} {spec.description}")
    return "\n".join(lines)


def param_defaults(specs: tuple[ParamSpec, ...]) -> dict:
    """``{name: default}`` of a parameter table (``None`` defaults left out)."""
    return {s.name: s.default for s in specs if s.default is not None}


class RobotModel(NamedTuple):
    """Ground-robot parameters (duck-types ``GroundParams`` for the robot models, no JAX)."""

    diameter_m: float
    v_max: float
    omega_max: float
    lookahead_m: float


def robot_family(p: dict):
    """The robot model class named by the ``robot`` parameter (``sim.robots.ROBOTS``).

    Raises:
        ParameterError: an unknown name (the message lists the known ones).

    """
    try:
        return ROBOTS.get(str(p.get("robot", defaults.ROBOT)))
    except UnknownNameError as err:
        raise ParameterError("robot", str(err)) from None


def check_robot_type(fleet: Fleet, p: dict, model: RobotModel) -> None:
    """Refuse node parameters that disagree with the fleet's ``robot_types``.

    Raises:
        ParameterError: naming the first parameter (``robot``, ``diameter_m``, ...) that differs
            from the fleet's type, with both values.

    """
    kind = fleet.robot_type(0)
    family = str(p.get("robot", defaults.ROBOT))
    if family != kind.robot:
        raise ParameterError("robot", f"{family!r}, but the fleet's robot type {kind.name!r} is "
                             f"a {kind.robot!r}")
    for key in TYPE_PARAMETERS:
        if not math.isclose(getattr(model, key), getattr(kind, key), rel_tol=1e-9):
            raise ParameterError(key, f"{getattr(model, key)!r}, but the fleet's robot type "
                                 f"{kind.name!r} has {key} {getattr(kind, key)!r}")


def robot_model(p: dict) -> RobotModel:
    """Validated ``RobotModel`` from node parameters.

    Raises:
        ParameterError: a non-positive or non-finite value.

    """
    for name in RobotModel._fields:
        _positive(p, name)
    return RobotModel(*(float(p[name]) for name in RobotModel._fields))


def default_robot_model() -> RobotModel:
    """The nodes' default unicycle (declared defaults of ``diameter_m`` ... ``lookahead_m``)."""
    return robot_model(param_defaults(_ROBOT))


def _positive(p: dict, name: str) -> float:
    value = p[name]
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ParameterError(name, f"must be a positive number, got {value!r}")
    return float(value)


def resolve_node_fleet(p: dict) -> tuple[Fleet, int]:
    """The fleet of a per-robot node and this robot's index in it.

    Args:
        p: node parameters (``robot_id``, ``fleet_file`` or ``fleet_ids`` + ``fleet_namespaces``
            and, without a fleet file, ``arena`` and ``obstacles``).

    Returns:
        ``(fleet, index)``.

    Raises:
        ParameterError: missing/unreadable fleet file, inconsistent lists, unknown robot id.

    """
    if p.get("fleet_file"):
        try:
            fleet = load_fleet(p["fleet_file"])
        except (OSError, ValueError) as err:
            raise ParameterError("fleet_file", str(err)) from err
    else:
        ids = list(p.get("fleet_ids") or [])
        names = list(p.get("fleet_namespaces") or [])
        if not ids:
            raise ParameterError("fleet_ids", "empty: set fleet_ids + fleet_namespaces or "
                                 "fleet_file")
        if len(names) != len(ids):
            raise ParameterError("fleet_namespaces",
                                 f"has {len(names)} entries but fleet_ids has {len(ids)}")
        arena = list(p.get("arena") or [-1.6, 1.6, -1.0, 1.0])
        if len(arena) != 4 or not arena[0] < arena[1] or not arena[2] < arena[3] or not all(
                math.isfinite(v) for v in arena):
            raise ParameterError("arena", f"expected finite (x_min, x_max, y_min, y_max) with "
                                 f"min < max, got {arena}")
        flat = list(p.get("obstacles") or [])
        if len(flat) % 3:
            raise ParameterError("obstacles", f"length {len(flat)} is not a multiple of 3")
        for k in range(0, len(flat), 3):
            x, y, r = flat[k:k + 3]
            if not all(math.isfinite(v) for v in (x, y, r)) or not r > 0:
                raise ParameterError("obstacles", f"obstacle {k // 3} (x, y, r) = {(x, y, r)} "
                                     "must be finite with r > 0")
        try:
            fleet = Fleet(
                robots=tuple(RobotEntry(name=str(n), id=int(i))
                             for i, n in zip(ids, names, strict=True)),
                arena_m=(arena[1] - arena[0], arena[3] - arena[2]),
                obstacles=tuple(tuple(flat[j:j + 3]) for j in range(0, len(flat), 3)),
            )
        except ValueError as err:
            raise ParameterError("fleet_namespaces", str(err)) from err
        if abs(arena[0] + arena[1]) > 1e-9 or abs(arena[2] + arena[3]) > 1e-9:
            raise ParameterError("arena", f"must be centred on the origin, got {arena}")
    try:
        index = fleet.index_of(int(p["robot_id"]))
    except KeyError as err:
        raise ParameterError("robot_id", str(err.args[0])) from err
    return fleet, index


@dataclass(frozen=True)
class SensingConfig:
    """Neighbour sensing: budget ``k`` and radius [m]."""

    neighbours: int
    sensing_radius_m: float


def sensing_config(p: dict) -> SensingConfig:
    """Validated ``SensingConfig`` from node parameters."""
    if int(p["neighbours"]) < 0:
        raise ParameterError("neighbours", f"must be >= 0, got {p['neighbours']}")
    return SensingConfig(int(p["neighbours"]), _positive(p, "sensing_radius_m"))


@dataclass(frozen=True)
class Setup:
    """Everything ``nominal_command`` and ``filter_command`` need besides the live state.

    Attributes:
        model: robot parameters; sensing: neighbour budget and radius.
        robot: the robot model class (``robot`` parameter, looked up in ``ROBOTS``).
        world: obstacles and arena walls; cbf: barrier parameters of the control points.
        config: filter configuration (``None`` for the controller node).
        goal_gain, bias, make_way, make_way_radius_m: nominal-controller gains (see
            ``closed_loop.ControlConfig``).

    """

    model: RobotModel
    sensing: SensingConfig
    world: World
    cbf: CBFParams
    config: FilterConfig | None = None
    goal_gain: float = 1.0
    bias: float = 0.0
    make_way: float = 0.0
    make_way_radius_m: float = 0.05
    robot: type = ROBOTS.get(defaults.ROBOT)


def pipeline_setup(p: dict, fleet: Fleet) -> Setup:
    """Validated set-up from ``controller_node`` or ``safety_filter_node`` parameters.

    The barrier margins come from ``sim.layout.filter_margins``, the function
    ``closed_loop.cbf_params`` uses, for the robot family named by ``robot``.  Filter
    parameters are read when ``class_k`` is present, nominal gains when ``goal_gain`` is.

    Raises:
        ParameterError: naming the first invalid parameter.

    """
    robot = robot_family(p)
    model = robot_model(p)
    sensing = sensing_config(p)
    # The period a command is held: it sizes the margins' step part (``filter_margins``).
    dt_s = float(p.get("dt_s", defaults.DT_S))
    try:
        d = validate.safety_distance(p["safety_distance_m"], model.diameter_m)
    except (ValueError, TypeError) as err:
        raise ParameterError("safety_distance_m", str(err)) from err
    if p.get("fleet_file"):
        # The fleet file's starts and goals, against this node's own margins.
        try:
            check_fleet_layout(fleet, model, d, what=f"fleet file {p['fleet_file']}",
                               dt_s=dt_s)
        except validate.ValidationError as err:
            raise ParameterError("fleet_file", str(err)) from err
        check_robot_type(fleet, p, model)
    gamma = _positive(p, "gamma") if "gamma" in p else 1.0
    for name in ("state_timeout_s", "watchdog_rate_hz", "max_position_m", "goal_gain"):
        if name in p:
            _positive(p, name)
    config = None
    if "class_k" in p:
        try:
            config = FilterConfig(
                mode="decentralised", class_k=p["class_k"], dt_s=float(p["dt_s"]),
                relax_weight=float(p["relax_weight"]), relax_iters=int(p["relax_iters"]),
            )
        except ValueError as err:
            name = "class_k" if "class-K" in str(err) else "dt_s"
            raise ParameterError(name, str(err)) from err
        try:
            validate.neighbour_budget(sensing.neighbours, len(fleet.robots))
        except validate.ValidationError as err:
            raise ParameterError("neighbours", str(err)) from err
    gains = {}
    if "goal_gain" in p:
        for name in ("bias", "make_way", "make_way_radius_m"):
            if not math.isfinite(p[name]) or p[name] < 0:
                raise ParameterError(name, f"must be >= 0, got {p[name]!r}")
        gains = {name: float(p[name])
                 for name in ("goal_gain", "bias", "make_way", "make_way_radius_m")}
    obstacles = np.asarray(fleet.obstacles, dtype=float).reshape(-1, 3)
    world = World(obstacles, np.ones(len(obstacles), dtype=bool),
                  np.asarray(fleet.arena_bounds, dtype=float))
    m = filter_margins(robot, model, float(d), dt_s)
    cbf = CBFParams(gamma=np.array([gamma]), safety_distance=float(m.pair),
                    obstacle_margin=float(m.obstacle), wall_margin=float(m.wall),
                    step_margin=float(m.step))
    return Setup(model, sensing, world, cbf, config, **gains, robot=robot)


def control_points(poses: np.ndarray, model: RobotModel, robot=None) -> np.ndarray:
    """Control points [n, 2] [m] of base poses [n, 3] (x [m], y [m], yaw [rad]).

    ``robot``: the robot model class (default: ``core.defaults.ROBOT``).
    """
    poses = np.asarray(poses, dtype=float)
    robot = ROBOTS.get(defaults.ROBOT) if robot is None else robot
    return robot.control_point(poses[:, :2], poses[:, 2], model, np)


def neighbour_list(points: np.ndarray, index: int, sensing: SensingConfig):
    """Robot ``index``'s padded neighbour list, as ``core.graph.neighbour_graph`` builds it.

    Args:
        points: [n, 2] control points of the whole fleet [m] (non-finite: not sensed).
        index: this robot's row.
        sensing: budget and radius.

    Returns:
        ``(nbr [1, k, 2], mask [1, k], nearest)`` with ``k = min(budget, n - 1)`` and
        ``nearest`` the distance to the closest sensed neighbour [m] (inf if none).

    """
    order, mask, d = neighbour_indices(points, index, sensing)
    if order.size == 0:
        return np.zeros((1, 0, 2)), np.zeros((1, 0), dtype=bool), math.inf
    nbr = np.where(mask[:, None], points[order], points[index])
    nearest = float(d[0]) if mask[0] else math.inf
    return nbr[None], mask[None], nearest


def neighbour_indices(points: np.ndarray, index: int, sensing: SensingConfig):
    """Fleet rows [k] of robot ``index``'s neighbours, nearest first, their mask and distances."""
    n = points.shape[0]
    k = max(min(sensing.neighbours, n - 1), 0)
    dist = np.sqrt(np.sum((points - points[index]) ** 2, axis=-1))
    dist = np.where(np.isfinite(dist), dist, np.inf)
    dist[index] = np.inf
    order = np.argsort(dist, kind="stable")[:k]
    d = dist[order]
    return order, d <= sensing.sensing_radius_m, d


def nominal_command(poses: np.ndarray, index: int, goal, setup: Setup) -> np.ndarray:
    """Nominal go-to-goal (v [m/s], omega [rad/s]) of robot ``index``.

    Mirrors the nominal part of ``closed_loop.control`` for one robot: go-to-goal on the
    control point with the right-hand bias faded by the clearance to the nearest constraint
    boundary (neighbour safety disc or obstacle), plus the optional make-way push.

    Args:
        poses: [n, 3] base poses of the whole fleet (x, y, yaw) [m, m, rad].
        index: this robot's row.
        goal: (x, y) goal of the control point [m].
        setup: ``pipeline_setup`` result.

    Returns:
        [2] unicycle command.

    """
    model, cbf = setup.model, setup.cbf
    points = control_points(poses, model, setup.robot)
    nbr, mask, nearest = neighbour_list(points, index, setup.sensing)
    p = points[index:index + 1]
    u = nominal.cooperative_go_to_goal(
        p, np.asarray(goal, dtype=float)[None], nbr, mask, setup.world.obstacles,
        setup.world.obstacle_mask, cbf.safety_distance, cbf.obstacle_margin, setup.goal_gain,
        model.v_max, setup.bias, setup.make_way, setup.make_way_radius_m, xp=np,
    )
    yaw = np.asarray(poses, dtype=float)[index:index + 1, 2]
    return setup.robot.from_point_velocity(u, yaw, model, np)[0]


class FilterResult(NamedTuple):
    """One filter call: command [2] (v, omega), status code, slack, reason, info."""

    command: np.ndarray
    status: int
    slack: float
    reason: str
    info: FilterInfo


def filter_command(poses: np.ndarray, index: int, nominal_cmd, setup: Setup) -> FilterResult:
    """Safe (v [m/s], omega [rad/s]) of robot ``index`` given the fleet's poses.

    Args:
        poses: [n, 3] base poses of the whole fleet [m, m, rad] (NaN rows allowed: they fail
            closed when they are this robot's or a sensed neighbour's).
        index: this robot's row.
        nominal_cmd: nominal (v, omega).
        setup: ``pipeline_setup`` result (with a filter ``config``).

    Returns:
        ``FilterResult``; a braking status always comes with a zero command.

    """
    poses = np.asarray(poses, dtype=float)
    nominal_cmd = np.asarray(nominal_cmd, dtype=float)
    # Finite and sane (NaN fails the comparison): the fast path; otherwise the reference, which
    # fails closed.
    bound = scalar_filter.SANE_M
    if (poses.ndim == 2 and poses.shape[1] == 3 and poses.size and nominal_cmd.shape == (2,)
            and float(np.abs(poses).max()) <= bound
            and float(np.abs(nominal_cmd).max()) <= bound):
        fast = _filter_command_fast(poses.tolist(), index, nominal_cmd.tolist(), setup)
        if fast is not None:
            return fast
    return filter_command_reference(poses, index, nominal_cmd, setup)


def _filter_command_fast(poses: list, index: int, nominal_cmd: list,
                         setup: Setup) -> FilterResult | None:
    """``filter_command_reference`` for finite input, in Python floats (``scalar_filter``).

    Unicycles and single integrators; ``None`` for another robot family (no fast path).
    """
    model, cbf, family = setup.model, setup.cbf, getattr(setup.robot, "name", None)
    if family == "unicycle":
        look = model.lookahead_m
        pts = [(x + look * math.cos(t), y + look * math.sin(t)) for x, y, t in poses]
    elif family == "single_integrator":
        pts = [(x, y) for x, y, _ in poses]
    else:
        return None
    n = len(pts)
    k = max(min(setup.sensing.neighbours, n - 1), 0)
    px, py = pts[index]
    dist = [math.sqrt((qx - px) * (qx - px) + (qy - py) * (qy - py)) for qx, qy in pts]
    dist[index] = math.inf
    rows = sorted(range(n), key=dist.__getitem__)[:k]  # stable, as ``neighbour_indices``
    radius = setup.sensing.sensing_radius_m
    mask = [dist[j] <= radius for j in rows]
    gamma = float(np.asarray(cbf.gamma, dtype=float).reshape(-1)[0])
    order = [1 if index > j else -1 for j in rows]
    if family == "single_integrator":
        res = scalar_filter.filter_one(
            pts[index], nominal_cmd, [pts[j] for j in rows], mask, setup.world, cbf, gamma,
            (model.v_max, model.v_max), 0.0, model.v_max, setup.config, order,
        )
        cmd = np.zeros(2) if res.status >= FilterStatus.INFEASIBLE else np.array(res.u)
        return _fast_result(cmd, res)
    yaw = poses[index][2]
    c, s = math.cos(yaw), math.sin(yaw)
    v, w_l = nominal_cmd[0], look * nominal_cmd[1]
    u_nom = (c * v - s * w_l, s * v + c * w_l)
    # Axle rows (``Unicycle.body_rows``) for neighbours inside the pair margin less its step
    # part (the true margin).
    pair = float(cbf.safety_distance) - 2.0 * float(cbf.step_margin)
    d2 = pair * pair
    centres = pair - 2.0 * look
    cubic, dt = setup.config.class_k == "cubic", setup.config.dt_s
    ax, ay = poses[index][0], poses[index][1]
    extra = []
    for j, m in zip(rows, mask):
        qx, qy = pts[j]
        if not (m and (px - qx) * (px - qx) + (py - qy) * (py - qy) < d2):
            extra.append((0.0, 0.0, cbf_rows.INACTIVE_B, math.inf))
            continue
        dx, dy = ax - poses[j][0], ay - poses[j][1]
        h = dx * dx + dy * dy - centres * centres
        alpha = gamma * h * h * h if cubic else gamma * h
        if dt > 0 and h > 0:
            alpha = min(alpha, h / dt)
        along = 2.0 * (dx * c + dy * s)
        extra.append((-(along * c), -(along * s), 0.5 * alpha, h))
    res = scalar_filter.filter_one(
        pts[index], u_nom, [pts[j] for j in rows], mask, setup.world, cbf, gamma,
        (model.v_max, look * model.omega_max), yaw, math.inf, setup.config, order, extra,
    )
    if res.status >= FilterStatus.INFEASIBLE:
        cmd = np.zeros(2)
    else:
        ux, uy = res.u
        cmd = np.array([c * ux + s * uy, (-s * ux + c * uy) / look])
    return _fast_result(cmd, res)


def _fast_result(cmd: np.ndarray, res: scalar_filter.ScalarResult) -> FilterResult:
    status = res.status
    info = FilterInfo(np.array([res.barrier]).reshape(1, -1), np.array([res.slack]),
                      np.array([status], dtype=np.int32), np.array([res.intervened]))
    return FilterResult(cmd, status, res.slack, STATUS_REASONS[FilterStatus(status)], info)


def filter_command_reference(poses: np.ndarray, index: int, nominal_cmd,
                             setup: Setup) -> FilterResult:
    """``filter_command`` through ``filter_robots`` with NumPy arrays (n = 1): the reference.

    Same arguments and result as ``filter_command``; about a millisecond per call.
    """
    # Garbage input is an expected case here (it fails closed below): no warnings for it.
    with np.errstate(invalid="ignore", over="ignore"):
        return _filter_command(np.asarray(poses, dtype=float), index, nominal_cmd, setup)


def _filter_command(poses: np.ndarray, index: int, nominal_cmd, setup: Setup) -> FilterResult:
    model = setup.model
    points = control_points(poses, model, setup.robot)
    nbr, mask, _ = neighbour_list(points, index, setup.sensing)
    yaw = poses[index:index + 1, 2]
    robot = setup.robot
    u_nom = robot.to_point_velocity(np.asarray(nominal_cmd, dtype=float)[None], yaw, model, np)
    limits = robot.limits(np.where(np.isfinite(yaw), yaw, 0.0), model, np)
    # Same rows as the simulation: coincident neighbours part by fleet order, and axle rows
    # for neighbours inside the pair margin (``Unicycle.body_rows``).
    rows, _, _ = neighbour_indices(points, index, setup.sensing)
    order = np.where(index > rows, 1, -1)[None].astype(np.int32)
    safe_poses = np.where(np.isfinite(poses), poses, 0.0)
    # Axle rows exist because the body sits off the control point (margin > 0).
    extra = (_axle_rows(safe_poses, points, index, rows, mask, setup)
             if robot.point_margin(model) > 0 else None)
    u, info = filter_robots(points[index:index + 1], u_nom, nbr, mask, setup.world, setup.cbf,
                            limits, setup.config, np, order, extra)
    status = int(info.status[0])
    if not np.all(np.isfinite(poses)):
        # A garbage neighbour pose would otherwise drop out of the neighbour list silently.
        status = int(FilterStatus.INVALID_INPUT)
    slack = float(info.slack[0])
    if status >= FilterStatus.INFEASIBLE or not np.all(np.isfinite(u)) or not np.isfinite(
            yaw[0]):
        cmd = np.zeros(2)
    else:
        cmd = robot.from_point_velocity(u, yaw, model, np)[0]
    return FilterResult(cmd, status, slack, STATUS_REASONS[FilterStatus(status)], info)


def _axle_rows(poses, points, index, rows, mask, setup: Setup):
    """``Unicycle.body_rows`` of robot ``index`` alone: [1, k] rows (absent unless inside)."""
    pts = np.where(np.isfinite(points), points, 0.0)
    diff = pts[index] - pts[rows]
    pair = float(setup.cbf.safety_distance) - 2.0 * float(setup.cbf.step_margin)
    inside = mask[0] & (np.sum(diff * diff, -1) < pair**2)
    yaw = poses[index, 2]
    heading = np.array([[math.cos(yaw), math.sin(yaw)]])
    centres = pair - 2.0 * setup.model.lookahead_m
    return cbf_rows.heading_rows(
        poses[index:index + 1, :2], heading, poses[rows, :2][None], inside[None], centres,
        np.asarray(setup.cbf.gamma, dtype=float).reshape(-1)[:1], setup.config.class_k,
        setup.config.dt_s, 0.5, np,
    )


#: Human-readable reason of each filter status (published in the diagnostics).
STATUS_REASONS = {
    FilterStatus.OK: "ok",
    FilterStatus.RELAXED: "relaxed: barrier rows softened with slack",
    FilterStatus.INFEASIBLE: "infeasible: solver failed, braking",
    FilterStatus.INVALID_INPUT: "invalid input: non-finite state or command, braking",
}


def odometry_problem(pose, max_position_m: float) -> str | None:
    """Why a base pose (x, y, yaw) is garbage, or ``None`` if it is usable.

    Non-finite values (a NaN yaw also marks a bad quaternion, see ``conversions``) and positions
    farther than ``max_position_m`` from the origin are rejected.
    """
    x, y, yaw = (float(v) for v in pose)
    if not (math.isfinite(x) and math.isfinite(y) and math.isfinite(yaw)):
        return "non-finite odometry"
    if math.hypot(x, y) > max_position_m:
        return f"absurd odometry: position {math.hypot(x, y):.3g} m from the origin"
    return None
