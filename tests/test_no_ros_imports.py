"""The simulation, controllers, core and CLI import without ROS 2 installed.

A fresh interpreter marks the ROS packages as unimportable (``sys.modules[name] = None`` makes
``import name`` raise ImportError) and then imports every module of the ROS-free packages.
A canary module that does ``import rclpy`` shows that the same harness does catch a ROS import.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

ROS_MODULES = (
    "rclpy",
    "launch",
    "launch_ros",
    "rclpy_lifecycle",
    "geometry_msgs",
    "nav_msgs",
    "std_msgs",
)
ROS_FREE_PACKAGES = ("marl_robots.core", "marl_robots.sim", "marl_robots.controllers")
ROS_FREE_MODULES = ("marl_robots.cli",)
#: An interpreter that imports JAX on a loaded 2-core machine [s].
IMPORT_TIMEOUT_S = 120

HARNESS = textwrap.dedent(
    """
    import importlib
    import pkgutil
    import sys

    for name in {ros!r}:
        sys.modules[name] = None

    imported = []
    for name in {modules!r}:
        importlib.import_module(name)
        imported.append(name)

    def walk_error(name):
        raise ImportError(f"cannot import {{name}} while walking")

    for pkg_name in {packages!r}:
        pkg = importlib.import_module(pkg_name)
        imported.append(pkg_name)
        for info in pkgutil.walk_packages(pkg.__path__, pkg_name + ".", onerror=walk_error):
            importlib.import_module(info.name)
            imported.append(info.name)

    leaked = sorted(m for m in {ros!r} if sys.modules.get(m) is not None)
    assert not leaked, f"ROS modules got imported: {{leaked}}"
    print("\\n".join(imported))
    """
)


def _run_harness(packages, modules, extra_path=None):
    script = HARNESS.format(ros=ROS_MODULES, packages=tuple(packages), modules=tuple(modules))
    if extra_path is not None:
        script = f"import sys\nsys.path.insert(0, {str(extra_path)!r})\n" + script
    return subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=IMPORT_TIMEOUT_S,
        check=False,
    )


def test_ros_free_packages_import_without_ros():
    proc = _run_harness(ROS_FREE_PACKAGES, ROS_FREE_MODULES)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    imported = set(proc.stdout.split())
    # The walk really visited the modules (not just the package __init__ files).
    for expected in (
        "marl_robots.cli",
        "marl_robots.core.graph",
        "marl_robots.core.paths",
        "marl_robots.sim.closed_loop",
        "marl_robots.sim.numpy_loop",
        "marl_robots.sim.robots.unicycle",
        "marl_robots.sim.tasks.navigation",
        "marl_robots.controllers.safety_filter",
    ):
        assert expected in imported, f"{expected} was not imported: {sorted(imported)}"


@pytest.mark.parametrize("ros_module", ["rclpy", "geometry_msgs.msg", "launch_ros.actions"])
def test_harness_catches_a_ros_import(tmp_path, ros_module):
    pkg = tmp_path / "ros_canary_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text('"""Canary package."""\n')
    (pkg / "clean.py").write_text('"""Imports nothing from ROS."""\nimport math\n')
    (pkg / "uses_ros.py").write_text(f'"""Imports ROS."""\nimport {ros_module}\n')
    proc = _run_harness(["ros_canary_pkg"], [], extra_path=tmp_path)
    assert proc.returncode != 0, f"the canary import went unnoticed:\n{proc.stdout}"
    assert "ImportError" in proc.stderr or "ModuleNotFoundError" in proc.stderr, proc.stderr
    assert "ros_canary_pkg.uses_ros" in proc.stderr or "uses_ros.py" in proc.stderr


def test_harness_passes_a_clean_package(tmp_path):
    pkg = tmp_path / "clean_canary_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text('"""Canary package."""\n')
    (pkg / "clean.py").write_text('"""Imports nothing from ROS."""\nimport math\n')
    proc = _run_harness(["clean_canary_pkg"], [], extra_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["clean_canary_pkg", "clean_canary_pkg.clean"]
