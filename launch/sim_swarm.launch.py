"""Launch a ground-robot swarm: simulator (or hardware, later) + per-robot control nodes.

    ros2 launch marl_robots sim_swarm.launch.py robots:=8 scenario:=antipodal rviz:=false
    ros2 launch marl_robots sim_swarm.launch.py fleet_file:=antipodal_8.yaml

Per robot ``<ns>`` it starts ``controller_node`` (``/<ns>/controller``) and the lifecycle
``safety_filter_node`` (``/<ns>/safety_filter``, autostarts); with ``backend:=sim`` also one
``sim_node`` (``/sim``) that publishes ``/clock``.  With ``one_process:=true`` (the default for
``backend:=sim``) those per-robot nodes run as node instances inside one ``swarm_host``
process, same names, namespaces and topics, reading the fleet state from ``/fleet/poses``; on
hardware every robot keeps its own processes.  Which nodes, namespaces and parameters is
decided by the pure function ``marl_robots.nodes.expansion.launch_specs``, which the tests call
too.  Uses only launch / launch_ros features available since ROS 2 Humble.
"""

from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription
from marl_robots.core.paths import content_path
from marl_robots.nodes.expansion import LAUNCH_ARGUMENTS, launch_specs


def _expand(context, *args, **kwargs):
    """Turn the launch arguments into node actions through the pure decision function.

    A bad argument raises ``LaunchArgumentError`` here: the launch service reports its one
    line ("Caught exception in launch ...: invalid launch argument robots:='abc': ...") and
    ``ros2 launch`` exits non-zero before any process starts (Humble through Kilted).
    """
    values = {name: LaunchConfiguration(name).perform(context)
              for name, _, _ in LAUNCH_ARGUMENTS}
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
        for spec in launch_specs(values)
    ]


def generate_launch_description() -> LaunchDescription:
    """Declared arguments, the expanded swarm and (optionally) RViz."""
    rviz_config = str(content_path("launch", "swarm.rviz"))
    return LaunchDescription([
        *(DeclareLaunchArgument(name, default_value=default, description=doc)
          for name, default, doc in LAUNCH_ARGUMENTS),
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
