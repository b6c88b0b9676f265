"""Parameter drift: every shared default has one home, ``marl_robots.core.defaults``.

The nodes' parameter declarations (``nodes.onboard`` tables), the node parameter YAMLs under
``controllers/`` and the simulation's / training's config defaults must all equal it.  Each
test lists every disagreement at once, naming the file or table and the parameter.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from marl_robots.core import defaults
from marl_robots.nodes import onboard

ROOT = Path(__file__).resolve().parents[1]

#: Node parameter YAML -> the table its node declares.
NODE_YAMLS = {
    "controller_node.yaml": onboard.CONTROLLER_PARAMS,
    "safety_filter_node.yaml": onboard.SAFETY_FILTER_PARAMS,
    "sim_node.yaml": onboard.SIM_PARAMS,
}


def _tables():
    from marl_robots.nodes.policy_onboard import GAIN_PARAMS, POLICY_PARAMS

    return {
        "CONTROLLER_PARAMS": onboard.CONTROLLER_PARAMS,
        "SAFETY_FILTER_PARAMS": onboard.SAFETY_FILTER_PARAMS,
        "SIM_PARAMS": onboard.SIM_PARAMS,
        "POLICY_PARAMS": POLICY_PARAMS,
        "GAIN_PARAMS": GAIN_PARAMS,
    }


def declaration_drift(tables) -> list[str]:
    """Declared defaults that differ from ``core.defaults.NODE_PARAMETERS``."""
    bad = []
    for table_name, specs in tables.items():
        for spec in specs:
            if spec.name in defaults.NODE_PARAMETERS:
                want = defaults.NODE_PARAMETERS[spec.name]
                if spec.default != want:
                    bad.append(f"{table_name}.{spec.name} = {spec.default!r}, defaults: {want!r}")
    return bad


def yaml_drift(folder: Path) -> list[str]:
    """YAML values that differ from their node's declaration (and so from the defaults)."""
    bad = []
    for name, specs in NODE_YAMLS.items():
        declared = {s.name: s.default for s in specs}
        data = yaml.safe_load((folder / name).read_text())["/**"]["ros__parameters"]
        for key, value in data.items():
            if key not in declared:
                bad.append(f"{name}: {key} is not a declared parameter")
            elif value != declared[key]:
                bad.append(f"{name}: {key} = {value!r}, declared default {declared[key]!r}")
    return bad


def test_node_declarations_equal_the_defaults():
    assert declaration_drift(_tables()) == []


def test_node_yamls_equal_the_declarations():
    assert yaml_drift(ROOT / "controllers") == []


def test_simulation_and_training_defaults_equal_the_defaults():
    from marl_robots.policies.mappo import TrainConfig
    from marl_robots.sim import wrappers
    from marl_robots.sim.closed_loop import ControlConfig
    from marl_robots.sim.env import DEFAULT_GAMMA, EnvConfig
    from marl_robots.sim.layout import SAFETY_DISTANCE_M
    from marl_robots.sim.robots.ground import GroundParams
    from marl_robots.sim.run import RunSpec
    from marl_robots.sim.tasks.navigation import NavigationConfig

    c, e, g, n = ControlConfig(), EnvConfig(), GroundParams(), NavigationConfig()
    got = {
        "gamma": [DEFAULT_GAMMA, RunSpec().gamma],
        "safety_distance_m": [SAFETY_DISTANCE_M, RunSpec().safety_distance_m],
        "dt_s": [c.filter.dt_s, n.dt_s],
        "class_k": [c.filter.class_k],
        "relax_weight": [c.filter.relax_weight],
        "relax_iters": [c.filter.relax_iters],
        "neighbours": [c.neighbours, e.neighbours],
        "sensing_radius_m": [c.sensing_radius_m, e.sensing_radius_m],
        "robot": [n.robot, TrainConfig().robot],
        "diameter_m": [g.diameter_m],
        "v_max": [g.v_max],
        "omega_max": [g.omega_max],
        "lookahead_m": [g.lookahead_m],
        "goal_gain": [c.goal_gain],
        "bias": [c.bias, RunSpec().bias],
        "make_way": [c.make_way],
        "make_way_radius_m": [c.make_way_radius_m],
        "arena": [defaults.arena_bounds(n.arena_m), defaults.arena_bounds(TrainConfig().arena_m)],
    }
    bad = [
        f"{k}: {v!r} != {defaults.NODE_PARAMETERS[k]!r}"
        for k, vs in got.items()
        for v in vs
        if v != defaults.NODE_PARAMETERS[k]
    ]
    assert bad == []
    assert wrappers.GAMMA_BOUNDS == defaults.GAMMA_BOUNDS
    assert defaults.GAMMA_BOUNDS[0] < defaults.GAMMA < defaults.GAMMA_BOUNDS[1]


def test_drift_is_caught(tmp_path):
    """A YAML or a declaration that disagrees is reported, naming the file and parameter."""
    for name in NODE_YAMLS:
        (tmp_path / name).write_text((ROOT / "controllers" / name).read_text())
    f = tmp_path / "safety_filter_node.yaml"
    f.write_text(f.read_text().replace("gamma: 10.0", "gamma: 5.0"))
    assert yaml_drift(tmp_path) == [
        "safety_filter_node.yaml: gamma = 5.0, declared default 10.0"
    ]
    drifted = tuple(
        onboard.ParamSpec(s.name, s.kind, 0.2 if s.name == "safety_distance_m" else s.default, "")
        for s in onboard.SAFETY_FILTER_PARAMS
    )
    assert declaration_drift({"T": drifted}) == [
        f"T.safety_distance_m = 0.2, defaults: {defaults.SAFETY_DISTANCE_M!r}"
    ]


@pytest.mark.parametrize("specs", [onboard.CONTROLLER_PARAMS, onboard.SAFETY_FILTER_PARAMS])
def test_cbf_margins_come_from_the_simulation_function(specs):
    """The nodes' barrier margins are ``sim.layout.filter_margins`` of the robot family."""
    from marl_robots.nodes.fleet import load_fleet
    from marl_robots.sim.layout import filter_margins
    from marl_robots.sim.robots import ROBOTS

    fleet = load_fleet("antipodal_8.yaml")
    p = {**onboard.param_defaults(specs), "robot_id": 0, "fleet_file": "antipodal_8.yaml"}
    setup = onboard.pipeline_setup(p, fleet)
    m = filter_margins(ROBOTS.get(defaults.ROBOT), setup.model, defaults.SAFETY_DISTANCE_M)
    assert setup.robot is ROBOTS.get(defaults.ROBOT)
    assert (
        setup.cbf.safety_distance,
        setup.cbf.obstacle_margin,
        setup.cbf.wall_margin,
        setup.cbf.step_margin,
    ) == (
        pytest.approx(m.pair),
        pytest.approx(m.obstacle),
        pytest.approx(m.wall),
        pytest.approx(m.step),
    )
