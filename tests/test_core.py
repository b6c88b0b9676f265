"""Tests of the ROS-free core: registry, strict config, neighbour graph, paths, math3d."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.testing import assert_allclose

from marl_robots.core import paths
from marl_robots.core.config import ConfigError, from_dict, load_config
from marl_robots.core.graph import neighbour_graph, neighbour_graph_np
from marl_robots.core.math3d import quat_to_yaw, wrap_angle, yaw_to_quat
from marl_robots.core.registry import Registry, UnknownNameError

#: float32 distance agreement between the graph and a float64 brute force [m].
DIST_ATOL_M = 1e-5
#: Distances this close to the sensing radius are ambiguous in float32 and are skipped [m].
RADIUS_BAND_M = 1e-4
#: Angle round-trip tolerance [rad].
ANGLE_ATOL_RAD = 1e-12
REPO_ROOT = Path(__file__).resolve().parents[1]
#: One compiled program per shape is much cheaper than eager dispatch of every op.
neighbour_graph_jit = jax.jit(neighbour_graph, static_argnums=1)


# --------------------------------------------------------------------------- registry


def test_registry_lazy_entry_imported_on_first_get(tmp_path, monkeypatch):
    mod_name = "marl_test_lazy_target_mod"
    (tmp_path / f"{mod_name}.py").write_text("VALUE = object()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, mod_name, raising=False)
    reg = Registry("widget")
    reg.register("lazy", f"{mod_name}:VALUE")
    assert mod_name not in sys.modules, "register must not import the target"
    value = reg.get("lazy")
    assert mod_name in sys.modules
    assert value is sys.modules[mod_name].VALUE
    assert reg.get("lazy") is value, "second get returns the cached object"


def test_registry_lazy_entry_with_bad_module_fails_on_get_not_register():
    reg = Registry("widget")
    reg.register("broken", "marl_no_such_module_xyz:Thing")
    with pytest.raises(ModuleNotFoundError):
        reg.get("broken")


def test_registry_object_entry_returned_as_is():
    reg = Registry("widget")
    target = object()
    reg.register("plain", target)
    assert reg.get("plain") is target
    assert "plain" in reg and "other" not in reg


def test_registry_unknown_name_message_lists_known_names():
    reg = Registry("task")
    reg.register("navigation", "marl_robots.sim.tasks.navigation:NavigationTask")
    with pytest.raises(UnknownNameError) as info:
        reg.get("navgation")
    assert str(info.value) == "unknown task 'navgation'; known tasks: navigation"
    assert isinstance(info.value, KeyError)


def test_registry_unknown_name_lists_all_sorted():
    reg = Registry("task")
    for name in ("transport", "navigation", "formation"):
        reg.register(name, object())
    with pytest.raises(UnknownNameError) as info:
        reg.get("navgation")
    assert str(info.value) == (
        "unknown task 'navgation'; known tasks: formation, navigation, transport"
    )
    assert reg.names() == ["formation", "navigation", "transport"]
    assert list(reg) == reg.names()


def test_registry_empty_unknown_name():
    with pytest.raises(UnknownNameError) as info:
        Registry("robot").get("x")
    assert str(info.value) == "unknown robot 'x'; known robots: (none)"


def test_registry_duplicate_register_raises_and_keeps_first():
    reg = Registry("robot")
    first = object()
    reg.register("unicycle", first)
    with pytest.raises(ValueError, match="robot 'unicycle' is already registered"):
        reg.register("unicycle", object())
    assert reg.get("unicycle") is first


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class Inner:
    gain: float = 1.0
    count: int = 2


@dataclass(frozen=True)
class Outer:
    name: str
    rate_hz: float = 30.0
    steps: int = 10
    enabled: bool = True
    mode: Literal["fast", "slow"] = "fast"
    size_m: tuple[float, float] = (3.2, 2.0)
    ids: tuple[int, ...] = ()
    inner: Inner = field(default_factory=Inner)

    def __post_init__(self) -> None:
        if self.rate_hz <= 0:
            raise ValueError(f"rate_hz must be positive, got {self.rate_hz}")


def _write(tmp_path: Path, text: str, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_load_config_full_file(tmp_path):
    path = _write(
        tmp_path,
        "name: bot\nrate_hz: 50\nsteps: 3\nenabled: false\nmode: slow\n"
        "size_m: [1, 2.5]\nids: [4, 5, 6]\ninner:\n  gain: 0.5\n  count: 7\n",
    )
    cfg = load_config(Outer, path)
    assert cfg == Outer("bot", 50.0, 3, False, "slow", (1.0, 2.5), (4, 5, 6), Inner(0.5, 7))
    assert isinstance(cfg.rate_hz, float), "an int is accepted for a float and converted"
    assert isinstance(cfg.size_m[0], float)
    assert isinstance(cfg.size_m, tuple) and isinstance(cfg.ids, tuple)


def test_load_config_defaults_and_section(tmp_path):
    path = _write(tmp_path, "other: {x: 1}\nmine:\n  name: a\n")
    cfg = load_config(Outer, path, section="mine")
    assert cfg == Outer("a")
    with pytest.raises(ConfigError, match=r"missing section 'absent'"):
        load_config(Outer, path, section="absent")


def test_unknown_key_names_file_and_key(tmp_path):
    path = _write(tmp_path, "name: a\nrate_hzz: 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(Outer, path)
    msg = str(info.value)
    assert str(path) in msg and "'rate_hzz'" in msg
    assert "rate_hz" in msg.split("valid keys:")[1], "the message lists the valid keys"


def test_unknown_nested_key_names_file_parent_and_key(tmp_path):
    path = _write(tmp_path, "name: a\ninner:\n  gian: 2.0\n")
    with pytest.raises(ConfigError) as info:
        load_config(Outer, path)
    msg = str(info.value)
    assert str(path) in msg and "'inner'" in msg and "'gian'" in msg


@pytest.mark.parametrize(
    ("yaml_text", "key"),
    [
        ("name: a\nrate_hz: abc\n", "rate_hz"),
        ("name: a\nrate_hz: true\n", "rate_hz"),
        ("name: a\nsteps: true\n", "steps"),
        ("name: a\nsteps: 2.5\n", "steps"),
        ("name: a\nenabled: 1\n", "enabled"),
        ("name: 3\n", "name"),
        ("name: a\nmode: medium\n", "mode"),
        ("name: a\nsize_m: [1.0]\n", "size_m"),
        ("name: a\nsize_m: 1.0\n", "size_m"),
        ("name: a\nids: [1, x]\n", "ids"),
        ("name: a\ninner: 3\n", "inner"),
        ("name: a\ninner: {count: 1.5}\n", "count"),
    ],
)
def test_wrong_type_names_file_and_key(tmp_path, yaml_text, key):
    path = _write(tmp_path, yaml_text)
    with pytest.raises(ConfigError) as info:
        load_config(Outer, path)
    msg = str(info.value)
    assert str(path) in msg
    assert f"'{key}'" in msg


def test_missing_required_key(tmp_path):
    path = _write(tmp_path, "rate_hz: 3\n")
    with pytest.raises(ConfigError, match=r"missing key 'name'"):
        load_config(Outer, path)


def test_post_init_validation_becomes_config_error(tmp_path):
    path = _write(tmp_path, "name: a\nrate_hz: -1\n")
    with pytest.raises(ConfigError, match="rate_hz must be positive") as info:
        load_config(Outer, path)
    assert str(path) in str(info.value)


def test_missing_file(tmp_path):
    path = tmp_path / "absent.yaml"
    with pytest.raises(ConfigError, match="no such file") as info:
        load_config(Outer, path)
    assert str(path) in str(info.value)


def test_invalid_yaml(tmp_path):
    path = _write(tmp_path, "name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML") as info:
        load_config(Outer, path)
    assert str(path) in str(info.value)


def test_top_level_not_a_mapping(tmp_path):
    path = _write(tmp_path, "- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(Outer, path)


def test_from_dict_source_prefix_and_int_for_float():
    cfg = from_dict(Inner, {"gain": 2}, "mysource")
    assert cfg == Inner(2.0, 2) and isinstance(cfg.gain, float)
    with pytest.raises(ConfigError, match=r"^mysource: key 'gain'"):
        from_dict(Inner, {"gain": "abc"}, "mysource")


def test_config_error_is_value_error():
    assert issubclass(ConfigError, ValueError)


# --------------------------------------------------------------------------- neighbour graph


def _brute_force(pos: np.ndarray, radius: float, alive: np.ndarray | None = None):
    """Float64 distances [n, n] with inf where a pair may not be neighbours."""
    p = pos.astype(np.float64)
    d = np.linalg.norm(p[:, None] - p[None], axis=-1)
    n = len(p)
    valid = ~np.eye(n, dtype=bool)
    if alive is not None:
        valid &= alive[:, None] & alive[None, :]
    return np.where(valid, d, np.inf)


def _check_graph(graph, pos, k, radius, alive=None):
    """Every row lists exactly its k nearest within radius (up to ties), padding is clean."""
    index, mask, distance = (np.asarray(a) for a in graph)
    n = pos.shape[0]
    k_eff = min(k, n - 1)
    assert index.shape == mask.shape == distance.shape == (n, k_eff)
    assert index.dtype == np.int32 and mask.dtype == bool
    d = _brute_force(pos, radius, alive)
    for i in range(n):
        in_range = np.sort(d[i][d[i] <= radius])
        expected = in_range[:k_eff]
        real = mask[i]
        assert real.sum() == len(expected), f"robot {i}: wrong neighbour count"
        # Real slots come first and are sorted by distance.
        assert np.all(real[: len(expected)]) and not np.any(real[len(expected) :])
        assert_allclose(distance[i, real], expected, atol=DIST_ATOL_M)
        assert np.all(np.diff(distance[i, real]) >= -DIST_ATOL_M)
        nbrs = index[i, real]
        assert i not in nbrs, "a robot is never its own neighbour"
        assert len(set(nbrs.tolist())) == len(nbrs), "no neighbour listed twice"
        assert_allclose(d[i, nbrs], distance[i, real], atol=DIST_ATOL_M)
        assert np.all(index[i, ~real] == i), "padding slots point at the robot itself"
        assert np.all(np.isinf(distance[i, ~real])), "padding distances are inf"


positions_strategy = st.integers(2, 20).flatmap(
    lambda n: st.sampled_from([2, 3]).flatmap(
        lambda d: hnp.arrays(
            np.float32, (n, d), elements=st.floats(-2.0, 2.0, width=32, allow_subnormal=False)
        )
    )
)


def _assume_radius_unambiguous(pos, radius):
    d = _brute_force(pos, radius)
    assume(not np.any(np.abs(d - radius) < RADIUS_BAND_M))


@settings(max_examples=60)
@given(pos=positions_strategy, k=st.integers(1, 25), radius=st.floats(0.05, 5.0))
def test_neighbour_graph_np_is_k_nearest_within_radius(pos, k, radius):
    _assume_radius_unambiguous(pos, radius)
    _check_graph(neighbour_graph_np(pos, k, radius), pos, k, radius)


@settings(max_examples=40)
@given(pos=positions_strategy, k=st.integers(1, 25), radius=st.floats(0.05, 5.0))
def test_neighbour_graph_jax_is_k_nearest_and_agrees_with_numpy(pos, k, radius):
    _assume_radius_unambiguous(pos, radius)
    g_jax = neighbour_graph_jit(jnp.asarray(pos), k, radius)
    _check_graph(g_jax, pos, k, radius)
    g_np = neighbour_graph_np(pos, k, radius)
    assert np.array_equal(np.asarray(g_jax.mask), g_np.mask)
    assert_allclose(np.asarray(g_jax.distance), g_np.distance, atol=DIST_ATOL_M)
    # Indices agree up to equidistant neighbours (ties may be broken differently in float32).
    d = _brute_force(pos, np.inf)
    rows = np.arange(len(pos))[:, None]
    real = g_np.mask
    assert_allclose(
        d[rows, np.asarray(g_jax.index)][real], d[rows, g_np.index][real], atol=DIST_ATOL_M
    )


@settings(max_examples=40)
@given(
    data=st.data(),
    pos=positions_strategy,
    k=st.integers(1, 25),
    radius=st.floats(0.05, 5.0),
)
def test_neighbour_graph_alive_excludes_dead_both_ways(data, pos, k, radius):
    _assume_radius_unambiguous(pos, radius)
    n = pos.shape[0]
    alive = np.asarray(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    graph = neighbour_graph_jit(jnp.asarray(pos), k, radius, jnp.asarray(alive))
    _check_graph(graph, pos, k, radius, alive)
    mask, index = np.asarray(graph.mask), np.asarray(graph.index)
    assert not np.any(mask[~alive]), "dead robots sense nothing"
    assert np.all(alive[index[mask]]), "dead robots are sensed by no one"


def test_neighbour_graph_k_clipped_and_single_robot():
    pos = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 0.5]], np.float32)
    g = neighbour_graph(jnp.asarray(pos), 10, 2.0)
    assert g.index.shape == (3, 2)
    assert_allclose(np.asarray(g.distance[0]), [0.5, 1.0], atol=DIST_ATOL_M)
    assert np.asarray(g.index[0]).tolist() == [2, 1]
    single = (
        neighbour_graph(jnp.zeros((1, 2)), 3, 1.0),
        neighbour_graph_np(np.zeros((1, 2)), 3, 1.0),
    )
    for graph in single:
        assert graph.index.shape == graph.mask.shape == graph.distance.shape == (1, 0)


def test_neighbour_graph_jit_and_vmap_over_batch():
    rng = np.random.default_rng(0)
    batch = rng.uniform(-1.5, 1.5, size=(5, 9, 2)).astype(np.float32)
    radii = np.array([0.3, 0.6, 1.0, 2.0, 5.0], np.float32)
    alive = rng.uniform(size=(5, 9)) > 0.2
    fn = jax.jit(jax.vmap(lambda p, r, a: neighbour_graph(p, 4, r, a)))
    out = fn(jnp.asarray(batch), jnp.asarray(radii), jnp.asarray(alive))
    assert out.index.shape == (5, 9, 4)
    for b in range(5):
        one = jax.tree.map(lambda x, b=b: x[b], out)
        _check_graph(one, batch[b], 4, float(radii[b]), alive[b])
        eager = neighbour_graph(jnp.asarray(batch[b]), 4, float(radii[b]), jnp.asarray(alive[b]))
        for got, ref in zip(one, eager, strict=True):
            assert_allclose(np.asarray(got), np.asarray(ref), atol=DIST_ATOL_M)


# --------------------------------------------------------------------------- paths


def test_content_path_resolves_in_source_tree(monkeypatch):
    monkeypatch.delenv("AMENT_PREFIX_PATH", raising=False)
    found = paths.content_path("controllers")
    assert found.is_dir()
    assert found.resolve() == (REPO_ROOT / "controllers").resolve()
    assert paths.content_path("controllers", "sim_node.yaml").is_file()
    assert paths.share_dir().resolve() == REPO_ROOT.resolve()


def test_content_path_unknown_file_lists_searched_places(monkeypatch):
    monkeypatch.delenv("AMENT_PREFIX_PATH", raising=False)
    with pytest.raises(FileNotFoundError) as info:
        paths.content_path("controllers", "no_such_file.yaml")
    msg = str(info.value)
    assert "'controllers/no_such_file.yaml'" in msg
    assert str(REPO_ROOT / "controllers" / "no_such_file.yaml") in msg
    assert str(Path(sys.prefix) / "share" / "marl_robots" / "controllers") in msg


# --------------------------------------------------------------------------- math3d


@given(st.floats(-math.pi, math.pi, exclude_max=True))
def test_yaw_quat_round_trip(yaw):
    q = yaw_to_quat(yaw)
    assert q[0] == 0.0 and q[1] == 0.0
    assert math.isclose(sum(c * c for c in q), 1.0, abs_tol=ANGLE_ATOL_RAD)
    back = quat_to_yaw(*q)
    # -pi and +pi are the same heading, so compare the wrapped difference.
    diff = float(wrap_angle(back - yaw))
    assert min(abs(diff), abs(abs(diff) - 2 * math.pi)) <= ANGLE_ATOL_RAD


@given(st.floats(-100.0, 100.0))
def test_wrap_angle_range_and_equivalence(angle):
    w = float(wrap_angle(angle))
    assert -math.pi <= w < math.pi
    turns = (angle - w) / (2.0 * math.pi)
    assert abs(turns - round(turns)) < 1e-9


def test_wrap_angle_edges_and_arrays():
    below = np.nextafter(-math.pi, -4.0)
    assert -math.pi <= float(wrap_angle(below)) < math.pi
    assert float(wrap_angle(math.pi)) == -math.pi
    arr = wrap_angle(np.array([0.0, 3 * math.pi, -3.5 * math.pi]))
    assert_allclose(arr, [0.0, -math.pi, 0.5 * math.pi], atol=ANGLE_ATOL_RAD)


def test_quat_to_yaw_known_values():
    s = math.sqrt(0.5)
    assert_allclose(quat_to_yaw(0.0, 0.0, s, s), 0.5 * math.pi, atol=ANGLE_ATOL_RAD)
    assert_allclose(quat_to_yaw(0.0, 0.0, 0.0, 1.0), 0.0, atol=ANGLE_ATOL_RAD)
    assert_allclose(yaw_to_quat(math.pi), (0.0, 0.0, 1.0, 0.0), atol=ANGLE_ATOL_RAD)
