"""launch_testing of ``launch/sim_swarm.launch.py`` where ``launch`` (ROS 2) is importable.

Without a ROS 2 distribution ``import launch`` finds either nothing, the unrelated 2017
``launch`` package from PyPI, or this repository's own ``launch/`` folder as an empty
namespace package; the test is then SKIPPED with the reason.  The per-robot expansion the
launch file delegates to is tested everywhere (test_expansion.py, test_stack.py).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAUNCH_FILE = ROOT / "launch" / "sim_swarm.launch.py"


def _ros_launch_reason() -> str | None:
    """None if ROS 2 launch + launch_ros + rclpy are importable, else why not."""
    try:
        import launch
    except ImportError as err:
        return f"ROS 2 'launch' is not installed ({err})"
    if not hasattr(launch, "LaunchDescription"):
        found = getattr(launch, "__file__", None) or "a namespace package"
        return f"'import launch' is not ROS 2 launch (found {found}); needs a ROS 2 distribution"
    for module in ("launch_ros", "rclpy"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed"
    return None


REASON = _ros_launch_reason()
pytestmark = [
    pytest.mark.ros,
    pytest.mark.skipif(REASON is not None, reason=REASON or ""),
]


def _load_launch_module():
    spec = importlib.util.spec_from_file_location("sim_swarm_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_launch_description_declares_documented_arguments():
    from launch.actions import DeclareLaunchArgument

    ld = _load_launch_module().generate_launch_description()
    args = {a.name: a for a in ld.entities if isinstance(a, DeclareLaunchArgument)}
    assert {"robots", "scenario", "fleet_file", "rviz", "backend"} <= set(args)
    assert all(a.description for a in args.values())


RUNNER = Path(__file__).with_name("run_launch_file.py")


def _start_launch(launcher, *arguments: str):
    """Start the launch file in its own process, as ``ros2 launch`` would."""
    return launcher.start_args([sys.executable, str(RUNNER), str(LAUNCH_FILE), *arguments],
                               tag="launch")


def test_sim_swarm_launch_starts_every_robot_and_stops_cleanly(launcher, probe):
    """2 robots through the launch machinery: every robot's filter commands; SIGINT -> 0."""
    from geometry_msgs.msg import Twist
    from nav_msgs.msg import Odometry

    from marl_robots.nodes.common import COMMAND_QOS, STATE_QOS

    seen = set()
    for i in range(2):
        probe.node.create_subscription(Twist, f"/robot_{i}/cmd_vel",
                                       lambda m, i=i: seen.add(("cmd", i)), COMMAND_QOS)
        probe.node.create_subscription(Odometry, f"/robot_{i}/odom",
                                       lambda m, i=i: seen.add(("odom", i)), STATE_QOS)
    proc = _start_launch(launcher, "robots:=2", "rviz:=false")
    expected = {(kind, i) for kind in ("cmd", "odom") for i in range(2)}
    assert probe.wait_for(lambda: seen >= expected, timeout=90.0), \
        f"saw only {sorted(seen)}\n{proc.log()[-3000:]}"
    names = {n for n, _ in probe.node.get_node_names_and_namespaces()}
    assert {"sim", "controller", "safety_filter"} <= names
    assert proc.stop(timeout=60.0) == 0, proc.log()[-3000:]
    log = proc.log()
    # launch reports each child: 1 simulator + 2 x (controller + safety filter).
    assert log.count("process has finished cleanly") == 5, log[-3000:]
    assert "process has died" not in log, log[-3000:]


def test_hardware_backend_stops_the_launch_with_a_message(launcher):
    proc = _start_launch(launcher, "robots:=2", "backend:=hardware")
    proc.wait(timeout=60.0)
    assert "backend:=hardware is not wired yet" in proc.log(), proc.log()
    assert "process started" not in proc.log(), "no node may start for the hardware backend"


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))
