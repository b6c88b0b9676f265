"""Per-robot expansion of a swarm launch: which nodes, namespaces, parameters, remappings.

A pure function (no ``rclpy``, no ``launch``): ``launch/sim_swarm.launch.py`` turns its result
into ``launch_ros`` actions, and the tests turn it into command lines with ``ros_arguments``,
so the launch file and the multi-process tests start exactly the same graph.

Graph per robot ``<ns>`` (from the fleet file, else ``robot_<id>``)::

    /<ns>/odom --> controller --> /<ns>/cmd_vel_nominal --> safety_filter --> /<ns>/cmd_vel
    /<ns>/goal --> controller          /<other>/odom --> controller, safety_filter

plus one ``sim`` node at the root namespace for ``backend=sim``, which also publishes every
pose in one ``/fleet/poses`` PoseArray (the ``fleet_state:=pose_array`` input).

Layouts: one process per node (``one_process=False``; what a hardware fleet runs, one robot per
onboard computer), or, for the simulator, one ``swarm_host`` process that hosts every robot's
controller and filter as node instances (``one_process=True``).  The host re-runs this
expansion with the arguments it is given (``hosted_specs``), so both layouts start the same
nodes with the same names, namespaces, parameters and topics.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from marl_robots.core.paths import content_path
from marl_robots.nodes.fleet import Fleet, make_fleet

PACKAGE = "marl_robots"
BACKENDS = ("sim", "hardware")
#: Parameter files (under ``controllers/``) of each executable.
PARAM_FILES = {
    "sim_node": "sim_node.yaml",
    "controller_node": "controller_node.yaml",
    "safety_filter_node": "safety_filter_node.yaml",
}


@dataclass(frozen=True)
class NodeSpec:
    """One node to start.

    Attributes:
        executable: console script (``sim_node``, ``controller_node``, ``safety_filter_node``).
        name: node name.
        namespace: absolute namespace (``/`` for the root).
        param_files: parameter YAML files, applied in order.
        parameters: overrides applied after the files (name -> value).
        remappings: (from, to) topic remappings.
        package: ROS package of the executable.

    """

    executable: str
    name: str
    namespace: str
    param_files: tuple[str, ...] = ()
    parameters: dict = field(default_factory=dict)
    remappings: tuple[tuple[str, str], ...] = ()
    package: str = PACKAGE

    @property
    def module(self) -> str:
        """Python module of the executable (``python -m <module>`` starts it)."""
        return f"{PACKAGE}.nodes.{self.executable}"

    @property
    def fqn(self) -> str:
        """Fully qualified node name."""
        return f"{self.namespace.rstrip('/')}/{self.name}"


class HardwareBackendError(NotImplementedError):
    """``backend=hardware`` requested before the hardware drivers are wired."""


class LaunchArgumentError(ValueError):
    """A launch argument that cannot start a swarm; the message is one line naming it."""


#: Launch arguments of ``launch/sim_swarm.launch.py``: (name, default, description).  The launch
#: file declares exactly these and hands their values to ``launch_specs``.
LAUNCH_ARGUMENTS = (
    ("robots", "8", "number of robots (ignored when fleet_file is set)"),
    ("scenario", "antipodal",
     "navigation scenario for the simulated fleet: antipodal, random, corridor, crossing"),
    ("fleet_file", "",
     "fleet file (path, or name under share/marl_robots/hardware) with robot names, ids, "
     "initial poses and goals; overrides robots and scenario"),
    ("backend", "sim", "sim: software-in-the-loop simulator; hardware: real robots (not wired "
     "yet, fails with a message)"),
    ("rviz", "false", "start RViz with the swarm markers (true/false)"),
    ("use_sim_time", "true", "per-robot nodes follow /clock of the simulator (true/false)"),
    ("rate_hz", "0.0", "simulation steps per wall-clock second (0: real time)"),
    ("seed", "0", "PRNG seed of random scenarios"),
    ("one_process", "auto", "host every robot's controller and safety filter in one process "
     "(swarm_host): true/false; auto = true for backend:=sim (hardware: one process per node)"),
    ("fleet_state", "auto", "fleet state input of the per-robot nodes: odometry (N odom "
     "topics) or pose_array (/fleet/poses); auto = pose_array with one_process, else odometry"),
    ("policy", "", "policy bundle (folder from marl-robots export, or a shipped policy's name) "
     "run by a per-robot policy_node: a gnn bundle replaces controller_node, a cbf-tuning "
     "bundle sets the filter's class-K gain; '' = go-to-goal with the fixed gain"),
)
#: Values of the ``fleet_state`` argument (``nodes.fleet_state.FLEET_STATE_INPUTS``).
FLEET_STATE_INPUTS = ("odometry", "pose_array")
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


def _arg_error(name: str, text: str, why: str) -> LaunchArgumentError:
    return LaunchArgumentError(f"invalid launch argument {name}:={text!r}: {why}")


def parse_bool(name: str, text: str) -> bool:
    """A boolean launch argument (true/false, 1/0, yes/no, on/off; any case)."""
    value = str(text).strip().lower()
    if value in _TRUE or value in _FALSE:
        return value in _TRUE
    raise _arg_error(name, text, "expected true or false")


def parse_int(name: str, text: str, minimum: int | None = None) -> int:
    """An integer launch argument, at least ``minimum``."""
    try:
        value = int(str(text).strip())
    except ValueError:
        raise _arg_error(name, text, "expected an integer") from None
    if minimum is not None and value < minimum:
        raise _arg_error(name, text, f"expected an integer >= {minimum}")
    return value


def parse_rate(name: str, text: str) -> float:
    """A finite, non-negative rate launch argument [Hz]."""
    try:
        value = float(str(text).strip())
    except ValueError:
        raise _arg_error(name, text, "expected a number") from None
    if not math.isfinite(value) or value < 0:
        raise _arg_error(name, text, "expected a finite number >= 0")
    return value


def launch_specs(values: Mapping[str, str]) -> list[NodeSpec]:
    """The decision of a swarm launch: launch-argument strings -> the nodes to start.

    Every check happens here, before any process starts, so that the launch file only turns
    the result into actions (and a bad argument fails the launch with this one line).

    Args:
        values: ``{name: text}`` of ``LAUNCH_ARGUMENTS`` (missing names take the default).

    Returns:
        ``expand_swarm``'s node list.

    Raises:
        LaunchArgumentError: one line naming the argument, its value and what is expected.

    """
    known = {name: default for name, default, _ in LAUNCH_ARGUMENTS}
    for name in values:
        if name not in known:
            from marl_robots.core.validate import unknown_name  # noqa: PLC0415

            raise LaunchArgumentError(unknown_name("launch argument", name, known))
    v = {**known, **{k: str(t) for k, t in values.items()}}
    backend = v["backend"].strip()
    if backend not in BACKENDS:
        raise _arg_error("backend", v["backend"], f"known backends: {', '.join(BACKENDS)}")
    if backend == "hardware":
        raise _arg_error("backend", backend, "the ground-robot drivers that publish "
                         "/<ns>/odom and consume /<ns>/cmd_vel are not wired yet; use "
                         "backend:=sim")
    robots = parse_int("robots", v["robots"], minimum=1)
    seed = parse_int("seed", v["seed"])
    rate_hz = parse_rate("rate_hz", v["rate_hz"])
    use_sim_time = parse_bool("use_sim_time", v["use_sim_time"])
    parse_bool("rviz", v["rviz"])
    one_process = (backend == "sim" if v["one_process"].strip().lower() == "auto"
                   else parse_bool("one_process", v["one_process"]))
    fleet_state = v["fleet_state"].strip()
    if fleet_state not in ("auto", *FLEET_STATE_INPUTS):
        raise _arg_error("fleet_state", v["fleet_state"],
                         f"expected auto, {' or '.join(FLEET_STATE_INPUTS)}")
    fleet_file = v["fleet_file"].strip()
    scenario = v["scenario"].strip()
    policy = v["policy"].strip()
    if policy:
        try:
            policy_kind(policy)
        except ValueError as err:
            raise _arg_error("policy", policy, str(err)) from None
    if fleet_file:
        from marl_robots.nodes.fleet import load_fleet  # noqa: PLC0415

        try:
            load_fleet(fleet_file)
        except (OSError, ValueError) as err:
            raise _arg_error("fleet_file", fleet_file, str(err)) from None
    else:
        from marl_robots.sim.scenarios import SCENARIOS  # noqa: PLC0415 - JAX

        if scenario not in SCENARIOS:
            from marl_robots.core.validate import unknown_name  # noqa: PLC0415

            raise _arg_error("scenario", scenario, unknown_name("scenario", scenario,
                                                                SCENARIOS.names()))
    try:
        return expand_swarm(robots=robots, scenario=scenario, fleet_file=fleet_file,
                            backend=backend, use_sim_time=use_sim_time, seed=seed,
                            sim_overrides={"rate_hz": rate_hz}, one_process=one_process,
                            fleet_state=None if fleet_state == "auto" else fleet_state,
                            policy=policy)
    except (OSError, ValueError) as err:
        # E.g. a scenario that refuses a team this large (the message names the largest).
        name, text = ("fleet_file", fleet_file) if fleet_file else ("robots", str(robots))
        raise _arg_error(name, text, str(err)) from None


def param_file(executable: str) -> str:
    """Path of an executable's parameter file (resolved through ``core.paths``)."""
    return str(content_path("controllers", PARAM_FILES[executable]))


#: Parameters of ``swarm_host``: the arguments of ``expand_swarm`` it re-runs (JSON strings for
#: the override dicts).
HOST_PARAMETERS = ("robots", "scenario", "fleet_file", "seed", "use_sim_time", "fleet_state",
                   "controller_overrides", "filter_overrides", "policy")


def policy_kind(bundle: str) -> str:
    """``gnn`` or ``cbf-tuning``: the kind of the bundle a ``policy`` argument names.

    Reads only the manifest (no weights, no JAX); ``policy_node`` checks the rest.

    Raises:
        ValueError: no such bundle, or an invalid manifest (one line).
    """
    from marl_robots.nodes.onboard import ParameterError  # noqa: PLC0415
    from marl_robots.nodes.policy_onboard import resolve_bundle  # noqa: PLC0415
    from marl_robots.policies.bundle import BundleError, load_manifest  # noqa: PLC0415

    try:
        return load_manifest(resolve_bundle(bundle))["policy"]
    except (ParameterError, BundleError) as err:
        raise ValueError(str(err).removeprefix("invalid parameter 'bundle': ")) from None


def fleet_parameters(fleet: Fleet, robot_id: int) -> dict:
    """Parameters that tell a per-robot node who it is and who its fleet is."""
    x0, x1, y0, y1 = fleet.arena_bounds
    params = {
        "robot_id": int(robot_id),
        "fleet_ids": [int(i) for i in fleet.ids],
        "fleet_namespaces": list(fleet.names),
        "arena": [float(x0), float(x1), float(y0), float(y1)],
    }
    if fleet.obstacles:
        # Only when non-empty: an empty list has no element type for ROS to infer.
        params["obstacles"] = [float(v) for o in fleet.obstacles for v in o]
    return params


def expand_swarm(
    robots: int = 8,
    scenario: str = "antipodal",
    fleet_file: str = "",
    backend: str = "sim",
    use_sim_time: bool = True,
    seed: int = 0,
    sim_overrides: dict | None = None,
    controller_overrides: dict | None = None,
    filter_overrides: dict | None = None,
    one_process: bool = False,
    fleet_state: str | None = None,
    policy: str = "",
) -> list[NodeSpec]:
    """The nodes of a swarm: ``sim`` (for ``backend=sim``) + per robot controller and filter.

    Args:
        robots: robot count (ignored with a fleet file).
        scenario: navigation scenario (ignored with a fleet file).
        fleet_file: fleet file path or name under ``hardware/`` ('' for none).
        backend: ``sim`` or ``hardware``.
        use_sim_time: per-robot nodes follow ``/clock`` (sim backend only).
        seed: PRNG seed of random scenarios.
        sim_overrides: extra ``sim_node`` parameters.
        controller_overrides: extra ``controller_node`` parameters.
        filter_overrides: extra ``safety_filter_node`` parameters.
        one_process: instead of two processes per robot, one ``swarm_host`` node that hosts
            them all (``backend=sim`` only).
        fleet_state: the per-robot nodes' ``fleet_state`` input (``odometry`` or
            ``pose_array``); ``None``: ``pose_array`` with ``one_process``, else ``odometry``.
        policy: a policy bundle for a per-robot ``policy_node`` ('' for none): a ``gnn`` bundle
            replaces ``controller_node``, a ``cbf-tuning`` bundle joins it (the filter's gain).

    Returns:
        The ``NodeSpec`` list, simulator first: then per robot controller and filter, or
        (``one_process``) the one ``swarm_host`` whose ``hosted_specs`` are those.

    Raises:
        ValueError: unknown backend or fleet state input, invalid fleet/robot count,
            ``one_process`` with ``backend=hardware``.
        HardwareBackendError: ``backend=hardware`` (not wired yet).
        FileNotFoundError: missing fleet file.

    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; known backends: {', '.join(BACKENDS)}")
    if one_process and backend != "sim":
        raise ValueError("one_process is for backend=sim: on hardware every robot runs its own "
                         "processes")
    if backend == "hardware":
        raise HardwareBackendError(
            "backend:=hardware is not wired yet: the ground-robot drivers that publish "
            "/<ns>/odom and consume /<ns>/cmd_vel arrive in a later issue; use backend:=sim"
        )
    if fleet_state is None:
        fleet_state = "pose_array" if one_process else "odometry"
    if fleet_state not in FLEET_STATE_INPUTS:
        raise ValueError(f"unknown fleet state input {fleet_state!r}; known: "
                         f"{', '.join(FLEET_STATE_INPUTS)}")
    fleet = make_fleet(robots, scenario, fleet_file, seed)
    sim_time = bool(use_sim_time) and backend == "sim"
    specs = [
        NodeSpec(
            executable="sim_node",
            name="sim",
            namespace="/",
            param_files=(param_file("sim_node"),),
            parameters={
                "robots": int(robots),
                "scenario": str(scenario),
                "fleet_file": str(fleet_file),
                "seed": int(seed),
                **(sim_overrides or {}),
            },
        )
    ]
    if one_process:
        specs.append(NodeSpec(
            executable="swarm_host", name="swarm_host", namespace="/",
            parameters={
                "robots": int(robots),
                "scenario": str(scenario),
                "fleet_file": str(fleet_file),
                "seed": int(seed),
                "use_sim_time": sim_time,
                "fleet_state": fleet_state,
                "controller_overrides": json.dumps(controller_overrides or {}),
                "filter_overrides": json.dumps(filter_overrides or {}),
                "policy": str(policy),
            },
        ))
        return specs
    kind = policy_kind(policy) if policy else None
    for robot in fleet.robots:
        common = {**fleet_parameters(fleet, robot.id), "use_sim_time": sim_time,
                  "fleet_state": fleet_state}
        ns = f"/{robot.name}"
        if kind != "gnn":
            specs.append(NodeSpec(
                executable="controller_node", name="controller", namespace=ns,
                param_files=(param_file("controller_node"),),
                parameters={**common, **(controller_overrides or {})},
            ))
        if kind is not None:
            specs.append(NodeSpec(executable="policy_node", name="policy", namespace=ns,
                                  parameters={**common, "bundle": str(policy)}))
        specs.append(NodeSpec(
            executable="safety_filter_node", name="safety_filter", namespace=ns,
            param_files=(param_file("safety_filter_node"),),
            parameters={**common, **(filter_overrides or {})},
        ))
    return specs


def _param_value(value) -> str:
    """A ``-p name:=value`` value: JSON is valid YAML, and keeps 1.0 a double."""
    if isinstance(value, float):
        return repr(value)
    return json.dumps(value)


def ros_arguments(spec: NodeSpec) -> list[str]:
    """Command-line ``--ros-args`` that start ``spec`` like the launch file does."""
    args = ["--ros-args", "-r", f"__node:={spec.name}", "-r", f"__ns:={spec.namespace}"]
    for path in spec.param_files:
        args += ["--params-file", path]
    for name, value in spec.parameters.items():
        args += ["-p", f"{name}:={_param_value(value)}"]
    for src, dst in spec.remappings:
        args += ["-r", f"{src}:={dst}"]
    return args


def hosted_specs(host: Mapping) -> list[NodeSpec]:
    """The per-robot nodes a ``swarm_host`` with parameters ``host`` hosts.

    Args:
        host: ``{name: value}`` of ``HOST_PARAMETERS`` (the host spec's parameters, or the
            values its node read).

    Returns:
        ``expand_swarm``'s controller and filter specs (the simulator left out).

    Raises:
        ValueError: an override that is not a JSON object, or what ``expand_swarm`` raises.

    """
    overrides = {}
    for name in ("controller_overrides", "filter_overrides"):
        try:
            value = json.loads(host.get(name) or "{}")
        except json.JSONDecodeError as err:
            raise ValueError(f"{name} is not JSON: {err}") from None
        if not isinstance(value, dict):
            raise ValueError(f"{name} must be a JSON object, got {value!r}")
        overrides[name] = value
    specs = expand_swarm(robots=int(host["robots"]), scenario=str(host["scenario"]),
                         fleet_file=str(host["fleet_file"]), backend="sim",
                         use_sim_time=bool(host["use_sim_time"]), seed=int(host["seed"]),
                         fleet_state=str(host["fleet_state"]),
                         policy=str(host.get("policy") or ""), **overrides)
    return specs[1:]
