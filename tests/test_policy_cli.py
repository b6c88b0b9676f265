"""``marl-robots train`` / ``eval``: user errors exit 2 with one line; a tiny end-to-end run."""

from __future__ import annotations

import json

import pytest

from marl_robots.cli import main


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["train", "navigation", "--policy", "foo", "--out", "X"], "unknown policy kind 'foo'"),
        (["train", "navgation", "--out", "X"], "unknown task 'navgation'"),
        (["train", "navigation", "--scenario", "maze", "--out", "X"], "unknown scenario"),
        (["train", "navigation", "--scenario", "corridor,random", "--out", "X"], "one --scenario"),
        (["train", "navigation", "--resume", "--out", "X"], "no checkpoint"),
        (["eval", "gnn"], "needs trained parameters"),
        (["eval", "nowhere"], "unknown policy 'nowhere'"),
        (["eval", "go-to-goal", "--robot", "tank"], "unknown robot 'tank'"),
    ],
)
def test_user_errors_exit_2_with_one_line(argv, needle, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1, err


def test_train_resume_and_eval_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    common = ["train", "navigation", "--policy", "cbf-tuning", "--robots", "2"]
    common += ["--scenario", "random", "--num-envs", "2", "--rollout-steps", "8"]
    common += ["--episode-length", "20", "--checkpoint-every", "1", "--out", str(out)]
    assert main([*common, "--total-steps", "16", "--quiet"]) == 0
    assert main([*common, "--total-steps", "32", "--resume", "--quiet"]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["update"] for r in rows] == [1, 2]
    for name in ("metrics.csv", "learning_curve.png", "policy/params.msgpack"):
        assert (out / name).is_file(), name
    ev = tmp_path / "eval"
    argv = ["eval", str(out / "policy"), "--scenario", "random", "--robots", "3"]
    assert main([*argv, "--episodes", "2", "--steps", "30", "--out", str(ev)]) == 0
    m = json.loads((ev / "metrics.json").read_text())
    assert m["policy"] == "cbf-tuning" and m["episodes"] == 2 and m["collisions"] == 0
    for key in ("success_rate", "min_separation_m", "filter_interventions", "qp_infeasible"):
        assert key in m
    assert len((ev / "episodes.jsonl").read_text().splitlines()) == 2
