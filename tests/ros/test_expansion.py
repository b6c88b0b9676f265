"""Per-robot expansion and fleet files: pure, run everywhere (no rclpy, no launch)."""

from __future__ import annotations

import pytest
import yaml

from marl_robots.core.config import ConfigError
from marl_robots.nodes import expansion
from marl_robots.nodes.expansion import (
    HardwareBackendError,
    expand_swarm,
    ros_arguments,
)
from marl_robots.nodes.fleet import fleet_from_scenario, fleet_to_dict, load_fleet

#: Fleet files store poses rounded to 1 um / 1 urad.
FLEET_FILE_ATOL = 1e-6


def test_expansion_of_n_robots_gives_one_sim_and_two_nodes_per_robot():
    specs = expand_swarm(robots=8)
    assert [s.executable for s in specs[:1]] == ["sim_node"]
    per_robot = specs[1:]
    assert len(per_robot) == 16
    namespaces = sorted({s.namespace for s in per_robot})
    assert namespaces == [f"/robot_{i}" for i in range(8)]
    fqns = [s.fqn for s in specs]
    assert len(set(fqns)) == len(fqns), "every node needs a unique fully qualified name"
    for s in per_robot:
        assert s.executable in ("controller_node", "safety_filter_node")
        assert s.parameters["fleet_ids"] == list(range(8))
        assert s.parameters["fleet_namespaces"] == [f"robot_{i}" for i in range(8)]
        assert s.namespace == f"/robot_{s.parameters['robot_id']}"
        assert s.parameters["use_sim_time"] is True
        assert all(p.endswith(".yaml") for p in s.param_files)
    assert specs[0].namespace == "/"
    assert specs[0].parameters["robots"] == 8


def test_expansion_of_a_fleet_file_uses_its_names_and_ids(tmp_path):
    fleet = fleet_from_scenario(3)
    data = fleet_to_dict(fleet)
    for i, r in enumerate(data["fleet"]["robots"]):
        r["name"], r["id"] = f"gritsbot_{10 + i}", 10 + i
    data["fleet"]["obstacles"] = [[0.0, 0.0, 0.1]]
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(data))
    specs = expand_swarm(fleet_file=str(path))
    ns = sorted({s.namespace for s in specs[1:]})
    assert ns == ["/gritsbot_10", "/gritsbot_11", "/gritsbot_12"]
    ctrl = [s for s in specs if s.executable == "controller_node"][0]
    assert ctrl.parameters["fleet_ids"] == [10, 11, 12]
    assert ctrl.parameters["obstacles"] == [0.0, 0.0, 0.1]
    assert specs[0].parameters["fleet_file"] == str(path)


def test_hardware_backend_fails_with_a_clear_message():
    with pytest.raises(HardwareBackendError, match="backend:=hardware is not wired yet"):
        expand_swarm(robots=2, backend="hardware")
    with pytest.raises(ValueError, match="unknown backend 'gazebo'; known backends: sim"):
        expand_swarm(robots=2, backend="gazebo")


def test_missing_fleet_file_and_bad_robot_count_are_named():
    with pytest.raises(FileNotFoundError, match="no_such_fleet.yaml"):
        expand_swarm(fleet_file="no_such_fleet.yaml")
    with pytest.raises(ValueError, match="robots must be >= 1"):
        expand_swarm(robots=0)


def test_ros_arguments_encode_names_files_and_typed_parameters():
    spec = expand_swarm(robots=2)[1]
    args = ros_arguments(spec)
    assert args[:5] == ["--ros-args", "-r", f"__node:={spec.name}", "-r",
                        f"__ns:={spec.namespace}"]
    assert "--params-file" in args
    pairs = [args[i + 1] for i, a in enumerate(args) if a == "-p"]
    assert 'fleet_namespaces:=["robot_0", "robot_1"]' in pairs
    assert "fleet_ids:=[0, 1]" in pairs
    assert "use_sim_time:=true" in pairs
    # Doubles must stay doubles (an int would not match the declared double parameter).
    assert any(p.startswith("arena:=[-1.6, 1.6") for p in pairs)
    assert expansion._param_value(1.0) == "1.0"


def test_shipped_fleet_file_matches_the_antipodal_scenario():
    shipped = load_fleet("antipodal_8.yaml")
    scenario = fleet_from_scenario(8, "antipodal")
    assert shipped.names == scenario.names and shipped.ids == scenario.ids
    for a, b in zip(shipped.robots, scenario.robots, strict=True):
        assert a.initial_pose == pytest.approx(b.initial_pose, abs=FLEET_FILE_ATOL)
        assert a.goal == pytest.approx(b.goal, abs=FLEET_FILE_ATOL)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda f: f["robots"][0].update(colour="red"), "unknown key 'colour'"),
        (lambda f: f["robots"][1].update(id=0), "unique"),
        (lambda f: f["robots"][0].update(name="robot 0"), "not a valid ROS name"),
        (lambda f: f["robots"][0].update(initial_pose=[0.0, 1.0]), "expected 3 items"),
        (lambda f: f.update(robots=[]), "at least one robot"),
    ],
)
def test_fleet_file_errors_name_the_problem(tmp_path, mutate, message):
    data = fleet_to_dict(fleet_from_scenario(2))
    mutate(data["fleet"])
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=message):
        load_fleet(path)


# The launch decision function: every bad launch argument is one line naming it --------------

BAD_LAUNCH_ARGUMENTS = [
    ({"backend": "hardware"}, "backend:='hardware'", "not wired yet"),
    ({"backend": "gazebo"}, "backend:='gazebo'", "known backends: sim, hardware"),
    ({"robots": "-3"}, "robots:='-3'", "integer >= 1"),
    ({"robots": "0"}, "robots:='0'", "integer >= 1"),
    ({"robots": "abc"}, "robots:='abc'", "expected an integer"),
    ({"robots": "2.5"}, "robots:='2.5'", "expected an integer"),
    ({"seed": "x1"}, "seed:='x1'", "expected an integer"),
    ({"fleet_file": "nope.yaml"}, "fleet_file:='nope.yaml'", "not found"),
    ({"scenario": "nope"}, "scenario:='nope'", "unknown scenario 'nope'"),
    ({"scenario": "antipodl"}, "scenario:='antipodl'", "did you mean 'antipodal'"),
    ({"rviz": "maybe"}, "rviz:='maybe'", "expected true or false"),
    ({"use_sim_time": "2"}, "use_sim_time:='2'", "expected true or false"),
    ({"rate_hz": "nan"}, "rate_hz:='nan'", "finite number >= 0"),
    ({"rate_hz": "-1"}, "rate_hz:='-1'", "finite number >= 0"),
    ({"rate_hz": "fast"}, "rate_hz:='fast'", "expected a number"),
    ({"one_process": "maybe"}, "one_process:='maybe'", "expected true or false"),
    ({"fleet_state": "mocap"}, "fleet_state:='mocap'", "expected auto, odometry or pose_array"),
]


@pytest.mark.parametrize(("values", "named", "why"), BAD_LAUNCH_ARGUMENTS,
                         ids=[f"{k}={v}" for (a, _, _) in BAD_LAUNCH_ARGUMENTS
                              for k, v in a.items()])
def test_bad_launch_arguments_raise_one_line_naming_the_argument(values, named, why):
    with pytest.raises(expansion.LaunchArgumentError) as err:
        expansion.launch_specs(values)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"invalid launch argument {named}: "), message
    assert why in message, message


def test_a_fleet_file_with_a_bad_layout_fails_the_launch(tmp_path):
    data = fleet_to_dict(load_fleet("antipodal_8.yaml"))
    data["fleet"]["robots"][1]["goal"] = [9.0, 0.0]
    path = tmp_path / "far.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(expansion.LaunchArgumentError, match=r"fleet_file:=.*'robot_1'.*goal"):
        expansion.launch_specs({"fleet_file": str(path)})


def test_unknown_launch_argument_names_the_nearest():
    with pytest.raises(expansion.LaunchArgumentError, match="did you mean 'robots'"):
        expansion.launch_specs({"robot": "4"})


def test_good_launch_arguments_give_the_same_nodes_as_expand_swarm():
    specs = expansion.launch_specs({"robots": "3", "rate_hz": "60", "use_sim_time": "False",
                                    "seed": "7", "rviz": "true"})
    direct = expand_swarm(robots=3, use_sim_time=False, seed=7,
                          sim_overrides={"rate_hz": 60.0}, one_process=True)
    assert specs == direct
    declared = [name for name, _, _ in expansion.LAUNCH_ARGUMENTS]
    assert expansion.launch_specs({}) == expand_swarm(sim_overrides={"rate_hz": 0.0},
                                                      one_process=True)
    assert {"robots", "scenario", "fleet_file", "backend", "rviz"} <= set(declared)


# Layouts: one process per node, or one swarm_host for the whole simulated swarm -------------


def test_sim_launch_defaults_to_one_host_process_reading_the_fleet_pose_array():
    specs = expansion.launch_specs({"robots": "5"})
    assert [s.executable for s in specs] == ["sim_node", "swarm_host"]
    host = specs[1]
    assert (host.name, host.namespace) == ("swarm_host", "/")
    assert host.parameters["fleet_state"] == "pose_array"
    assert set(host.parameters) == set(expansion.HOST_PARAMETERS)


def test_the_host_hosts_exactly_the_nodes_of_the_multi_process_layout():
    """One description of the fleet: the host re-runs the expansion with its parameters."""
    for kwargs in ({"robots": 4}, {"robots": 3, "scenario": "crossing", "seed": 3,
                                   "filter_overrides": {"gamma": 2.5},
                                   "controller_overrides": {"bias": 0.25}},
                   {"fleet_file": "antipodal_8.yaml", "use_sim_time": False}):
        host = expand_swarm(one_process=True, **kwargs)[1]
        hosted = expansion.hosted_specs(host.parameters)
        separate = expand_swarm(one_process=False, fleet_state="pose_array", **kwargs)[1:]
        assert hosted == separate
        assert len(hosted) == 2 * len({s.namespace for s in hosted})
        assert all(s.parameters["fleet_state"] == "pose_array" for s in hosted)


def test_layout_and_fleet_state_arguments_choose_the_graph():
    separate = expansion.launch_specs({"robots": "3", "one_process": "false"})
    assert [s.executable for s in separate] == ["sim_node"] + ["controller_node",
                                                               "safety_filter_node"] * 3
    assert all(s.parameters["fleet_state"] == "odometry" for s in separate[1:])
    poses = expansion.launch_specs({"robots": "3", "one_process": "False",
                                    "fleet_state": "pose_array"})
    assert all(s.parameters["fleet_state"] == "pose_array" for s in poses[1:])
    host = expansion.launch_specs({"robots": "3", "fleet_state": "odometry"})[1]
    assert host.parameters["fleet_state"] == "odometry"


def test_one_process_is_refused_on_hardware():
    with pytest.raises(ValueError, match="one_process is for backend=sim"):
        expand_swarm(robots=2, backend="hardware", one_process=True)


def test_host_overrides_must_be_json_objects():
    host = dict(expand_swarm(robots=2, one_process=True)[1].parameters)
    with pytest.raises(ValueError, match="filter_overrides must be a JSON object"):
        expansion.hosted_specs(host | {"filter_overrides": "[1, 2]"})
    with pytest.raises(ValueError, match="controller_overrides is not JSON"):
        expansion.hosted_specs(host | {"controller_overrides": "{gamma"})
