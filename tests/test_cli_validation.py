"""Bad inputs to ``marl-robots sim``: one line, exit code 2, nothing lost (issue: hardening)."""

import json

import jax
import numpy as np
import pytest

from marl_robots.cli import main
from marl_robots.core.config import ConfigError, load_yaml
from marl_robots.core.validate import MAX_STEPS
from marl_robots.sim.run import prng_key

FAST = ["--quiet", "--no-animation"]


def _err(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["--safety-distance", "0"], "below the robot body diameter"),
        (["--safety-distance", "0.1"], "below the robot body diameter"),
        (["--robots", "100"], "largest unicycle team that fits is 73"),
        (["--scenario", "random", "--robots", "50"], "largest unicycle team that fits is 37"),
        (["--steps", str(MAX_STEPS + 1)], f"steps must be in [1, {MAX_STEPS}]"),
        (["--safety-distance", "0.3", "--robots", "32"], "largest unicycle team that fits"),
    ],
)
def test_bad_input_one_line_exit_2(capsys, tmp_path, argv, needle):
    out = tmp_path / "run"
    code, err = _err(capsys, ["sim", "navigation", *argv, "--out", str(out), *FAST])
    assert code == 2 and len(err) == 1 and needle in err[0], err
    assert not (out / "metrics.json").exists()


def test_unwritable_out_is_refused_before_simulating(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, err = _err(capsys, ["sim", "navigation", "--out", str(blocker / "sub"), *FAST])
    assert code == 2 and len(err) == 1 and "cannot be written" in err[0]


def test_overwrite_leaves_no_stale_file_and_json_is_strict(capsys, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "rollout.gif").write_bytes(b"stale")
    argv = ["sim", "navigation", "--robots", "1", "--steps", "20", "--out", str(out)]
    assert main([*argv, "--overwrite", *FAST]) == 0
    assert not (out / "rollout.gif").exists()  # --no-animation: the old GIF must not remain
    text = (out / "metrics.json").read_text()
    metrics = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))
    assert metrics["min_separation_m"] is None  # one robot: no pair distance


def test_seeds_do_not_alias_and_small_seeds_keep_their_keys():
    assert np.array_equal(prng_key(5), jax.random.PRNGKey(5))
    keys = {tuple(np.asarray(prng_key(s)).tolist()) for s in (0, 2**32, -1, 2**64 + 3, 10**30)}
    assert len(keys) == 5


def test_duplicate_yaml_keys_are_refused():
    with pytest.raises(ConfigError, match="duplicate key 'gamma'"):
        load_yaml("gamma: 5.0\ngamma: 10.0\n", "params.yaml")


def test_filter_refuses_a_neighbour_budget_below_the_kissing_number():
    from marl_robots.controllers.safety_filter import FilterConfig
    from marl_robots.core.validate import ValidationError, neighbour_budget
    from marl_robots.sim.closed_loop import ControlConfig

    with pytest.raises(ValidationError, match="neighbour budget 5 is below 6"):
        ControlConfig(filter=FilterConfig(), neighbours=5)
    assert ControlConfig(filter=None, neighbours=2).neighbours == 2  # no filter: no guarantee
    assert neighbour_budget(2, robots=3) == 2  # 3 robots: 2 neighbours are all of them
