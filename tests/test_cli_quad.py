"""``marl-robots sim quad_navigation``: files, metrics fields (ground navigation's + the quad's),
the same user-error conventions as ``marl-robots sim navigation``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from marl_robots.cli import main

#: ``metrics.json`` fields of ground navigation (``sim.run.metrics_of``), all present here too.
GROUND_FIELDS = (
    "task",
    "scenario",
    "robot",
    "filter",
    "filter_mode",
    "class_k",
    "gamma",
    "seed",
    "robots",
    "steps",
    "dt_s",
    "safety_distance_m",
    "robot_diameter_m",
    "collisions",
    "min_separation_m",
    "min_obstacle_clearance_m",
    "success_rate",
    "mean_time_to_goal_s",
    "filter_interventions",
    "qp_relaxed",
    "qp_infeasible",
    "compile_time_s",
    "wall_time_s",
    "env_steps_per_s",
)
QUAD_FIELDS = ("backend", "controller", "aero", "safety_ellipsoid_m", "ellipsoid_violations")


@pytest.mark.parametrize("backend,controller,animation", [("mujoco", "geometric", True)])
def test_sim_quad_writes_files_and_ground_metrics_fields(
    tmp_path, capsys, backend, controller, animation
):
    out = tmp_path / "q"
    argv = ["sim", "quad_navigation", "--backend", backend, "--robots", "3"]
    argv += ["--scenario", "random", "--controller", controller, "--steps", "15"]
    argv += ["--out", str(out)] + ([] if animation else ["--no-animation"])
    assert main(argv) == 0, capsys.readouterr().err
    assert f"3 drones on {backend}, {controller}, filter=cbf" in capsys.readouterr().out
    m = json.loads((out / "metrics.json").read_text())
    assert set(GROUND_FIELDS + QUAD_FIELDS) <= set(m)
    assert m["task"] == "quad_navigation" and m["backend"] == backend and m["steps"] == 15
    assert m["ellipsoid_violations"] == 0 and m["collisions"] == 0
    assert m["min_separation_m"] >= m["safety_distance_m"]
    roll = np.load(out / "rollout.npz")
    assert roll["pos"].shape == (16, 3, 3) and roll["goal"].shape == (3, 3)
    assert (out / "trajectories.png").stat().st_size > 10_000
    assert (out / "rollout.gif").exists() == animation


@pytest.mark.parametrize(
    "extra,message",
    [
        (
            ["--backend", "bullet"],
            "unknown backend 'bullet'; known backends: jax, mjx, mujoco, pybullet",
        ),
        (["--controller", "lqr"], "unknown controller 'lqr'; known controllers: geometric, pid"),
        (["--scenario", "corridor"], "unknown scenario 'corridor'; known scenarios: antipodal"),
        (["--filter", "qp"], "unknown filter 'qp'; known filters: cbf, none"),
        (["--robots", "60"], "closer than the 0.250 m the filter keeps; use fewer drones"),
        (["--sphere", "0,0,1"], "--sphere expects X,Y,Z,R in metres with R > 0, got '0,0,1'"),
        (["--sphere", "0,0,1.5,0.9"], "m from obstacle 0's surface, closer than the 0.150 m"),
    ],
)
def test_sim_quad_user_errors_exit_2_in_one_line(capsys, extra, message):
    code = main(["sim", "quad_navigation", *extra, "--no-animation"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert "Traceback" not in err[0]


def test_sim_quad_refuses_non_empty_out(tmp_path, capsys):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    assert main(["sim", "quad_navigation", "--steps", "2", "--out", str(out)]) == 2
    assert "not empty; pass --overwrite" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "precious"
