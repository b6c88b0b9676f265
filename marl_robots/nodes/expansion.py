"""Per-robot expansion of a swarm launch: which nodes, namespaces, parameters, remappings.

A pure function (no ``rclpy``, no ``launch``): ``launch/sim_swarm.launch.py`` turns its result
into ``launch_ros`` actions, and the tests turn it into command lines with ``ros_arguments``,
so the launch file and the multi-process tests start exactly the same graph.

Graph per robot ``<ns>`` (from the fleet file, else ``robot_<id>``)::

    /<ns>/odom --> controller --> /<ns>/cmd_vel_nominal --> safety_filter --> /<ns>/cmd_vel
    /<ns>/goal --> controller          /<other>/odom --> controller, safety_filter

plus one ``sim`` node at the root namespace for ``backend=sim``.
"""

from __future__ import annotations

import json
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


def param_file(executable: str) -> str:
    """Path of an executable's parameter file (resolved through ``core.paths``)."""
    return str(content_path("controllers", PARAM_FILES[executable]))


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

    Returns:
        The ``NodeSpec`` list, simulator first.

    Raises:
        ValueError: unknown backend or invalid fleet/robot count.
        HardwareBackendError: ``backend=hardware`` (not wired yet).
        FileNotFoundError: missing fleet file.

    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; known backends: {', '.join(BACKENDS)}")
    if backend == "hardware":
        raise HardwareBackendError(
            "backend:=hardware is not wired yet: the ground-robot drivers that publish "
            "/<ns>/odom and consume /<ns>/cmd_vel arrive in a later issue; use backend:=sim"
        )
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
    for robot in fleet.robots:
        common = {**fleet_parameters(fleet, robot.id), "use_sim_time": sim_time}
        ns = f"/{robot.name}"
        specs.append(NodeSpec(
            executable="controller_node", name="controller", namespace=ns,
            param_files=(param_file("controller_node"),),
            parameters={**common, **(controller_overrides or {})},
        ))
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
