"""Policy bundles: export, the JAX-free runtime, parity, the onboard observation, refusals.

Policies under test: every shipped policy under ``policies/`` and, for each learned kind, a
policy folder in ``marl-robots train``'s format (``mappo.save_policy``) with randomised weights
and normalisation statistics, so that the networks' outputs are far from their near-zero
initialisation.  Parity is measured on observations recorded from env rollouts behind the filter
(>= ``MIN_OBSERVATIONS``): of the randomised ``gnn`` policy for every fixture (one compiled
rollout, which the CLI export of that policy reuses), of the policy itself for shipped ones.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from marl_robots.cli import main
from marl_robots.policies import bundle as bd
from marl_robots.policies.export import (
    PARITY_ATOL,
    PARITY_OBSERVATIONS,
    export,
    jax_actions,
    load_trained,
    parity_errors,
    record_observations,
)
from marl_robots.policies.observation import observe
from marl_robots.policies.runtime import available_backends, load_bundle

ROOT = Path(__file__).resolve().parents[1]
MIN_OBSERVATIONS = 1000
#: Std of the noise added to every initial weight: about the initial weights' own scale
#: (LeCun, 1 / sqrt(64) for the 64-wide layers), so outputs vary like a trained policy's.
#: Far larger weights (0.5) amplify XLA's float32 tanh approximation to ~1e-4 after five
#: layers; the export then refuses the bundle (PARITY_ATOL).
WEIGHT_NOISE = 0.15
#: Onboard observation vs the env's (float32 arithmetic in a different order).
OBS_ATOL = 1e-5
SHIPPED = sorted(
    p.parent if p.parent.name != "policy" else p.parent.parent
    for p in (ROOT / "policies").glob("**/policy.json")
)


def _residual_supported() -> bool:
    from marl_robots.policies.mappo import TrainConfig

    return "residual" in TrainConfig.__dataclass_fields__


#: Fixture policies: name -> (kind, TrainConfig options).
KINDS = {"gnn": ("gnn", {}), "cbf-tuning": ("cbf-tuning", {})}
if _residual_supported():
    KINDS["gnn-residual"] = ("gnn", {"residual": 0.5})


def _write_policy(folder: Path, name: str) -> None:
    """A policy folder as ``marl-robots train`` writes it, weights randomised."""
    from marl_robots.policies import POLICIES
    from marl_robots.policies.mappo import TrainConfig, save_policy
    from marl_robots.sim.env import NavigationEnv

    kind, options = KINDS[name]
    config = TrainConfig(policy=kind, robots=8, scenario="random", **options)
    env = NavigationEnv(config.env_config())
    policy = POLICIES.get(kind)(env, env.default_params(), **options)
    params = policy.init(jax.random.PRNGKey(3))
    leaves, tree = jax.tree_util.tree_flatten(params["net"])
    keys = jax.random.split(jax.random.PRNGKey(4), len(leaves))
    leaves = [
        x + WEIGHT_NOISE * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys, strict=True)
    ]
    params["net"] = jax.tree_util.tree_unflatten(tree, leaves)
    dim = env.obs_layout.dim
    params["obs_mean"] = 0.05 * jax.random.normal(jax.random.PRNGKey(5), (dim,))
    params["obs_std"] = jax.random.uniform(jax.random.PRNGKey(6), (dim,), minval=0.5, maxval=1.5)
    # Realistic statistics of the mask flags (mostly 1): a normalised flag of 1 reads 0.33, so
    # a mirror that took its masks from the normalised observation would break parity.
    lay = env.obs_layout
    flags = np.concatenate(
        [
            lay.self_dim + lay.nbr_dim * np.arange(lay.k) + 2 * lay.d,
            lay.self_dim + lay.k * lay.nbr_dim + lay.obst_dim * np.arange(lay.m) + lay.d + 1,
        ]
    )
    params["obs_mean"] = params["obs_mean"].at[flags].set(0.9)
    params["obs_std"] = params["obs_std"].at[flags].set(0.3)
    save_policy(folder, kind, params, config, {"training": {"note": "test fixture"}})


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """kind -> (bundle folder, policy folder, recorded observations)."""
    out, rec = {}, None
    for kind in KINDS:
        root = tmp_path_factory.mktemp(kind)
        _write_policy(root / "policy", kind)
        if rec is None:  # one recording (one compiled rollout), of the first (gnn) policy
            policy, params, _, env, env_params, _ = load_trained(root / "policy")
            rec = record_observations(env, policy, params, env_params, PARITY_OBSERVATIONS)
        export(root / "policy", root / "bundle", record=rec)
        out[kind] = (root / "bundle", root / "policy", rec)
    return out


def _parity(bundle: Path, policy_dir: Path, rec: dict) -> dict:
    policy, params, *_ = load_trained(policy_dir)
    manifest = bd.load_manifest(bundle)
    obs = rec["obs"].reshape(-1, manifest["observation"]["dim"])
    want = jax_actions(policy, params, obs)
    errors = {
        b: parity_errors(load_bundle(bundle, backend=b)(obs), want) for b in ("onnx", "torch")
    }
    return {"observations": obs.shape[0], "errors": errors, "spread": float(np.ptp(want))}


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(KINDS))
def test_parity_jax_torch_onnx(exported, kind):
    bundle, policy_dir, rec = exported[kind]
    result = _parity(bundle, policy_dir, rec)
    print(f"{kind}: {result}")
    assert result["observations"] >= MIN_OBSERVATIONS
    assert result["spread"] > 0.1, "outputs barely vary: parity would prove little"
    for backend, (abs_err, scaled) in result["errors"].items():
        assert scaled <= PARITY_ATOL, f"{backend} differs from JAX by {abs_err} ({scaled} scaled)"
    assert bd.load_manifest(bundle)["parity"]["max_abs_error"].keys() == {"onnx", "torch"}


@pytest.mark.slow
@pytest.mark.parametrize("shipped", SHIPPED, ids=[p.name for p in SHIPPED])
def test_parity_shipped_policies(shipped, tmp_path):
    policy, params, _, env, env_params, folder = load_trained(shipped)
    rec = record_observations(env, policy, params, env_params, MIN_OBSERVATIONS)
    export(folder, tmp_path / "bundle", record=rec)
    bundles = [tmp_path / "bundle"]
    if (shipped / "bundle" / bd.MANIFEST).is_file():  # the shipped bundle is this policy's
        bundles.append(shipped / "bundle")
    for bundle in bundles:
        result = _parity(bundle, folder, rec)
        print(f"{shipped.name} ({bundle}): {result}")
        assert result["observations"] >= MIN_OBSERVATIONS
        for backend, (abs_err, scaled) in result["errors"].items():
            assert scaled <= PARITY_ATOL, f"{backend}: {abs_err} ({scaled} scaled)"


@pytest.mark.slow
def test_onboard_observation_equals_the_env(exported):
    _, policy_dir, rec = exported["gnn"]
    manifest = bd.load_manifest(exported["gnn"][0])
    o = manifest["observation"]
    w, h = o["arena_m"]
    T, E, n, dim = rec["obs"].shape
    worst, rows = 0.0, 0
    for t in range(T):
        for e in range(E):
            got = observe(
                rec["points"][t, e],
                rec["vel"][t, e],
                rec["goal"][t, e],
                rec["obstacles"][t, e],
                rec["obstacle_mask"][t, e],
                (-w / 2, w / 2, -h / 2, h / 2),
                o["neighbours"],
                o["sensing_radius_m"],
                o["obstacle_slots"],
            )
            worst = max(worst, float(np.max(np.abs(got - rec["obs"][t, e]))))
            rows += n
    print(f"onboard observation: {rows} robot-states, max |onboard - env| = {worst:.3g}")
    assert rows >= MIN_OBSERVATIONS
    assert worst <= OBS_ATOL
    # Neighbour and obstacle slots are exercised, not all padding.
    assert np.mean(rec["obs"][..., 4 * 2 + 4]) > 0.1 and np.any(rec["obstacle_mask"])


def test_runtime_imports_no_jax(exported):
    """The runtime loads and runs a bundle with JAX and flax made unimportable."""
    bundle = exported["gnn"][0]
    code = (
        "import sys; sys.modules['jax'] = None; sys.modules['flax'] = None\n"
        "import numpy as np\n"
        "from marl_robots.policies.runtime import load_bundle\n"
        f"for b in ('onnx', 'torch'):\n"
        f"    p = load_bundle({str(bundle)!r}, backend=b, robot='unicycle', neighbours=6)\n"
        "    a = p(np.zeros((3, p.obs_dim), np.float32))\n"
        "    assert a.shape == (3, 2) and np.all(np.isfinite(a))\n"
        "print('ok', sorted(m for m in sys.modules\n"
        "                   if m.startswith(('jax', 'flax')) and sys.modules[m] is not None))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok []"


def _copy(exported, tmp_path, kind="gnn") -> Path:
    dst = tmp_path / "b"
    shutil.copytree(exported[kind][0], dst)
    return dst


def _edit_manifest(path: Path, fn) -> None:
    m = json.loads((path / bd.MANIFEST).read_text())
    fn(m)
    (path / bd.MANIFEST).write_text(json.dumps(m))


def _refused(path: Path, needle: str, capsys, **kwargs) -> None:
    """load_bundle raises BundleError naming the problem; the CLI exits 2 with one line."""
    with pytest.raises(bd.BundleError, match=needle):
        load_bundle(path, **kwargs)
    argv = ["check-bundle", str(path)]
    if "robot" in kwargs:
        argv += ["--robot", kwargs["robot"]]
    if "neighbours" in kwargs:
        argv += ["--neighbours", str(kwargs["neighbours"])]
    if "backend" in kwargs:
        argv += ["--backend", kwargs["backend"]]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert needle.replace("\\", "") in err


def test_refuses_hash_mismatch(exported, tmp_path, capsys):
    b = _copy(exported, tmp_path)
    data = bytearray((b / "policy.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (b / "policy.onnx").write_bytes(bytes(data))
    _refused(b, "weight file policy.onnx does not match the manifest", capsys)


@pytest.mark.parametrize(
    "backend,needle",
    [
        ("onnx", "cannot be loaded by ONNX Runtime"),
        ("torch", "cannot be loaded by PyTorch"),
    ],
)
def test_refuses_truncated_weights_even_with_a_matching_hash(
    exported, tmp_path, capsys, backend, needle
):
    b = _copy(exported, tmp_path)
    file = bd.WEIGHT_FILES[backend]
    (b / file).write_bytes((b / file).read_bytes()[:1000])
    _edit_manifest(b, lambda m: m["weights"][backend].update(sha256=bd.sha256(b / file)))
    _refused(b, f"weight file {file} {needle}", capsys, backend=backend)


def test_refuses_another_robot_family(exported, tmp_path, capsys):
    _refused(
        exported["gnn"][0],
        "bundle is for robot family 'unicycle', this robot is 'single_integrator'",
        capsys,
        robot="single_integrator",
    )


def test_refuses_another_observation_spec(exported, capsys):
    _refused(
        exported["gnn"][0],
        "bundle observation spec differs: neighbours = 6 in the bundle, 8 on this robot",
        capsys,
        robot="unicycle",
        neighbours=8,
    )


@pytest.mark.parametrize(
    "field", ["observation.normalisation.std", "action.low", "robot.family", "weights"]
)
def test_refuses_a_missing_field(exported, tmp_path, capsys, field):
    b = _copy(exported, tmp_path)

    def drop(m):
        *path, last = field.split(".")
        node = m
        for part in path:
            node = node[part]
        del node[last]

    _edit_manifest(b, drop)
    _refused(b, f"missing field '{field}'", capsys)


def test_refuses_an_unknown_schema_version(exported, tmp_path, capsys):
    b = _copy(exported, tmp_path)
    _edit_manifest(b, lambda m: m.update(schema_version=99))
    _refused(b, "unknown schema version 99", capsys)


def test_refuses_a_missing_bundle(tmp_path, capsys):
    _refused(tmp_path / "nope", "not found", capsys)


def test_check_bundle_cli_accepts_a_good_bundle(exported, capsys):
    assert main(["check-bundle", str(exported["cbf-tuning"][0]), "--robot", "unicycle"]) == 0
    out = capsys.readouterr().out
    assert "cbf-tuning policy for unicycle robots" in out and "hashes ok" in out


@pytest.mark.slow
def test_export_cli(exported, tmp_path, capsys):
    policy_dir = exported["gnn"][1]
    out = tmp_path / "cli_bundle"
    argv = ["export", str(policy_dir), "--format", "onnx,torch", "--out", str(out)]
    assert main(argv) == 0
    assert "parity with JAX on 1024 recorded observations" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "policy.onnx", "policy.pt"]
    for bad, needle in [
        (["export", str(tmp_path / "none"), "--out", str(tmp_path / "x")], "no policy"),
        (
            ["export", str(policy_dir), "--format", "tflite", "--out", str(tmp_path / "y")],
            "unknown format 'tflite'",
        ),
        (argv, "is not empty"),
    ]:
        assert main(bad) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err, err


def test_backends_installed():
    """The test install has both backends (the [runtime] extra), so both are exercised."""
    assert available_backends() == ["onnx", "torch"], os.environ.get("PATH")
