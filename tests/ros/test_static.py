"""Static checks of the ROS 2 content: launch files compile, parameter files match the nodes.

Pure: runs without rclpy and without launch.
"""

from __future__ import annotations

import py_compile
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from marl_robots.nodes.expansion import PARAM_FILES
from marl_robots.nodes.onboard import (
    CONTROLLER_PARAMS,
    SAFETY_FILTER_PARAMS,
    SIM_PARAMS,
    param_defaults,
)

ROOT = Path(__file__).resolve().parents[2]
DECLARED = {
    "controller_node": CONTROLLER_PARAMS,
    "safety_filter_node": SAFETY_FILTER_PARAMS,
    "sim_node": SIM_PARAMS,
}
#: Set per robot (or per launch) by the expansion, so deliberately not in the shared files.
PER_LAUNCH = {"robot_id", "fleet_ids", "fleet_namespaces", "fleet_file", "arena", "obstacles",
              "robots", "scenario", "seed"}
LAUNCH_FILES = sorted((ROOT / "launch").glob("*.launch.py"))


def test_launch_folder_has_launch_files_and_no_init():
    assert LAUNCH_FILES, "no launch files found"
    assert not (ROOT / "launch" / "__init__.py").exists()


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_every_launch_file_compiles(path, tmp_path):
    py_compile.compile(str(path), cfile=str(tmp_path / "out.pyc"), doraise=True)


@pytest.mark.parametrize("executable", sorted(PARAM_FILES))
def test_parameter_file_keys_match_the_declared_parameters(executable):
    path = ROOT / "controllers" / PARAM_FILES[executable]
    data = yaml.safe_load(path.read_text())
    assert list(data) == ["/**"], "parameter files apply to every node: one '/**' section"
    params = data["/**"]["ros__parameters"]
    declared = {s.name: s for s in DECLARED[executable]}
    unknown = set(params) - set(declared)
    assert not unknown, f"{path.name}: keys the node does not declare: {sorted(unknown)}"
    missing = set(declared) - set(params) - PER_LAUNCH
    assert not missing, f"{path.name}: declared parameters not documented: {sorted(missing)}"
    kinds = {"bool": bool, "int": int, "double": float, "string": str}
    for name, value in params.items():
        kind = declared[name].kind
        assert type(value) is kinds[kind], f"{path.name}: {name}={value!r} is not {kind}"


@pytest.mark.parametrize("executable", ["controller_node", "safety_filter_node"])
def test_parameter_file_defaults_agree_with_the_simulation(executable):
    """The shipped gains are the ones the simulation uses (ground robot + closed loop)."""
    pytest.importorskip("jax")
    from marl_robots.sim import closed_loop
    from marl_robots.sim.robots.ground import GroundParams

    path = ROOT / "controllers" / PARAM_FILES[executable]
    params = yaml.safe_load(path.read_text())["/**"]["ros__parameters"]
    for name, value in GroundParams()._asdict().items():
        assert params[name] == pytest.approx(value), name
    cfg = closed_loop.ControlConfig()
    assert params["safety_distance_m"] == pytest.approx(closed_loop.SAFETY_DISTANCE_M)
    assert params["neighbours"] == cfg.neighbours
    assert params["sensing_radius_m"] == pytest.approx(cfg.sensing_radius_m)
    if executable == "controller_node":
        assert params["goal_gain"] == pytest.approx(cfg.goal_gain)
        assert params["bias"] == pytest.approx(cfg.bias)
        assert params["make_way"] == pytest.approx(cfg.make_way)
        assert params["make_way_radius_m"] == pytest.approx(cfg.make_way_radius_m)
    else:
        assert params["dt_s"] == pytest.approx(cfg.filter.dt_s)
        assert params["class_k"] == cfg.filter.class_k
        assert params["relax_weight"] == pytest.approx(cfg.filter.relax_weight)
        assert params["relax_iters"] == cfg.filter.relax_iters


def test_declared_defaults_equal_the_parameter_files():
    for executable, specs in DECLARED.items():
        path = ROOT / "controllers" / PARAM_FILES[executable]
        params = yaml.safe_load(path.read_text())["/**"]["ros__parameters"]
        defaults = param_defaults(specs)
        for name, value in params.items():
            assert defaults[name] == value, f"{executable}: {name} default != file value"


def test_pure_node_helpers_do_not_import_ros():
    code = (
        "import sys\n"
        "for m in ('rclpy', 'launch', 'launch_ros', 'nav_msgs', 'geometry_msgs'):\n"
        "    sys.modules[m] = None\n"
        "import marl_robots.nodes.fleet, marl_robots.nodes.expansion, marl_robots.nodes.onboard\n"
        "marl_robots.nodes.expansion.expand_swarm(robots=2)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
