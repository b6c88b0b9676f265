"""Fleet files: every class of bad input is refused with one line naming the file and robot.

ROS-free (no rclpy): ``load_fleet`` runs the shared validators (``core.validate``) and the one
ground-layout check (``sim.layout.check_ground_layout``) with the filter's actual margins.
"""

from __future__ import annotations

import math

import pytest
import yaml

from marl_robots.core.config import ConfigError
from marl_robots.nodes.fleet import (
    Fleet,
    RobotEntry,
    check_fleet_layout,
    load_fleet,
)

#: A valid two-robot fleet: both starts and goals well apart and inside the arena.
GOOD = {
    "fleet": {
        "frame_id": "world",
        "arena_m": [3.2, 2.0],
        "obstacles": [[0.0, 0.6, 0.1]],
        "robots": [
            {"name": "alpha", "id": 0, "initial_pose": [-1.0, 0.0, 0.0], "goal": [1.0, 0.0]},
            {"name": "bravo", "id": 1, "initial_pose": [1.0, -0.5, math.pi],
             "goal": [-1.0, -0.5]},
        ],
    }
}


def _write(tmp_path, data=None, text=None):
    path = tmp_path / "fleet.yaml"
    path.write_text(text if text is not None else yaml.safe_dump(data))
    return path


def _bad(tmp_path, robot=1, **changes):
    data = yaml.safe_load(yaml.safe_dump(GOOD))
    for key, value in changes.items():
        if key in data["fleet"]:
            data["fleet"][key] = value
        else:
            data["fleet"]["robots"][robot][key] = value
    return _write(tmp_path, data)


def _refused(path, *parts):
    with pytest.raises(ConfigError) as err:
        load_fleet(path)
    message = str(err.value)
    assert "\n" not in message, message
    assert str(path) in message, message
    for part in parts:
        assert part in message, message
    return message


def test_the_good_fleet_and_the_shipped_fleet_load(tmp_path):
    fleet = load_fleet(_write(tmp_path, GOOD))
    assert fleet.names == ["alpha", "bravo"]
    assert len(load_fleet("antipodal_8.yaml").robots) == 8


@pytest.mark.parametrize(("key", "value"), [
    ("initial_pose", [float("nan"), 0.0, 0.0]),
    ("initial_pose", [1.0, 0.0, float("inf")]),
    ("goal", [float("-inf"), 0.0]),
    ("goal", [0.0, float("nan")]),
])
def test_non_finite_poses_and_goals_are_refused(tmp_path, key, value):
    _refused(_bad(tmp_path, **{key: value}), "'bravo'", "non-finite", key)


@pytest.mark.parametrize("arena", [[float("nan"), 2.0], [3.2, float("inf")], [3.2, -2.0],
                                   [0.0, 2.0]])
def test_a_non_finite_or_empty_arena_is_refused(tmp_path, arena):
    _refused(_bad(tmp_path, arena_m=arena), "arena_m")


@pytest.mark.parametrize(("key", "value", "word"), [
    ("initial_pose", [1.7, 0.0, 0.0], "start"),
    ("initial_pose", [0.0, 0.95, 0.0], "start"),
    ("goal", [-1.58, -0.5], "goal"),
    ("goal", [5.0, 5.0], "goal"),
])
def test_poses_and_goals_outside_the_arena_are_refused(tmp_path, key, value, word):
    _refused(_bad(tmp_path, **{key: value}), "'bravo'", word, "outside the arena")


def test_overlapping_starts_are_refused(tmp_path):
    _refused(_bad(tmp_path, initial_pose=[-0.95, 0.0, 0.0]), "'alpha' and 'bravo'", "starts")


def test_starts_closer_than_the_filter_margin_are_refused(tmp_path):
    """Apart as bodies (0.15 m > 0.11 m) but inside the 0.21 m control-point margin."""
    _refused(_bad(tmp_path, initial_pose=[-1.0, 0.15, 0.0]), "'alpha' and 'bravo'",
             "closer than the filter's")


def test_overlapping_goals_are_refused(tmp_path):
    _refused(_bad(tmp_path, goal=[1.0, 0.05]), "'alpha' and 'bravo'", "goals")


@pytest.mark.parametrize("radius", [-0.1, 0.0, float("nan")])
def test_bad_obstacle_radii_are_refused(tmp_path, radius):
    _refused(_bad(tmp_path, obstacles=[[0.0, 0.6, radius]]), "obstacle 0")


def test_a_start_inside_an_obstacle_margin_is_refused(tmp_path):
    _refused(_bad(tmp_path, initial_pose=[0.0, 0.55, 0.0]), "'bravo'", "obstacle 0")


def test_duplicate_keys_are_refused(tmp_path):
    text = yaml.safe_dump(GOOD).replace("frame_id: world", "frame_id: world\n  frame_id: odom")
    _refused(_write(tmp_path, text=text), "duplicate key 'frame_id'")


def test_unknown_keys_name_the_nearest_valid_key(tmp_path):
    data = yaml.safe_load(yaml.safe_dump(GOOD))
    data["fleet"]["robots"][0]["goals"] = data["fleet"]["robots"][0].pop("goal")
    _refused(_write(tmp_path, data), "'goals'", "did you mean 'goal'")


def test_the_layout_check_uses_the_nodes_margins():
    """A larger safety distance makes a valid layout invalid; below the body it is refused."""
    from marl_robots.core.validate import ValidationError
    from marl_robots.nodes.onboard import default_robot_model

    fleet = Fleet(robots=(RobotEntry("a", 0, (-0.2, 0.0, 0.0), (1.0, 0.5)),
                          RobotEntry("b", 1, (0.2, 0.0, math.pi), (-1.0, 0.5))))
    model = default_robot_model()
    check_fleet_layout(fleet, model, 0.13)
    with pytest.raises(ValidationError, match="'a' and 'b' starts"):
        check_fleet_layout(fleet, model, 0.40)
    with pytest.raises(ValidationError, match="below the robot body diameter"):
        check_fleet_layout(fleet, model, 0.05)

