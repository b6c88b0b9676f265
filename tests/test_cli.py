"""The ``marl-robots`` command line: outputs, metrics fields, determinism and user errors."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from marl_robots.cli import main

METRIC_FIELDS = (
    "robots",
    "steps",
    "dt_s",
    "safety_distance_m",
    "collisions",
    "obstacle_contacts",
    "min_separation_m",
    "success_rate",
    "mean_time_to_goal_s",
    "filter_interventions",
    "qp_infeasible",
    "wall_time_s",
    "env_steps_per_s",
)


#: The console script installed next to this interpreter (the venv need not be on PATH).
SCRIPT = shutil.which("marl-robots", path=str(Path(sys.executable).parent)) or shutil.which(
    "marl-robots"
)


def run_cli(*args):
    """Run the installed console script in a subprocess (what a user types)."""
    assert SCRIPT, "the marl-robots console script is not installed"
    return subprocess.run([SCRIPT, *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "demo"
    proc = run_cli(
        "sim",
        "navigation",
        "--robots",
        "6",
        "--scenario",
        "antipodal",
        "--filter",
        "cbf",
        "--steps",
        "300",
        "--seed",
        "0",
        "--out",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    return out, proc


def test_sim_writes_every_output_file(demo_run):
    out, proc = demo_run
    for name in ("metrics.json", "rollout.npz", "trajectories.png", "rollout.gif"):
        assert (out / name).stat().st_size > 0, name
    assert "collisions" in proc.stdout and "success_rate" in proc.stdout
    assert "step 300/300" in proc.stderr  # progress on runs longer than one chunk


def test_metrics_json_fields_and_values(demo_run):
    out, _ = demo_run
    metrics = json.loads((out / "metrics.json").read_text())
    for field in METRIC_FIELDS:
        assert field in metrics, field
    assert metrics["robots"] == 6 and metrics["steps"] == 300
    assert metrics["dt_s"] == pytest.approx(0.033)
    assert metrics["collisions"] == 0 and metrics["obstacle_contacts"] == 0
    assert metrics["min_separation_m"] >= metrics["safety_distance_m"] - 1e-3
    assert 0.0 <= metrics["success_rate"] <= 1.0
    assert metrics["env_steps_per_s"] > 0 and metrics["wall_time_s"] > 0


def test_rollout_npz_contents(demo_run):
    out, _ = demo_run
    data = np.load(out / "rollout.npz")
    assert data["pos"].shape == (301, 6, 2)
    assert data["action"].shape == (300, 6, 2)
    assert data["goal"].shape == (6, 2)
    metrics = json.loads((out / "metrics.json").read_text())
    assert data["min_separation_m"].min() == pytest.approx(metrics["min_separation_m"], abs=1e-6)


def test_same_seed_gives_identical_rollout(tmp_path):
    args = [
        "sim",
        "navigation",
        "--robots",
        "8",
        "--scenario",
        "random",
        "--steps",
        "300",
        "--no-animation",
        "--quiet",
    ]
    for name, seed in (("a", "3"), ("b", "3"), ("c", "4")):
        assert main([*args, "--seed", seed, "--out", str(tmp_path / name)]) == 0
    a, b, c = (np.load(tmp_path / n / "rollout.npz") for n in "abc")
    assert sorted(a.files) == sorted(b.files)
    for key in a.files:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert not np.array_equal(a["pos"], c["pos"])  # the seed matters


def test_filter_none_runs_the_nominal_controller(tmp_path):
    assert (
        main(
            [
                "sim",
                "navigation",
                "--robots",
                "4",
                "--filter",
                "none",
                "--steps",
                "50",
                "--no-animation",
                "--quiet",
                "--out",
                str(tmp_path / "n"),
            ]
        )
        == 0
    )
    metrics = json.loads((tmp_path / "n" / "metrics.json").read_text())
    assert metrics["filter"] == "none" and metrics["filter_interventions"] == 0


@pytest.mark.parametrize(
    "args,message",
    [
        (["sim", "navgation"], "unknown task 'navgation'; known tasks: navigation"),
        (
            ["sim", "navigation", "--scenario", "antipodel"],
            "unknown scenario 'antipodel'; known scenarios: antipodal, corridor, crossing, random",
        ),
        (["sim", "navigation", "--filter", "qp"], "unknown filter 'qp'; known filters: cbf, none"),
        (["sim", "navigation", "--robot", "tank"], "unknown robot 'tank'"),
        (["sim", "navigation", "--robots", "0"], "must be positive"),
        (["sim", "navigation", "--robots", "-3"], "must be positive"),
        (["sim", "navigation", "--steps", "0"], "must be positive"),
        (["sim", "navigation", "--steps", "ten"], "expected a positive integer"),
        (["sim", "navigation", "--safety-distance", "-0.1"], "must be a finite number >= 0"),
        (["sim", "navigation", "--gamma", "0"], "must be positive"),
        (["sim", "navigation", "--robots", "60", "--scenario", "random"], "fits at most"),
        (["bench", "navgation"], "unknown task 'navgation'"),
        (["bench", "navigation", "--envs", "1,x"], "--envs expects comma-separated integers"),
        (["bench", "navigation", "--devices", "1,0"], "--devices must all be positive"),
        (["bench", "navigation", "--devices", "two"], "--devices expects comma-separated"),
    ],
)
def test_user_errors_exit_2_with_one_line_and_no_traceback(args, message):
    proc = run_cli(*args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_refuses_non_empty_out_unless_overwrite(tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    proc = run_cli(
        "sim", "navigation", "--robots", "4", "--steps", "20", "--out", str(out), "--no-animation"
    )
    assert proc.returncode == 2 and "not empty; pass --overwrite" in proc.stderr
    assert (out / "keep.txt").read_text() == "precious"
    proc = run_cli(
        "sim",
        "navigation",
        "--robots",
        "4",
        "--steps",
        "20",
        "--out",
        str(out),
        "--no-animation",
        "--overwrite",
    )
    assert proc.returncode == 0, proc.stderr
    assert (out / "metrics.json").exists()


def test_bench_writes_rows_with_machine(tmp_path):
    out = tmp_path / "bench.json"
    proc = run_cli(
        "bench", "navigation", "--robots", "4", "--envs", "1,2", "--steps", "5", "--out", str(out)
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["machine"]["cores"] >= 1 and report["machine"]["cpu"]
    rows = report["rows"]
    assert {(r["envs"], r["filter"]) for r in rows} == {
        (1, "none"),
        (2, "none"),
        (1, "cbf"),
        (2, "cbf"),
    }
    for r in rows:
        assert r["robots"] == 4
        assert r["robot_steps_per_s"] == pytest.approx(4 * r["env_steps_per_s"])
        assert r["speedup_vs_numpy_loop"] > 0


def test_module_entry_point_help():
    proc = subprocess.run(
        [sys.executable, "-m", "marl_robots.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and "sim" in proc.stdout and "bench" in proc.stdout
