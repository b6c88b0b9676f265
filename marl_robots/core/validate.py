"""One set of input validators shared by the CLI, the config loader, fleet files and the nodes.

Every check raises ``ValidationError`` (a ``ValueError``) with one line that names the bad
input and says what would be accepted.  Callers turn it into their own failure: exit code 2 in
the CLI, a failed ``configure`` in a node, a ``ConfigError`` naming the file in loaders.

* ``nearest_name`` / ``unknown_name`` - unknown keys and names, with the closest valid one;
* ``finite`` / ``positive`` - numbers;
* ``safety_distance`` - at least the body diameter;
* ``seed_key_data`` - seeds of any size, hashed to the full 64-bit key space (no aliasing);
* ``check_layout`` - starts, goals and obstacles against the filter's actual margins.
"""

from __future__ import annotations

import difflib
import hashlib
import math
from collections.abc import Iterable

import numpy as np

#: Slack allowed on layout distances, so that a layout exactly at a margin passes [m].
LAYOUT_TOL_M = 1e-5
#: Largest number of simulated control periods of one run (memory grows with it).
MAX_STEPS = 200_000


class ValidationError(ValueError):
    """Bad user input; the message is one line naming the input."""


def nearest_name(name: str, valid: Iterable[str]) -> str | None:
    """The valid name closest to ``name`` (edit similarity), or None if nothing is close."""
    match = difflib.get_close_matches(str(name), [str(v) for v in valid], n=1, cutoff=0.6)
    return match[0] if match else None


def unknown_name(kind: str, name: str, valid: Iterable[str]) -> str:
    """The one-line message for an unknown ``kind`` (e.g. 'key', 'parameter') ``name``."""
    valid = sorted(str(v) for v in valid)
    near = nearest_name(name, valid)
    hint = f" (did you mean {near!r}?)" if near is not None else ""
    return f"unknown {kind} {name!r}{hint}; valid {kind}s: {', '.join(valid)}"


def finite(name: str, value) -> np.ndarray:
    """``value`` as a float64 array; raises unless every entry is finite."""
    arr = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValidationError(f"{name} must be finite, got {value!r}")
    return arr


def positive(name: str, value) -> float:
    """``value`` as a float; raises unless it is finite and > 0."""
    v = float(finite(name, value))
    if not v > 0:
        raise ValidationError(f"{name} must be > 0, got {value!r}")
    return v


def safety_distance(distance_m: float, diameter_m: float) -> float:
    """The safety distance between robot centres; raises if below the body diameter [m]."""
    d = float(finite("safety distance", distance_m))
    if d < diameter_m:
        raise ValidationError(
            f"safety distance {d:g} m is below the robot body diameter {diameter_m:g} m: "
            "robots could touch while every barrier holds"
        )
    return d


#: Neighbours a decentralised 2D filter must see: while every pair barrier holds, at most 6
#: robots fit within one step's reach of a robot (the kissing number of discs in the plane),
#: so a budget of 6 covers every pair that could break its barrier in one period.
SAFE_NEIGHBOURS_2D = 6


def neighbour_budget(k: int, robots: int | None = None) -> int:
    """A filter's neighbour budget: at least ``min(6, robots - 1)`` (see ``SAFE_NEIGHBOURS_2D``).

    Raises:
        ValidationError: a smaller budget, which would leave reachable neighbours unfiltered.
    """
    need = SAFE_NEIGHBOURS_2D if robots is None else min(SAFE_NEIGHBOURS_2D, max(robots - 1, 0))
    if int(k) < need:
        raise ValidationError(
            f"neighbour budget {k} is below {need}: with the filter on, up to 6 robots can be "
            "within one step's reach (2D kissing number), and unsensed ones are unfiltered"
        )
    return int(k)


def seed_key_data(seed: int) -> np.ndarray:
    """Two uint32 words of PRNG key data for any integer ``seed`` (no aliasing mod 2^32).

    Seeds in [0, 2^32) map to the same key as ``jax.random.PRNGKey(seed)`` so that existing
    runs keep their results; any other integer is hashed (SHA-256) to the full 64-bit space.

    Raises:
        ValidationError: ``seed`` is not an integer.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValidationError(f"seed must be an integer, got {seed!r}")
    seed = int(seed)
    if 0 <= seed < 2**32:
        return np.array([0, seed], dtype=np.uint32)
    digest = hashlib.sha256(str(seed).encode()).digest()
    words = np.frombuffer(digest[:8], dtype="<u4").astype(np.uint32)
    # Keep hashed keys off the direct range's first word (0) so they never collide with it.
    words[0] = words[0] | np.uint32(1)
    return words


def check_layout(
    points,
    goals,
    obstacles,
    arena_bounds,
    pair_distance_m: float,
    obstacle_margin_m: float,
    wall_margin_m: float,
    what: str = "layout",
) -> None:
    """Check that starts and goals hold every barrier of the filter, with its actual margins.

    All positions are the points the filter acts on (the look-ahead points of unicycles).

    Args:
        points: [n, d] start positions of the filter points [m].
        goals: [n, d] goals of the filter points [m].
        obstacles: [O, d + 1] real obstacles (centre, radius) [m] (masked ones removed).
        arena_bounds: (x_min, x_max, y_min, y_max) [m].
        pair_distance_m: least distance between two robots' filter points [m].
        obstacle_margin_m: clearance added to obstacle radii [m].
        wall_margin_m: clearance from the arena walls [m].
        what: name of the layout in the message (a scenario, a fleet file).

    Raises:
        ValidationError: one line naming the first broken rule, the robots and the distance.
    """
    points = finite(f"{what}: start positions", points)
    goals = finite(f"{what}: goals", goals)
    obstacles = finite(f"{what}: obstacles", np.reshape(obstacles, (-1, points.shape[-1] + 1)))
    arena = finite(f"{what}: arena", arena_bounds)
    if np.any(obstacles[:, -1] <= 0):
        k = int(np.flatnonzero(obstacles[:, -1] <= 0)[0])
        r = obstacles[k, -1]
        raise ValidationError(f"{what}: obstacle {k} has radius {r:g} (must be > 0)")
    if not (arena[1] > arena[0] and arena[3] > arena[2]):
        raise ValidationError(f"{what}: arena bounds {tuple(arena)} are empty")
    for name, pts in (("start", points), ("goal", goals)):
        lo = np.array([arena[0], arena[2]]) + wall_margin_m
        hi = np.array([arena[1], arena[3]]) - wall_margin_m
        out = np.any((pts[:, :2] < lo - LAYOUT_TOL_M) | (pts[:, :2] > hi + LAYOUT_TOL_M), -1)
        if out.any():
            i = int(np.flatnonzero(out)[0])
            raise ValidationError(
                f"{what}: robot {i}'s {name} {tuple(np.round(pts[i], 4))} is outside the arena "
                f"less the {wall_margin_m:g} m wall margin"
            )
        n = len(pts)
        if n > 1:
            diff = pts[:, None] - pts[None]
            dist = np.where(np.eye(n, dtype=bool), np.inf, np.sqrt(np.sum(diff * diff, -1)))
            i, j = np.unravel_index(np.argmin(dist), dist.shape)
            if dist[i, j] < pair_distance_m - LAYOUT_TOL_M:
                raise ValidationError(
                    f"{what}: robots {min(i, j)} and {max(i, j)} {name}s are {dist[i, j]:.4f} m "
                    f"apart, closer than the filter's {pair_distance_m:.4f} m"
                )
        if len(obstacles):
            gap = (
                np.sqrt(np.sum((pts[:, None] - obstacles[None, :, :-1]) ** 2, -1))
                - obstacles[None, :, -1]
                - obstacle_margin_m
            )
            i, k = np.unravel_index(np.argmin(gap), gap.shape)
            if gap[i, k] < -LAYOUT_TOL_M:
                raise ValidationError(
                    f"{what}: robot {i}'s {name} is {-gap[i, k]:.4f} m inside obstacle {k}'s "
                    f"{obstacle_margin_m:g} m margin"
                )


def steps(value: int) -> int:
    """A step count in [1, MAX_STEPS]."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValidationError(f"steps must be an integer, got {value!r}")
    if not 1 <= value <= MAX_STEPS:
        raise ValidationError(f"steps must be in [1, {MAX_STEPS}], got {value}")
    return int(value)


def json_number(value: float) -> float | None:
    """``value`` for strict JSON: ``None`` (null) for inf/NaN, which JSON cannot hold."""
    v = float(value)
    return v if math.isfinite(v) else None
