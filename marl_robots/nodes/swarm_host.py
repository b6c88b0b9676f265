"""``swarm_host``: every simulated robot's controller and safety filter in one process.

Software in the loop on a laptop: instead of two Python processes per robot (each with its own
interpreter, DDS participant and share of a few cores), one process hosts the per-robot nodes
as node instances of the same classes (``ControllerNode``, ``SafetyFilterNode``) with the same
names, namespaces, parameters and topics, spun by one executor.  Which nodes is decided by the
launch expansion: the host re-runs ``expansion.hosted_specs`` with its parameters (the
arguments ``expand_swarm`` got), and hands each node its ``--ros-args`` exactly as the
multi-process layout puts them on a command line (``expansion.ros_arguments``), so that rcl
parses the parameter files, overrides and remappings of each node separately
(``use_global_arguments=False``: the host's own arguments do not leak into its nodes).

With ``fleet_state:=pose_array`` (the default here) the process subscribes ``/fleet/poses``
once (``fleet_state.FleetStateHub``) and every hosted node runs its callback on that one
message: same checks, same commands, one deserialisation per step instead of 2N.

Hardware fleets do not use this: each robot's nodes run on its own computer.  Shutdown is
``common.run``'s: SIGINT/SIGTERM stops the executor between callbacks, every node sends its
final zero command, then the nodes are destroyed (bounded).  The executor is rclpy's
``EventsExecutor`` where available (Kilted; see ``common.events_executor``), which keeps the
per-step cost of 2N hosted nodes low, else ``SingleThreadedExecutor``.
"""

from __future__ import annotations

import sys

from rclpy.node import Node

from marl_robots.nodes import policy_node, safety_filter_node
from marl_robots.nodes.common import declare_parameters, events_executor, run
from marl_robots.nodes.controller_node import ControllerNode
from marl_robots.nodes.expansion import hosted_specs, ros_arguments
from marl_robots.nodes.fleet_state import FleetStateHub, fleet_state_input
from marl_robots.nodes.onboard import ParameterError, ParamSpec, check_params_files

#: Parameters of ``swarm_host`` (``expansion.HOST_PARAMETERS``; ``use_sim_time`` is rclpy's and
#: is handed to the hosted nodes).
HOST_PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("robots", "int", 8, "robot count (ignored when fleet_file is set)"),
    ParamSpec("scenario", "string", "antipodal", "navigation scenario (without fleet_file)"),
    ParamSpec("fleet_file", "string", "", "fleet file (path or name under hardware/)"),
    ParamSpec("seed", "int", 0, "PRNG seed of random scenarios"),
    ParamSpec("fleet_state", "string", "pose_array",
              "fleet state input of the hosted nodes: pose_array (/fleet/poses, taken once "
              "for all of them) or odometry (N odom subscriptions per node)"),
    ParamSpec("controller_overrides", "string", "{}",
              "JSON object of extra controller_node parameters"),
    ParamSpec("filter_overrides", "string", "{}",
              "JSON object of extra safety_filter_node parameters"),
    ParamSpec("policy", "string", "", "policy bundle of the hosted policy nodes ('' for none)"),
    ParamSpec("namespaces", "string", "",
              "comma-separated robot namespaces to host ('' for every robot of the fleet): "
              "one robot's policy and filter in one process, as on its onboard computer"),
    ParamSpec("policy_order", "string", policy_node.POLICY_FIRST,
              "a hosted policy linked to its robot's filter: policy_first (the filter filters "
              "the command of the same fleet state, as in the JAX simulation) or filter_first "
              "(the filter answers at once with the previous state's command, then the policy "
              "runs: lowest latency)"),
)

#: Node factory of each hosted executable: (fleet hub, rclpy node kwargs) -> node.
FACTORIES = {
    "controller_node": ControllerNode,
    "safety_filter_node": safety_filter_node.make_node,
    "policy_node": policy_node.make_node,
}


def make_nodes() -> list:
    """The host node, then every hosted node (controllers and filters, fleet order).

    Raises:
        ParameterError: an invalid host parameter, or a hosted node's parameter file.

    """
    host = Node("swarm_host")
    p = declare_parameters(host, HOST_PARAMS)
    p["use_sim_time"] = bool(host.get_parameter("use_sim_time").value)
    mode = fleet_state_input(p)
    try:
        specs = hosted_specs(p)
    except (OSError, ValueError) as err:
        name = next((k for k in ("fleet_file", "scenario", "controller_overrides",
                                 "filter_overrides", "bundle") if k in str(err)), "robots")
        name = "policy" if name == "bundle" else name
        raise ParameterError(name, str(err)) from err
    robots = len({spec.namespace for spec in specs})
    specs = _select(specs, p["namespaces"])
    hub = FleetStateHub(host, robots) if mode == "pose_array" else None
    nodes = [host]
    checked = set()
    by_robot: dict[str, dict] = {}
    for spec in specs:
        cli_args = ros_arguments(spec)
        files = [f for f in spec.param_files if f not in checked]
        check_params_files(["--ros-args", *(a for f in files for a in ("--params-file", f))])
        checked.update(files)
        node = FACTORIES[spec.executable](hub, cli_args=cli_args, use_global_arguments=False)
        nodes.append(node)
        by_robot.setdefault(spec.namespace, {})[spec.executable] = node
    linked = controllers = 0
    for hosted in by_robot.values():
        # The controller and the policy precede their filter in the specs, so on the shared
        # fleet state they run first and the filter filters this state's command and gain
        # (see ControllerNode.link, PolicyNode.link).
        if "safety_filter_node" not in hosted:
            continue
        if "controller_node" in hosted:
            hosted["controller_node"].link(hosted["safety_filter_node"])
            controllers += 1
        if "policy_node" in hosted:
            hosted["policy_node"].link(hosted["safety_filter_node"], p["policy_order"])
            linked += 1
    host.get_logger().info(
        f"hosting {len(nodes) - 1} nodes of {len(by_robot)} of {robots} robots in one process "
        f"(fleet state: {mode}; {controllers} controllers"
        + (f" and {linked} policies ({p['policy_order']})" if linked else "")
        + " linked to their filters)")
    return nodes


def _select(specs: list, namespaces: str) -> list:
    """The specs of the robots named in ``namespaces`` (comma-separated; '' for all).

    Raises:
        ParameterError: a name that is not a fleet robot's namespace.
    """
    wanted = [n.strip().strip("/") for n in namespaces.split(",") if n.strip()]
    if not wanted:
        return specs
    known = {spec.namespace.strip("/") for spec in specs}
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise ParameterError("namespaces", f"no fleet robot {unknown[0]!r}; the fleet has "
                             f"{', '.join(sorted(known))}")
    return [spec for spec in specs if spec.namespace.strip("/") in wanted]


def main(args=None) -> int:
    """Entry point of ``swarm_host``: 0 on SIGINT, 1 when a node's parameters are invalid."""
    return run(make_nodes, args, HOST_PARAMS, __doc__, executor_factory=events_executor)


if __name__ == "__main__":
    sys.exit(main())
