"""Policy bundle format: a self-describing folder a robot loads without JAX.

A bundle (written by ``marl-robots export``, read by ``policies.runtime``) is a folder::

    manifest.json      what the weights are, what they expect and what they output
    policy.onnx        the network as an ONNX graph (ONNX Runtime)
    policy.pt          the network's weights as a PyTorch state dict (``torch.load``,
                       ``weights_only=True``); the runtime rebuilds the module from the manifest

``manifest.json`` (schema version ``SCHEMA_VERSION``)::

    schema_version       int
    policy               "gnn" (nominal velocity command) | "cbf-tuning" (class-K gain)
    robot                {family: a name in sim.robots.ROBOTS, params: {diameter_m, v_max, ...}}
    observation          {dim, dtype, d, neighbours, obstacle_slots, sensing_radius_m, dt_s,
                          arena_m, fields: [{name, size, units}...] in order,
                          normalisation: {mean [dim], std [dim], clip}}
    action               {kind: velocity | class_k_gain, dim, units, low [dim], high [dim],
                          map: how the network output is bounded, offset}
    network              {arch: attention_gnn, hidden, out_dim, layers: {name: [in, out]}}
    filter               {gamma, gamma_bounds, class_k, safety_distance_m, dt_s, neighbours,
                          sensing_radius_m}
    training             the training config and summary of the run
    metrics              evaluation metrics when the policy folder had them, else {}
    weights              {onnx|torch: {file, sha256, bytes}}
    parity               max |JAX - backend| over recorded observations, measured at export

Everything here is plain Python (no JAX, no torch): ``check_manifest`` validates a manifest
and ``verify_files`` the weight files' hashes, each raising ``BundleError`` with one line that
names the problem.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

#: Version of the manifest layout this code writes and reads.
SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
#: Weight formats and their file names.
WEIGHT_FILES = {"onnx": "policy.onnx", "torch": "policy.pt"}
#: Kinds of policy a bundle may hold, and what their output is.
ACTION_KINDS = {"gnn": "velocity", "cbf-tuning": "class_k_gain"}
#: Layers of the attention GNN (``policies.gnn.GNN``), in forward order.
GNN_LAYERS = (
    "self_in",
    "self_hidden",
    "nbr_in",
    "obst_in",
    "msg",
    "attn",
    "value",
    "out_hidden",
    "out",
)

#: Fields every manifest must have (dotted paths).
REQUIRED = (
    "schema_version",
    "policy",
    "robot.family",
    "robot.params",
    "observation.dim",
    "observation.d",
    "observation.neighbours",
    "observation.obstacle_slots",
    "observation.sensing_radius_m",
    "observation.dt_s",
    "observation.fields",
    "observation.normalisation.mean",
    "observation.normalisation.std",
    "observation.normalisation.clip",
    "action.kind",
    "action.dim",
    "action.low",
    "action.high",
    "action.offset",
    "network.arch",
    "network.hidden",
    "network.out_dim",
    "network.layers",
    "filter.gamma",
    "filter.gamma_bounds",
    "weights",
)


class BundleError(ValueError):
    """A bundle that cannot be used; the message names the problem in one line."""


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _get(manifest: dict, dotted: str):
    node = manifest
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(dotted)
        node = node[part]
    return node


def obs_dim(d: int, k: int, m: int) -> int:
    """Observation size of ``sim.env.ObsLayout(d, k, m)``.

    Own features 4d, per neighbour 2d + 1, per obstacle d + 2.
    """
    return 4 * d + k * (2 * d + 1) + m * (d + 2)


def obs_fields(d: int, k: int, m: int) -> list[dict]:
    """The observation's fields in order, with sizes and units (``sim.env`` module doc)."""
    fields = [
        {"name": "goal_offset", "size": d, "units": "m"},
        {"name": "velocity", "size": d, "units": "m/s"},
        {"name": "wall_distance_lower", "size": d, "units": "m"},
        {"name": "wall_distance_upper", "size": d, "units": "m"},
    ]
    for j in range(k):
        fields += [
            {"name": f"neighbour_{j}_rel_position", "size": d, "units": "m"},
            {"name": f"neighbour_{j}_rel_velocity", "size": d, "units": "m/s"},
            {"name": f"neighbour_{j}_mask", "size": 1, "units": "1"},
        ]
    for j in range(m):
        fields += [
            {"name": f"obstacle_{j}_rel_centre", "size": d, "units": "m"},
            {"name": f"obstacle_{j}_radius", "size": 1, "units": "m"},
            {"name": f"obstacle_{j}_mask", "size": 1, "units": "1"},
        ]
    return fields


def load_manifest(bundle: Path) -> dict:
    """Read and check ``bundle/manifest.json`` (see ``check_manifest``).

    Raises:
        BundleError: no bundle, unreadable or invalid manifest (one line naming why).
    """
    bundle = Path(bundle)
    path = bundle / MANIFEST
    if not bundle.is_dir():
        raise BundleError(f"bundle {bundle} not found (expected a folder with {MANIFEST})")
    if not path.is_file():
        raise BundleError(f"{bundle} is not a policy bundle: no {MANIFEST}")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BundleError(f"{path}: not valid JSON ({err})") from None
    check_manifest(manifest, str(path))
    return manifest


def check_manifest(manifest, where: str = MANIFEST) -> None:
    """Validate a manifest's schema version, fields and internal consistency.

    Raises:
        BundleError: the first problem, e.g. an unknown schema version, a missing field, an
            observation size that disagrees with its layout.
    """
    if not isinstance(manifest, dict):
        raise BundleError(f"{where}: expected a JSON object")
    version = manifest.get("schema_version")
    if version is None:
        raise BundleError(f"{where}: missing field 'schema_version'")
    if version != SCHEMA_VERSION:
        raise BundleError(
            f"{where}: unknown schema version {version!r} (this runtime reads "
            f"version {SCHEMA_VERSION}); re-export the policy with this version"
        )
    for field in REQUIRED:
        try:
            _get(manifest, field)
        except KeyError:
            raise BundleError(f"{where}: missing field '{field}'") from None
    kind = manifest["policy"]
    if kind not in ACTION_KINDS:
        raise BundleError(
            f"{where}: unknown policy kind {kind!r}; known: {', '.join(ACTION_KINDS)}"
        )
    if manifest["action"]["kind"] != ACTION_KINDS[kind]:
        raise BundleError(
            f"{where}: action.kind {manifest['action']['kind']!r} does not fit "
            f"policy {kind!r} (expected {ACTION_KINDS[kind]!r})"
        )
    o = manifest["observation"]
    want = obs_dim(o["d"], o["neighbours"], o["obstacle_slots"])
    if o["dim"] != want:
        raise BundleError(
            f"{where}: observation.dim {o['dim']} differs from its layout "
            f"(d={o['d']}, neighbours={o['neighbours']}, "
            f"obstacle_slots={o['obstacle_slots']} -> {want})"
        )
    norm = o["normalisation"]
    for key in ("mean", "std"):
        values = norm[key]
        if not isinstance(values, list) or len(values) != want:
            raise BundleError(f"{where}: observation.normalisation.{key} must have {want} values")
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
            raise BundleError(f"{where}: observation.normalisation.{key} has non-finite values")
    if not all(v > 0 for v in norm["std"]):
        raise BundleError(f"{where}: observation.normalisation.std must be positive")
    a = manifest["action"]
    if a.get("residual"):
        for key in (
            "safety_distance_m",
            "obstacle_margin_m",
            "goal_gain",
            "v_max",
            "bias",
            "make_way",
            "make_way_radius_m",
        ):
            if not isinstance(manifest.get("nominal"), dict) or key not in manifest["nominal"]:
                raise BundleError(f"{where}: missing field 'nominal.{key}' (residual policy)")
    if len(a["low"]) != a["dim"] or len(a["high"]) != a["dim"]:
        raise BundleError(f"{where}: action.low/high must have action.dim = {a['dim']} values")
    lo, hi = manifest["filter"]["gamma_bounds"]
    if not 0 < lo < hi:
        raise BundleError(f"{where}: filter.gamma_bounds must be 0 < low < high, got {lo, hi}")
    if manifest["network"]["arch"] != "attention_gnn":
        raise BundleError(f"{where}: unknown network.arch {manifest['network']['arch']!r}")
    weights = manifest["weights"]
    if not isinstance(weights, dict) or not weights:
        raise BundleError(f"{where}: 'weights' lists no weight file")
    for fmt, entry in weights.items():
        if fmt not in WEIGHT_FILES:
            raise BundleError(
                f"{where}: unknown weight format {fmt!r}; known: {', '.join(WEIGHT_FILES)}"
            )
        for key in ("file", "sha256"):
            if not isinstance(entry, dict) or key not in entry:
                raise BundleError(f"{where}: missing field 'weights.{fmt}.{key}'")


def verify_files(bundle: Path, manifest: dict, formats=None) -> None:
    """Check that each weight file (of ``formats``, default all) exists and matches its hash.

    Raises:
        BundleError: naming the file and both hashes on a mismatch.
    """
    for fmt, entry in manifest["weights"].items():
        if formats is not None and fmt not in formats:
            continue
        path = Path(bundle) / entry["file"]
        if not path.is_file():
            raise BundleError(f"bundle {bundle}: weight file {entry['file']} is missing")
        got = sha256(path)
        if got != entry["sha256"]:
            raise BundleError(
                f"bundle {bundle}: weight file {entry['file']} does not match the manifest "
                f"(sha256 {got[:12]}..., manifest {entry['sha256'][:12]}...): corrupted, "
                "truncated or replaced"
            )


def check_compatible(
    manifest: dict, robot: str, d: int, neighbours: int, obstacle_slots: int
) -> None:
    """Refuse a bundle made for another robot family or observation spec.

    Args:
        robot: this robot's family (a ``ROBOTS`` name).
        d, neighbours, obstacle_slots: this robot's observation layout.

    Raises:
        BundleError: naming what differs, with both values.
    """
    family = manifest["robot"]["family"]
    if family != robot:
        raise BundleError(f"bundle is for robot family {family!r}, this robot is {robot!r}")
    o = manifest["observation"]
    mine = {"d": d, "neighbours": neighbours, "obstacle_slots": obstacle_slots}
    for key, value in mine.items():
        if o[key] != value:
            raise BundleError(
                f"bundle observation spec differs: {key} = {o[key]} in the "
                f"bundle, {value} on this robot"
            )
