"""Onboard policy runtime: run a policy bundle with ONNX Runtime or PyTorch, no JAX, no flax.

::

    policy = load_bundle("bundles/corridor_gnn", robot="unicycle", d=2, neighbours=6,
                         obstacle_slots=2)          # checks everything, or raises BundleError
    action = policy(obs)                            # obs [B, obs_dim] -> [B, action.dim]

Before the first inference ``load_bundle`` checks, each failure a ``BundleError`` whose one-line
message names the problem: the manifest's schema version and fields (``bundle``); the robot
family and observation layout against this robot's (when given); the SHA-256 of every weight
file against the manifest; that the weights load and have the shapes the manifest describes;
and one inference on a zero observation that must give a finite action of the right shape.

The network is the attention GNN of ``policies.gnn`` (its forward pass is spelled out in
``TorchGNN.forward``), with the observation normalisation in front and the bounded head behind:
a ``gnn`` bundle outputs the nominal control-point velocity ``v_max tanh(raw)`` [m/s], a
``cbf-tuning`` bundle the class-K gain ``exp(log lo + (log hi - log lo) sigmoid(raw + offset))``
[1/s] within ``filter.gamma_bounds``.  ``backend="onnx"`` runs ``policy.onnx``,
``backend="torch"`` rebuilds the module from the manifest and loads ``policy.pt``; the default
is ONNX Runtime when it is installed, else PyTorch.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np

from marl_robots.policies.bundle import (
    WEIGHT_FILES,
    BundleError,
    check_compatible,
    load_manifest,
    verify_files,
)

BACKENDS = ("onnx", "torch")


def available_backends() -> list[str]:
    """Installed backends, preferred first (``onnx`` needs onnxruntime, ``torch`` PyTorch)."""
    found = {"onnx": "onnxruntime", "torch": "torch"}
    return [b for b in BACKENDS if importlib.util.find_spec(found[b]) is not None]


def torch_module(manifest: dict):
    """A ``torch.nn.Module`` of the bundle's network (weights not loaded)."""
    import torch  # noqa: PLC0415 - optional backend

    o, a, net = manifest["observation"], manifest["action"], manifest["network"]
    d, k, m = o["d"], o["neighbours"], o["obstacle_slots"]
    layers = net["layers"]
    kind, offset = manifest["policy"], float(a["offset"])
    v_max = float(manifest["robot"]["params"]["v_max"]) * float(a.get("residual") or 1.0)
    lo, hi = (math.log(float(v)) for v in manifest["filter"]["gamma_bounds"])
    clip = float(o["normalisation"]["clip"])
    dim = o["dim"]

    class TorchGNN(torch.nn.Module):
        """``policies.gnn.GNN`` with normalisation and bounded head, in PyTorch."""

        def __init__(self) -> None:
            super().__init__()
            for name, (n_in, n_out) in layers.items():
                self.add_module(name, torch.nn.Linear(n_in, n_out))
            self.register_buffer("obs_mean", torch.zeros(dim))
            self.register_buffer("obs_std", torch.ones(dim))

        def forward(self, obs):
            x = torch.clamp((obs - self.obs_mean) / self.obs_std, -clip, clip)
            self_dim, nbr_dim, obst_dim = 4 * d, 2 * d + 1, d + 2
            h = torch.tanh(self.self_in(x[:, :self_dim]))
            h = torch.tanh(self.self_hidden(h))
            i1 = self_dim + k * nbr_dim
            nbr = x[:, self_dim:i1].reshape(-1, k, nbr_dim)
            # The mask flags are read from the raw observation (normalised, they are not 0/1).
            raw_nbr = obs[:, self_dim:i1].reshape(-1, k, nbr_dim)
            ents, masks = [self.nbr_in(nbr)], [raw_nbr[..., 2 * d] > 0.5]
            if m:
                obst = x[:, i1 : i1 + m * obst_dim].reshape(-1, m, obst_dim)
                raw_obst = obs[:, i1 : i1 + m * obst_dim].reshape(-1, m, obst_dim)
                ents.append(self.obst_in(obst))
                masks.append(raw_obst[..., d + 1] > 0.5)
            e = torch.cat(ents, dim=1)
            mask = torch.cat(masks, dim=1)
            hb = h[:, None, :].expand(-1, e.shape[1], -1)
            msg = torch.tanh(self.msg(torch.cat([hb, torch.tanh(e)], dim=-1)))
            logits = self.attn(msg)[..., 0]
            logits = torch.where(mask, logits, torch.full_like(logits, -1e9))
            w = torch.exp(logits - logits.max(dim=-1, keepdim=True).values) * mask
            w = w / torch.clamp(w.sum(dim=-1, keepdim=True), min=1e-9)
            pooled = (w[..., None] * self.value(msg)).sum(dim=1)
            z = torch.tanh(self.out_hidden(torch.cat([h, pooled], dim=-1)))
            raw = self.out(z)
            if kind == "gnn":
                return v_max * torch.tanh(raw)
            return torch.exp(lo + (hi - lo) * torch.sigmoid(raw + offset))

    return TorchGNN()


class OnboardPolicy:
    """A loaded, checked bundle: ``policy(obs [B, obs_dim]) -> action [B, action.dim]``.

    Attributes:
        manifest: the bundle's manifest; backend: ``onnx`` or ``torch``; path: the folder.
    """

    def __init__(self, path: Path, manifest: dict, backend: str, run) -> None:
        self.path, self.manifest, self.backend = Path(path), manifest, backend
        self._run = run
        self._residual = bool(manifest["action"].get("residual"))
        self._v_max = np.float32(manifest["robot"]["params"]["v_max"])

    @property
    def kind(self) -> str:
        """``gnn`` or ``cbf-tuning``."""
        return self.manifest["policy"]

    @property
    def obs_dim(self) -> int:
        """Observation size."""
        return int(self.manifest["observation"]["dim"])

    def __call__(self, obs) -> np.ndarray:
        """Bounded actions [B, action.dim] (float32) for observations [B, obs_dim]."""
        obs = np.ascontiguousarray(obs, dtype=np.float32)
        if obs.ndim != 2 or obs.shape[1] != self.obs_dim:
            raise ValueError(f"observation shape {obs.shape}, expected (B, {self.obs_dim})")
        out = self._run(obs)
        if self._residual:
            # One robot (onboard, every period): plain floats beat NumPy on a few elements.
            base = (go_to_goal_one_from_obs(self.manifest, obs[0])[None] if len(obs) == 1
                    else go_to_goal_from_obs(self.manifest, obs))
            out = np.clip(base + out, -self._v_max, self._v_max)
        return out


def go_to_goal_from_obs(manifest: dict, obs: np.ndarray) -> np.ndarray:
    """Cooperative go-to-goal [B, d] [m/s] from observations [B, dim] (``manifest['nominal']``).

    NumPy twin of ``policies.heuristic.go_to_goal_from_obs`` (float32, as the JAX policy).
    """
    from marl_robots.controllers import nominal  # noqa: PLC0415 - NumPy only

    o, c = manifest["observation"], manifest["nominal"]
    d, k, m = o["d"], o["neighbours"], o["obstacle_slots"]
    i0 = 4 * d
    nbr = obs[:, i0 : i0 + k * (2 * d + 1)].reshape(-1, k, 2 * d + 1)
    i1 = i0 + k * (2 * d + 1)
    obst = obs[:, i1 : i1 + m * (d + 2)].reshape(-1, m, d + 2)
    goal = obs[:, :d]
    f32 = np.float32
    return nominal.cooperative_go_to_goal(
        np.zeros_like(goal),
        goal,
        nbr[..., :d],
        nbr[..., 2 * d] > 0.5,
        np.concatenate([obst[..., :d], obst[..., d : d + 1]], axis=-1),
        obst[..., d + 1] > 0.5,
        f32(c["safety_distance_m"]),
        f32(c["obstacle_margin_m"]),
        f32(c["goal_gain"]),
        f32(c["v_max"]),
        c["bias"],
        c["make_way"],
        f32(c["make_way_radius_m"]),
        xp=np,
    ).astype(np.float32)


def go_to_goal_one_from_obs(manifest: dict, row: np.ndarray) -> np.ndarray:
    """``go_to_goal_from_obs`` of one observation row [dim] -> [d] (float32), in Python floats.

    ``nominal.cooperative_go_to_goal_one``; 2D only, else (or on non-finite input) the array
    version.
    """
    from marl_robots.controllers import nominal  # noqa: PLC0415 - NumPy only

    o, c = manifest["observation"], manifest["nominal"]
    d, k, m = o["d"], o["neighbours"], o["obstacle_slots"]
    values = row.tolist()
    if d != 2 or not all(map(math.isfinite, values)):
        return go_to_goal_from_obs(manifest, row[None])[0]
    i0 = 4 * d
    nbr = [values[i0 + 5 * j : i0 + 5 * j + 2] for j in range(k) if values[i0 + 5 * j + 4] > 0.5]
    i1 = i0 + 5 * k
    obst = [values[i1 + 4 * j : i1 + 4 * j + 3] for j in range(m) if values[i1 + 4 * j + 3] > 0.5]
    u = nominal.cooperative_go_to_goal_one(
        values[:2], nbr, obst, c["safety_distance_m"], c["obstacle_margin_m"], c["goal_gain"],
        c["v_max"], c["bias"], c["make_way"], c["make_way_radius_m"])
    return np.asarray(u, np.float32)


def _onnx_runner(path: Path, manifest: dict):
    import onnxruntime as ort  # noqa: PLC0415 - optional backend

    file = manifest["weights"]["onnx"]["file"]
    try:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
        opts.log_severity_level = 4
        session = ort.InferenceSession(str(path / file), opts, providers=["CPUExecutionProvider"])
    except Exception as err:  # noqa: BLE001 - ORT raises its own exception types
        raise BundleError(
            f"weight file {file} cannot be loaded by ONNX Runtime: "
            f"{' '.join(str(err).split())[:200]}"
        ) from None
    inputs, outputs = session.get_inputs(), session.get_outputs()
    dim, a_dim = manifest["observation"]["dim"], manifest["action"]["dim"]
    if len(inputs) != 1 or inputs[0].shape[-1] != dim:
        raise BundleError(
            f"weight file {file}: graph input {[i.shape for i in inputs]} does not "
            f"take the manifest's observation (B, {dim})"
        )
    if len(outputs) != 1 or outputs[0].shape[-1] != a_dim:
        raise BundleError(
            f"weight file {file}: graph output {[o.shape for o in outputs]} is "
            f"not the manifest's action (B, {a_dim})"
        )
    name = inputs[0].name
    return lambda obs: session.run(None, {name: obs})[0]


def _torch_runner(path: Path, manifest: dict):
    import torch  # noqa: PLC0415 - optional backend

    file = manifest["weights"]["torch"]["file"]
    try:
        state = torch.load(path / file, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for a bad file
        raise BundleError(
            f"weight file {file} cannot be loaded by PyTorch: {' '.join(str(err).split())[:200]}"
        ) from None
    module = torch_module(manifest)
    want = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    if not isinstance(state, dict):
        raise BundleError(f"weight file {file} is not a state dict")
    got = {k: tuple(v.shape) for k, v in state.items() if hasattr(v, "shape")}
    for key in sorted(set(want) | set(got)):
        if want.get(key) != got.get(key):
            raise BundleError(
                f"weight file {file}: tensor {key!r} has shape {got.get(key)}, "
                f"the manifest's network needs {want.get(key)}"
            )
    module.load_state_dict(state)
    module.eval()
    torch.set_num_threads(1)

    def run(obs):
        with torch.inference_mode():
            return module(torch.tensor(obs)).numpy()

    return run


def load_bundle(
    path,
    backend: str | None = None,
    robot: str | None = None,
    d: int | None = None,
    neighbours: int | None = None,
    obstacle_slots: int | None = None,
) -> OnboardPolicy:
    """Load and check a bundle (see the module docstring for the checks).

    Args:
        path: the bundle folder.
        backend: ``onnx``, ``torch`` or ``None`` (the first installed that the bundle has).
        robot, d, neighbours, obstacle_slots: this robot's family and observation layout;
            when given the bundle must match them.

    Raises:
        BundleError: one line naming the problem.
    """
    path = Path(path)
    manifest = load_manifest(path)
    if robot is not None:
        o = manifest["observation"]
        check_compatible(
            manifest,
            robot,
            o["d"] if d is None else d,
            o["neighbours"] if neighbours is None else neighbours,
            o["obstacle_slots"] if obstacle_slots is None else obstacle_slots,
        )
    verify_files(path, manifest)
    have = [b for b in available_backends() if b in manifest["weights"]]
    if backend is not None:
        if backend not in WEIGHT_FILES:
            raise BundleError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")
        if backend not in manifest["weights"]:
            raise BundleError(
                f"bundle {path} has no {backend} weights (it has {', '.join(manifest['weights'])})"
            )
        if backend not in available_backends():
            raise BundleError(
                f"backend {backend!r} is not installed "
                f"(pip install {'onnxruntime' if backend == 'onnx' else 'torch'})"
            )
    elif not have:
        raise BundleError(
            f"no installed backend can run bundle {path} (it has "
            f"{', '.join(manifest['weights'])}; install onnxruntime or torch)"
        )
    chosen = backend or have[0]
    run = (_onnx_runner if chosen == "onnx" else _torch_runner)(path, manifest)
    policy = OnboardPolicy(path, manifest, chosen, run)
    # One inference before the first real one: a finite action of the right shape.
    mean = np.asarray(manifest["observation"]["normalisation"]["mean"], np.float32)[None]
    out = policy(mean)
    if out.shape != (1, manifest["action"]["dim"]) or not np.all(np.isfinite(out)):
        raise BundleError(
            f"bundle {path}: a test inference gave {out.shape} {out.tolist()}, "
            f"not a finite action of size {manifest['action']['dim']}"
        )
    return policy
