"""``marl-robots export``: a trained policy folder -> a bundle a robot runs without JAX.

``export(source, out, formats)`` reads a policy folder written by ``marl-robots train``
(``params.msgpack`` + ``policy.json``; the run folder, its ``policy/``, or the name of a shipped
policy under ``policies/``), and writes the bundle described in ``policies.bundle``:

* ``policy.onnx`` - the normalised-observation -> bounded-action graph, built node by node
  from the flax parameters (opset 17, batch dimension free);
* ``policy.pt`` - a PyTorch state dict for ``runtime.torch_module`` (nn.Linear layout);
* ``manifest.json`` - spec, filter defaults, training config, metrics, hashes, and the parity
  measured here: observations recorded from env rollouts of the policy behind the filter, the
  JAX forward pass against every exported backend; export fails if any differs by more than
  ``PARITY_ATOL``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from marl_robots.core import defaults
from marl_robots.policies import bundle as bd

#: Largest |JAX - backend| / max(1, |JAX|) an exported bundle may show on the recorded
#: observations: an absolute 1e-5 for velocities (|u| <= v_max < 1 m/s), relative for class-K
#: gains of several 1/s (float32 has ~2e-6 resolution at 30 /s).
PARITY_ATOL = 1e-5


def parity_errors(got: np.ndarray, want: np.ndarray) -> tuple[float, float]:
    """``(max |got - want|, max |got - want| / max(1, |want|))`` over all entries."""
    diff = np.abs(np.asarray(got, np.float64) - np.asarray(want, np.float64))
    scale = np.maximum(1.0, np.abs(np.asarray(want, np.float64)))
    return float(diff.max()), float((diff / scale).max())


#: Observations recorded for the parity check at export.
PARITY_OBSERVATIONS = 1024
ONNX_OPSET = 17


class ExportError(ValueError):
    """A policy that cannot be exported (one line naming why)."""


def resolve_policy_dir(source: str | Path) -> Path:
    """The folder holding ``policy.json`` + ``params.msgpack`` for ``source``.

    Accepts that folder, a ``marl-robots train`` run folder (its ``policy/``), or the name of a
    shipped policy (``policies/<name>``, found by ``core.paths``).

    Raises:
        FileNotFoundError: naming what was looked for.
    """
    path = Path(source)
    for cand in (path, path / "policy"):
        if (cand / "policy.json").is_file() and (cand / "params.msgpack").is_file():
            return cand
    from marl_robots.core.paths import content_path  # noqa: PLC0415

    try:
        shipped = Path(content_path("policies", str(source)))
    except FileNotFoundError:
        shipped = None
    if shipped is not None:
        for cand in (shipped, shipped / "policy"):
            if (cand / "policy.json").is_file() and (cand / "params.msgpack").is_file():
                return cand
    raise FileNotFoundError(
        f"no policy {str(source)!r}: expected a folder with policy.json and params.msgpack "
        "(marl-robots train's --out or its policy/), or the name of a shipped policy"
    )


def load_trained(source):
    """``(policy, params, meta, env, env_params, folder)`` of a trained policy folder."""
    from marl_robots.policies.mappo import TrainConfig, load_policy  # noqa: PLC0415
    from marl_robots.sim.env import NavigationEnv  # noqa: PLC0415

    folder = resolve_policy_dir(source)
    meta = json.loads((folder / "policy.json").read_text())
    if meta.get("policy") not in bd.ACTION_KINDS:
        raise ExportError(
            f"policy {meta.get('policy')!r} in {folder} has no network to export; "
            f"exportable kinds: {', '.join(bd.ACTION_KINDS)}"
        )
    config = TrainConfig.from_json(meta["train_config"])
    env = NavigationEnv(config.env_config())
    env_params = env.default_params()
    policy, params, meta = load_policy(folder, env, env_params)
    return policy, params, meta, env, env_params, folder


def _layers(params: dict) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    net = params["net"]["params"]
    return {
        name: (
            np.asarray(net[name]["kernel"], np.float32),
            np.asarray(net[name]["bias"], np.float32),
        )
        for name in bd.GNN_LAYERS
        if name in net
    }


def build_manifest(policy, params, meta, env, env_params, folder: Path) -> dict:
    """The manifest of ``policies.bundle`` (weights and parity filled in by ``export``)."""
    layout = env.obs_layout
    cfg = env.config
    layers = _layers(params)
    robot = env_params.robot
    kind = policy.name
    nominal = None
    if kind == "gnn":
        v = float(policy.v_max)
        residual = float(getattr(policy, "residual", 0.0))
        action = {
            "kind": "velocity",
            "dim": layout.d,
            "units": "m/s",
            "frame": "world-aligned, control point",
            "low": [-v] * layout.d,
            "high": [v] * layout.d,
            "map": "v_max * tanh(raw)",
            "offset": 0.0,
            "residual": residual,
        }
        if residual:
            action["map"] = "clip(go_to_goal(obs) + residual * v_max * tanh(raw), -v_max, v_max)"
            nominal = _nominal_spec(policy.nominal)
    else:
        lo, hi = (float(b) for b in policy.bounds)
        action = {
            "kind": "class_k_gain",
            "dim": 1,
            "units": "1/s",
            "low": [lo],
            "high": [hi],
            "map": "exp(log lo + (log hi - log lo) * sigmoid(raw + offset))",
            "offset": float(policy._offset),
            "nominal": "cooperative go-to-goal (controllers.nominal), as controller_node",
        }
    metrics = {}
    for name in ("metrics.json", "eval.json"):
        if (folder / name).is_file():
            metrics = json.loads((folder / name).read_text())
    metrics = metrics or meta.get("eval", {})
    return {
        "schema_version": bd.SCHEMA_VERSION,
        "policy": kind,
        "robot": {
            "family": cfg.task.robot,
            "params": {k: float(v) for k, v in robot._asdict().items()},
        },
        "observation": {
            "dim": layout.dim,
            "dtype": "float32",
            "d": layout.d,
            "neighbours": layout.k,
            "obstacle_slots": layout.m,
            "sensing_radius_m": float(cfg.sensing_radius_m),
            "dt_s": float(cfg.task.dt_s),
            "arena_m": [float(a) for a in cfg.task.arena_m],
            "velocity": "control-point displacement over the last period / dt_s",
            "fields": bd.obs_fields(layout.d, layout.k, layout.m),
            "normalisation": {
                "mean": [float(x) for x in np.asarray(params["obs_mean"])],
                "std": [float(x) for x in np.asarray(params["obs_std"])],
                "clip": 10.0,
                "formula": "clip((obs - mean) / std, -clip, clip)",
            },
        },
        "action": action,
        "nominal": nominal,
        "network": {
            "arch": "attention_gnn",
            "hidden": int(layers["self_in"][0].shape[1]),
            "out_dim": int(layers["out"][0].shape[1]),
            "layers": {name: list(k.shape) for name, (k, _) in layers.items()},
        },
        "filter": {
            "gamma": float(np.asarray(env_params.cbf.gamma).reshape(-1)[0]),
            "gamma_bounds": list(defaults.GAMMA_BOUNDS),
            "class_k": defaults.CLASS_K,
            "safety_distance_m": defaults.SAFETY_DISTANCE_M,
            "dt_s": float(cfg.task.dt_s),
            "neighbours": int(cfg.neighbours),
            "sensing_radius_m": float(cfg.sensing_radius_m),
        },
        "training": {"config": meta.get("train_config", {}), **meta.get("training", {})},
        "metrics": metrics,
        "weights": {},
    }


def _nominal_spec(nominal) -> dict:
    """Constants of the cooperative go-to-goal a residual policy adds its correction to."""
    from marl_robots.policies.heuristic import CONTROL_DEFAULTS  # noqa: PLC0415

    return {
        "function": "controllers.nominal.cooperative_go_to_goal on the observation",
        "safety_distance_m": float(nominal.safety_distance),
        "obstacle_margin_m": float(nominal.obstacle_margin),
        "goal_gain": float(nominal.gain),
        "v_max": float(nominal.v_max),
        "bias": float(CONTROL_DEFAULTS.bias),
        "make_way": float(CONTROL_DEFAULTS.make_way),
        "make_way_radius_m": float(nominal.make_way_radius),
    }


def torch_state_dict(params: dict) -> dict:
    """State dict of ``runtime.torch_module``: nn.Linear weights [out, in], biases, stats."""
    import torch  # noqa: PLC0415 - needed for --format torch only

    state = {}
    for name, (k, b) in _layers(params).items():
        state[f"{name}.weight"] = torch.from_numpy(np.array(k.T, np.float32))
        state[f"{name}.bias"] = torch.from_numpy(b.copy())
    state["obs_mean"] = torch.from_numpy(np.asarray(params["obs_mean"], np.float32).copy())
    state["obs_std"] = torch.from_numpy(np.asarray(params["obs_std"], np.float32).copy())
    return state


def onnx_model(manifest: dict, params: dict):
    """The bundle's network as an ``onnx.ModelProto`` (obs [B, dim] -> action [B, a])."""
    import onnx  # noqa: PLC0415 - needed for --format onnx only
    from onnx import TensorProto, helper, numpy_helper  # noqa: PLC0415

    o, a = manifest["observation"], manifest["action"]
    d, k, m, dim = o["d"], o["neighbours"], o["obstacle_slots"], o["dim"]
    layers = _layers(params)
    hidden = manifest["network"]["hidden"]
    inits, nodes = [], []
    count = [0]

    def const(value, dtype=np.float32) -> str:
        count[0] += 1
        name = f"c{count[0]}"
        inits.append(numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def op(kind: str, inputs, **attrs) -> str:
        count[0] += 1
        out = f"t{count[0]}"
        nodes.append(helper.make_node(kind, list(inputs), [out], **attrs))
        return out

    def dense(x: str, name: str, kernel=None) -> str:
        k_, b_ = layers[name]
        return op("Add", [op("MatMul", [x, const(k_ if kernel is None else kernel)]), const(b_)])

    def cols(x: str, start: int, stop: int, axis: int) -> str:
        return op(
            "Slice",
            [x, const([start], np.int64), const([stop], np.int64), const([axis], np.int64)],
        )

    norm = o["normalisation"]
    x = op(
        "Clip",
        [
            op("Div", [op("Sub", ["obs", const(norm["mean"])]), const(norm["std"])]),
            const(-norm["clip"]),
            const(norm["clip"]),
        ],
    )
    self_dim, nbr_dim, obst_dim = 4 * d, 2 * d + 1, d + 2
    h = op("Tanh", [dense(cols(x, 0, self_dim, 1), "self_in")])
    h = op("Tanh", [dense(h, "self_hidden")])

    def entities(start: int, count_: int, size: int, mask_col: int, layer: str):
        def slots(src: str) -> str:
            flat = cols(src, start, start + count_ * size, 1)
            return op("Reshape", [flat, const([-1, count_, size], np.int64)])

        # The mask flags are read from the raw observation (normalised, they are not 0/1).
        raw_ent = slots("obs")
        flag = op("Squeeze", [cols(raw_ent, mask_col, mask_col + 1, 2), const([2], np.int64)])
        return dense(slots(x), layer), op("Greater", [flag, const(0.5)])

    e_nbr, m_nbr = entities(self_dim, k, nbr_dim, 2 * d, "nbr_in")
    if m:
        e_obst, m_obst = entities(self_dim + k * nbr_dim, m, obst_dim, d + 1, "obst_in")
        e = op("Concat", [e_nbr, e_obst], axis=1)
        mask = op("Concat", [m_nbr, m_obst], axis=1)
    else:
        e, mask = e_nbr, m_nbr
    w_msg, b_msg = layers["msg"]
    h_part = op("Unsqueeze", [op("MatMul", [h, const(w_msg[:hidden])]), const([1], np.int64)])
    e_part = op("MatMul", [op("Tanh", [e]), const(w_msg[hidden:])])
    msg = op("Tanh", [op("Add", [op("Add", [h_part, e_part]), const(b_msg)])])
    logits = op("Squeeze", [dense(msg, "attn"), const([2], np.int64)])
    logits = op("Where", [mask, logits, const(-1e9)])
    top = op("ReduceMax", [logits], axes=[1], keepdims=1)
    maskf = op("Cast", [mask], to=TensorProto.FLOAT)
    w = op("Mul", [op("Exp", [op("Sub", [logits, top])]), maskf])
    total = op("ReduceSum", [w, const([1], np.int64)], keepdims=1)
    w = op("Div", [w, op("Max", [total, const(1e-9)])])
    weighted = op("Mul", [op("Unsqueeze", [w, const([2], np.int64)]), dense(msg, "value")])
    pooled = op("ReduceSum", [weighted, const([1], np.int64)], keepdims=0)
    z = op("Tanh", [dense(op("Concat", [h, pooled], axis=1), "out_hidden")])
    raw = dense(z, "out")
    if manifest["policy"] == "gnn":
        scale = float(a.get("residual") or 1.0) * manifest["robot"]["params"]["v_max"]
        head = op("Mul", [op("Tanh", [raw]), const(scale)])
    else:
        lo, hi = (math.log(float(v)) for v in manifest["filter"]["gamma_bounds"])
        sig = op("Sigmoid", [op("Add", [raw, const(a["offset"])])])
        head = op("Exp", [op("Add", [op("Mul", [sig, const(hi - lo)]), const(lo)])])
    nodes.append(helper.make_node("Identity", [head], ["action"]))
    graph = helper.make_graph(
        nodes,
        f"marl_robots_{manifest['policy']}",
        [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["batch", dim])],
        [helper.make_tensor_value_info("action", TensorProto.FLOAT, ["batch", a["dim"]])],
        inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)], producer_name="marl_robots"
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


_RECORDERS: dict = {}


def record_observations(
    env, policy, params, env_params, count: int, seed: int = 0, steps: int = 40
):
    """Observations (and the states behind them) of the policy's own rollouts.

    Runs ``ceil(count / (n steps))`` episodes of ``steps`` periods with the policy behind the
    env's safety filter (``wrappers.SafetyFilter``), keeping every robot's observation.  The
    compiled program is cached per (env config, policy class and options, episodes, steps).

    Returns:
        dict of NumPy arrays with leading axes [T = steps + 1, E]: ``obs`` [T, E, n, dim],
        ``points``/``vel``/``goal`` [T, E, n, d], ``obstacles`` [T, E, O, d + 1],
        ``obstacle_mask`` [T, E, O].
    """
    from marl_robots.sim import wrappers as wr  # noqa: PLC0415

    episodes = max(1, math.ceil(count / (env.n * steps)))
    kwargs = policy.kwargs() if hasattr(policy, "kwargs") else {}
    cache_key = (
        env.config,
        type(policy).__name__,
        json.dumps(kwargs, sort_keys=True),
        episodes,
        steps,
    )
    if cache_key not in _RECORDERS:
        wenv = wr.SafetyFilter(wr.Vmap(env, episodes))

        def pick(s):
            return {
                "obs": s.obs,
                "points": s.sensing.points,
                "vel": s.sensing.vel,
                "goal": s.task.goal,
                "obstacles": s.task.obstacles,
                "obstacle_mask": s.task.obstacle_mask,
            }

        def run(key, params, env_params):
            s0 = wenv.reset(key, env_params)

            def body(s, _):
                s = wenv.step(s, policy.apply(params, s.obs), env_params)
                return s, pick(s)

            _, trace = jax.lax.scan(body, s0, None, length=steps)
            return jax.tree_util.tree_map(
                lambda a, b: jnp.concatenate([a[None], b]), pick(s0), trace
            )

        _RECORDERS[cache_key] = jax.jit(run)
    out = _RECORDERS[cache_key](jax.random.PRNGKey(seed), params, env_params)
    return jax.tree_util.tree_map(np.asarray, out)


def jax_actions(policy, params, obs: np.ndarray) -> np.ndarray:
    """The JAX policy's bounded output [B, a] for obs [B, dim] (gain as [B, 1])."""
    out = policy.apply(params, jnp.asarray(obs))
    if isinstance(out, dict):
        return np.asarray(out["gamma"])[:, None]
    return np.asarray(out)


def write_bundle(out, manifest: dict, params: dict, formats=("onnx", "torch")) -> Path:
    """Write the weight files of ``formats`` and ``manifest`` (with their hashes) into ``out``.

    No parity check (``export`` adds it); tests use this to build bundles without rollouts.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if "onnx" in formats:
        import onnx  # noqa: PLC0415

        onnx.save(onnx_model(manifest, params), str(out / bd.WEIGHT_FILES["onnx"]))
    if "torch" in formats:
        import torch  # noqa: PLC0415

        torch.save(torch_state_dict(params), out / bd.WEIGHT_FILES["torch"])
    for fmt in formats:
        path = out / bd.WEIGHT_FILES[fmt]
        manifest["weights"][fmt] = {
            "file": path.name,
            "sha256": bd.sha256(path),
            "bytes": path.stat().st_size,
        }
    (out / bd.MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return out


def export(
    source,
    out: Path,
    formats=("onnx", "torch"),
    observations: int = PARITY_OBSERVATIONS,
    seed: int = 0,
    record: dict | None = None,
) -> dict:
    """Write the bundle of ``source`` into ``out``; returns its manifest.

    ``record``: observations already recorded (``record_observations``) for the parity check.

    Raises:
        FileNotFoundError: no such policy; ExportError: not exportable, or a backend's output
            differs from JAX by more than ``PARITY_ATOL``.
    """
    from marl_robots.policies.runtime import load_bundle  # noqa: PLC0415

    policy, params, meta, env, env_params, folder = load_trained(source)
    manifest = build_manifest(policy, params, meta, env, env_params, folder)
    out = write_bundle(out, manifest, params, formats)
    rec = record or record_observations(env, policy, params, env_params, observations, seed)
    obs = rec["obs"].reshape(-1, manifest["observation"]["dim"])[: max(observations, 1)]
    want = jax_actions(policy, params, obs)
    errors = {}
    for fmt in formats:
        got = load_bundle(out, backend=fmt)(obs)
        errors[fmt] = parity_errors(got, want)
    manifest["parity"] = {
        "observations": int(obs.shape[0]),
        "atol": PARITY_ATOL,
        "tolerance": "max |JAX - backend| / max(1, |JAX|) <= atol",
        "max_abs_error": {f: e[0] for f, e in errors.items()},
        "max_scaled_error": {f: e[1] for f, e in errors.items()},
        "source": "env rollouts behind the filter",
    }
    (out / bd.MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    bad = {f: e[1] for f, e in errors.items() if not e[1] <= PARITY_ATOL}
    if bad:
        raise ExportError(
            f"exported {', '.join(bad)} differ from JAX by {max(bad.values()):.3g} > "
            f"{PARITY_ATOL} on {obs.shape[0]} observations"
        )
    return manifest
