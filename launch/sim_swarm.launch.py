"""Launch a ground-robot swarm: simulator (or hardware, later) + per-robot control nodes.

    ros2 launch marl_robots sim_swarm.launch.py robots:=8 scenario:=antipodal rviz:=false
    ros2 launch marl_robots sim_swarm.launch.py fleet_file:=antipodal_8.yaml

Per robot ``<ns>`` it starts ``controller_node`` (``/<ns>/controller``) and the lifecycle
``safety_filter_node`` (``/<ns>/safety_filter``, autostarts); with ``backend:=sim`` also one
``sim_node`` (``/sim``) that publishes ``/clock``.  Which nodes, namespaces and parameters is
decided by the pure function ``marl_robots.nodes.expansion.expand_swarm``, which the tests call
too.  Uses only launch / launch_ros features available since ROS 2 Humble.
"""

from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction, Shutdown
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription
from marl_robots.core.paths import content_path
from marl_robots.nodes.expansion import HardwareBackendError, expand_swarm

ARGUMENTS = (
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
)


def _truthy(text: str) -> bool:
    return text.strip().lower() in ("1", "true", "yes", "on")


def _expand(context, *args, **kwargs):
    """Turn the launch arguments into node actions through the pure expansion."""
    value = {name: LaunchConfiguration(name).perform(context) for name, _, _ in ARGUMENTS}
    try:
        specs = expand_swarm(
            robots=int(value["robots"]),
            scenario=value["scenario"],
            fleet_file=value["fleet_file"],
            backend=value["backend"],
            use_sim_time=_truthy(value["use_sim_time"]),
            seed=int(value["seed"]),
            sim_overrides={"rate_hz": float(value["rate_hz"])},
        )
    except (HardwareBackendError, ValueError, FileNotFoundError) as err:
        return [LogInfo(msg=f"[marl_robots] cannot launch: {err}"),
                Shutdown(reason=str(err))]
    return [
        Node(
            package=spec.package,
            executable=spec.executable,
            name=spec.name,
            namespace=spec.namespace,
            parameters=[*spec.param_files, spec.parameters],
            remappings=list(spec.remappings),
            output="screen",
        )
        for spec in specs
    ]


def generate_launch_description() -> LaunchDescription:
    """Declared arguments, the expanded swarm and (optionally) RViz."""
    rviz_config = str(content_path("launch", "swarm.rviz"))
    return LaunchDescription([
        *(DeclareLaunchArgument(name, default_value=default, description=doc)
          for name, default, doc in ARGUMENTS),
        OpaqueFunction(function=_expand),
        Node(
            package="rviz2",
            executable="rviz2",
            name="rviz",
            arguments=["-d", rviz_config],
            parameters=[{"use_sim_time": LaunchConfiguration("use_sim_time")}],
            condition=IfCondition(LaunchConfiguration("rviz")),
            output="log",
        ),
    ])
