"""``marl-robots train`` / ``eval``: user errors exit 2 with one line; a tiny end-to-end run."""

from __future__ import annotations

import json

import pytest

from marl_robots.cli import main

#: ``sim --policy go-to-goal`` against ``sim``: same computations, float32 rounding only [m].
POS_TOL_M = 1e-5


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["train", "navigation", "--policy", "foo", "--out", "X"], "unknown policy kind 'foo'"),
        (["train", "navgation", "--out", "X"], "unknown task 'navgation'"),
        (["train", "navigation", "--scenario", "maze", "--out", "X"], "unknown scenario"),
        (["train", "navigation", "--scenario", "corridor,maze", "--out", "X"], "unknown scenario"),
        (
            ["train", "navigation", "--scenario", "corridor,random", "--num-envs", "3"]
            + ["--out", "X"],
            "must be divisible by the number of scenarios",
        ),
        (["train", "navigation", "--resume", "--out", "X"], "no checkpoint"),
        (["train", "navigation", "--init", "nowhere", "--out", "X"], "--init: no checkpoint"),
        (["train", "navigation", "--time-penalty", "nan", "--out", "X"], "time_penalty must"),
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
    _check_warm_start(out, tmp_path)


def _check_warm_start(source, tmp_path):
    """``--init``: a new run on another scenario starts from ``source``'s networks, optimiser
    and statistics (and not from its environments); another network width is refused."""
    import jax  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    from marl_robots.policies.mappo import TrainConfig, load_checkpoint, trainer_for  # noqa: PLC0415
    from marl_robots.policies.train import WARM_FIELDS, warm_start  # noqa: PLC0415

    def config(**kw):
        return TrainConfig(**{"policy": "cbf-tuning", "robots": 2, "scenario": "antipodal",
                              "num_envs": 2, "rollout_steps": 8, "episode_length": 20, **kw})

    src_cfg = config(scenario="random")
    src, _ = load_checkpoint(source / "checkpoint", trainer_for(src_cfg).init(0))
    fresh = trainer_for(config()).init(5)
    warm = warm_start(fresh, source)
    for name in WARM_FIELDS:
        for a, b in zip(jax.tree_util.tree_leaves(getattr(warm, name)),
                        jax.tree_util.tree_leaves(getattr(src, name)), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=name)
    assert np.any(np.asarray(jax.tree_util.tree_leaves(src.actor["net"])[0])
                  != np.asarray(jax.tree_util.tree_leaves(fresh.actor["net"])[0]))
    np.testing.assert_array_equal(np.asarray(warm.key), np.asarray(fresh.key))
    assert int(warm.update) == 0
    with pytest.raises(ValueError, match="of shape"):
        warm_start(trainer_for(config(hidden=16)).init(0), source)
    # Through the CLI (the source's configuration, so the compiled program is reused).
    out = tmp_path / "fine"
    argv = ["train", "navigation", "--policy", "cbf-tuning", "--robots", "2", "--scenario",
            "random", "--num-envs", "2", "--rollout-steps", "8", "--episode-length", "20",
            "--checkpoint-every", "1", "--total-steps", "16", "--seed", "5", "--init",
            str(source), "--out", str(out), "--quiet"]
    assert main(argv) == 0
    meta = json.loads((out / "policy" / "policy.json").read_text())
    assert meta["training"]["init"] == str(source)
    broken = tmp_path / "broken"
    (broken / "checkpoint").mkdir(parents=True)
    state = (source / "checkpoint" / "state.msgpack").read_bytes()
    (broken / "checkpoint" / "state.msgpack").write_bytes(state[: len(state) // 2])
    with pytest.raises(ValueError, match="cannot read"):
        warm_start(fresh, broken)


def test_sim_with_a_policy_writes_the_sim_files(tmp_path, capsys):
    """``sim --policy go-to-goal`` is ``sim`` (same trajectory); a trained folder also runs."""
    import numpy as np  # noqa: PLC0415

    common = ["sim", "navigation", "--robots", "4", "--scenario", "random", "--steps", "60"]
    common += ["--no-animation", "--quiet"]
    assert main([*common, "--out", str(tmp_path / "plain")]) == 0
    assert main([*common, "--policy", "go-to-goal", "--out", str(tmp_path / "pol")]) == 0
    plain = np.load(tmp_path / "plain" / "rollout.npz")
    pol = np.load(tmp_path / "pol" / "rollout.npz")
    assert plain["pos"].shape == pol["pos"].shape
    np.testing.assert_allclose(pol["pos"], plain["pos"], atol=POS_TOL_M)
    np.testing.assert_array_equal(pol["reached_step"], plain["reached_step"])
    m_plain = json.loads((tmp_path / "plain" / "metrics.json").read_text())
    m_pol = json.loads((tmp_path / "pol" / "metrics.json").read_text())
    assert m_pol["policy"] == "go-to-goal"
    assert set(m_plain) <= set(m_pol)
    for key in ("collisions", "success_rate", "filter_interventions", "qp_infeasible"):
        assert m_pol[key] == m_plain[key], key
    assert (tmp_path / "pol" / "trajectories.png").is_file()


def test_sim_policy_user_errors(tmp_path, capsys):
    argv = ["sim", "navigation", "--robots", "4", "--steps", "10", "--policy"]
    assert main([*argv, "nowhere", "--out", str(tmp_path / "a")]) == 2
    assert "nowhere" in capsys.readouterr().err
    assert main([*argv, "go-to-goal", "--filter", "none", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "--filter cbf" in err and err.count("\n") == 1, err


@pytest.mark.parametrize(
    "name, kind", [("navigation_gnn", "gnn"), ("navigation_cbf_tuning", "cbf-tuning")]
)
def test_shipped_policy_found_by_name(name, kind, tmp_path):
    """``policies/<name>`` (shipped) loads by name through ``core.paths`` and runs."""
    ev = tmp_path / "eval"
    argv = ["eval", name, "--scenario", "corridor", "--robots", "8"]
    assert main([*argv, "--episodes", "1", "--steps", "20", "--out", str(ev)]) == 0
    m = json.loads((ev / "metrics.json").read_text())
    assert m["policy"] == kind and m["policy_source"] == name
    assert m["collisions"] == 0
