"""Tests of ``launch/sim_swarm.launch.py`` through the real launch service, where it exists.

Without a ROS 2 distribution ``import launch`` finds either nothing, the unrelated 2017
``launch`` package from PyPI, or this repository's own ``launch/`` folder as an empty
namespace package; the tests are then SKIPPED with the reason.  Tests that start nodes also
need the package in an ament prefix (``colcon build --symlink-install``: launch_ros finds
executables under ``<prefix>/lib/marl_robots``).  The decision function the launch file
delegates to (``expansion.launch_specs``) is tested everywhere (test_expansion.py), the
per-robot expansion by test_stack.py.

``launch_test_sim_swarm.py`` beside this file is a ``launch_testing`` test (run by
``launch_test``; its name keeps plain pytest from collecting it where launch is missing).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
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


def _workspace_reason() -> str | None:
    """None if launch_ros can find this package's executables, else why not."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_prefix
    except ImportError as err:
        return f"ament_index_python is not installed ({err})"
    try:
        prefix = Path(get_package_prefix("marl_robots"))
    except PackageNotFoundError:
        return ("marl_robots is not in an ament prefix: build it with colcon build "
                "--symlink-install and source install/setup.bash (pip alone is not enough)")
    if not (prefix / "lib" / "marl_robots" / "sim_node").exists():
        return f"no executables under {prefix}/lib/marl_robots (build with colcon)"
    return None


REASON = _ros_launch_reason()
WORKSPACE_REASON = REASON or _workspace_reason()
pytestmark = [
    pytest.mark.ros,
    pytest.mark.skipif(REASON is not None, reason=REASON or ""),
]
needs_workspace = pytest.mark.skipif(WORKSPACE_REASON is not None,
                                     reason=WORKSPACE_REASON or "")
#: Start-up of the swarm through launch on a loaded 2-core machine [s].
UP_TIMEOUT_S = 90.0
#: A launch that fails on its arguments exits before starting anything [s].
FAIL_TIMEOUT_S = 60.0


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


@needs_workspace
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
    # Stop waiting as soon as launch exits: a launch that failed will not come up later.
    probe.wait_for(lambda: seen >= expected or proc.proc.poll() is not None,
                   timeout=UP_TIMEOUT_S)
    assert seen >= expected, f"saw only {sorted(seen)} (launch exit code " \
        f"{proc.proc.poll()})\n{proc.log()[-3000:]}"
    names = {n for n, _ in probe.node.get_node_names_and_namespaces()}
    assert {"sim", "controller", "safety_filter"} <= names
    assert proc.stop(timeout=60.0) == 0, proc.log()[-3000:]
    log = proc.log()
    # launch reports each child: the simulator and the swarm host (one_process, the default).
    from marl_robots.nodes.expansion import launch_specs

    processes = len(launch_specs({"robots": "2"}))
    assert log.count("process has finished cleanly") == processes, log[-3000:]
    assert "process has died" not in log, log[-3000:]


#: One launch per class of bad argument: (argument, text its one-line error holds).
BAD_ARGUMENTS = [
    ("backend:=hardware", "invalid launch argument backend:='hardware'"),
    ("robots:=-3", "invalid launch argument robots:='-3'"),
    ("robots:=abc", "invalid launch argument robots:='abc'"),
    ("fleet_file:=nope.yaml", "invalid launch argument fleet_file:='nope.yaml'"),
    ("scenario:=nope", "invalid launch argument scenario:='nope'"),
    ("rviz:=maybe", "invalid launch argument rviz:='maybe'"),
    ("rate_hz:=nan", "invalid launch argument rate_hz:='nan'"),
]


def test_bad_launch_arguments_fail_the_launch_with_one_line(launcher):
    """Each bad argument: non-zero exit, its one line reported once, no node started."""
    procs = {arg: _start_launch(launcher, arg) for arg, _ in BAD_ARGUMENTS}
    for arg, text in BAD_ARGUMENTS:
        proc = procs[arg]
        try:
            rc = proc.wait(timeout=FAIL_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{arg}: launch still running after {FAIL_TIMEOUT_S} s\n{proc.log()}")
        log = proc.log()
        assert rc != 0, f"{arg}: launch exited 0\n{log}"
        lines = [line for line in log.splitlines() if text in line]
        assert len(lines) == 1, f"{arg}: expected one line with {text!r}\n{log}"
        assert "process started" not in log, f"{arg}: a node was started\n{log}"
        assert "Traceback" not in log, f"{arg}: traceback\n{log}"


LAUNCH_TEST_FILE = Path(__file__).with_name("launch_test_sim_swarm.py")


@needs_workspace
def test_launch_testing_file_passes(launcher):
    """``launch_test launch_test_sim_swarm.py``: robots command, then every process exits 0."""
    if importlib.util.find_spec("launch_testing") is None:
        pytest.skip("launch_testing is not installed")
    exe = shutil.which("launch_test") or os.path.join(os.path.dirname(sys.executable),
                                                      "launch_test")
    if not os.path.exists(exe):
        pytest.skip("the launch_test command is not on PATH")
    proc = launcher.start_args([exe, str(LAUNCH_TEST_FILE)], tag="launch_test")
    try:
        rc = proc.wait(timeout=3 * UP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"launch_test still running after {3 * UP_TIMEOUT_S} s\n{proc.log()}")
    log = proc.log()
    assert rc == 0, log[-5000:]
    assert "FAILED" not in log, log[-5000:]


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))
