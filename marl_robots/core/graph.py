"""Padded neighbour graph: each robot's k nearest neighbours within a sensing radius.

The budget ``k`` is static so the graph has a fixed shape under ``jit``/``vmap``; slots with
no neighbour (fewer than ``k`` robots in range, or dead robots) are masked out.  Works for
2D or 3D positions and for a batch of environments through ``jax.vmap``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class NeighbourGraph(NamedTuple):
    """Padded neighbour lists.

    Attributes:
        index: int32 [n, k] neighbour indices (padding slots point at the robot itself).
        mask: bool [n, k] True where the slot holds a real neighbour.
        distance: float [n, k] centre-to-centre distance [m] (inf in padding slots).
    """

    index: jax.Array
    mask: jax.Array
    distance: jax.Array


def neighbour_graph(
    positions: jax.Array,
    k: int,
    radius: float | jax.Array,
    alive: jax.Array | None = None,
) -> NeighbourGraph:
    """Build the k-nearest-within-radius graph.

    Args:
        positions: [n, d] robot positions [m].
        k: static neighbour budget (clipped to n - 1).
        radius: sensing radius [m]; neighbours farther than this are masked out.
        alive: optional bool [n]; dead robots neither sense nor are sensed.

    Returns:
        A ``NeighbourGraph`` with arrays of shape [n, min(k, n - 1)].
    """
    n = positions.shape[0]
    k = min(k, n - 1)
    if k <= 0:
        empty_i = jnp.zeros((n, 0), jnp.int32)
        return NeighbourGraph(empty_i, jnp.zeros((n, 0), bool), jnp.zeros((n, 0)))
    diff = positions[:, None, :] - positions[None, :, :]
    dist = jnp.sqrt(jnp.sum(diff * diff, axis=-1))
    valid = ~jnp.eye(n, dtype=bool)
    if alive is not None:
        valid = valid & alive[:, None] & alive[None, :]
    masked = jnp.where(valid, dist, jnp.inf)
    neg_d, index = jax.lax.top_k(-masked, k)
    distance = -neg_d
    mask = distance <= radius
    index = jnp.where(mask, index, jnp.arange(n)[:, None]).astype(jnp.int32)
    return NeighbourGraph(index, mask, jnp.where(mask, distance, jnp.inf))


def neighbour_graph_np(positions: np.ndarray, k: int, radius: float) -> NeighbourGraph:
    """NumPy twin of ``neighbour_graph`` (same ordering and masking) for CPU-only callers.

    Ties in distance are broken by index, as ``jax.lax.top_k`` does.
    """
    n = positions.shape[0]
    k = min(k, n - 1)
    if k <= 0:
        return NeighbourGraph(np.zeros((n, 0), np.int32), np.zeros((n, 0), bool), np.zeros((n, 0)))
    diff = positions[:, None, :] - positions[None, :, :]
    dist = np.sqrt(np.sum(diff * diff, axis=-1))
    dist[np.arange(n), np.arange(n)] = np.inf
    index = np.argsort(dist, axis=1, kind="stable")[:, :k]
    distance = np.take_along_axis(dist, index, axis=1)
    mask = distance <= radius
    index = np.where(mask, index, np.arange(n)[:, None]).astype(np.int32)
    return NeighbourGraph(index, mask, np.where(mask, distance, np.inf))
