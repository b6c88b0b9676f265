"""``quad_navigation`` episodes on any quadrotor backend, their metrics and their files.

``rollout`` flies ``E`` episodes of the task with straight-line go-to-goal velocity setpoints
(50 Hz), the flight controller and the optional 3D filter (``quad_navigation.flight_command``,
JAX, at the 500 Hz physics rate) on one backend:

* ``jax``: the env itself (``QuadNavigationEnv.step`` in a ``lax.scan``), vmapped over episodes;
* ``mujoco`` / ``pybullet``: the same jitted controller + filter, vmapped over episodes, stepping
  one simulator that holds every episode's drones side by side, ``EPISODE_SPACING_M`` apart
  along x (no contacts in either engine; the downwash between episodes is ``exp(-(50 /
  beta)^2 / 2)``, zero in float64, and the ground effect is per drone);
* ``mjx``: one jitted program, the controller + filter and ``mjx.step`` of an ``n``-drone MJX
  model in a ``lax.scan``, vmapped over episodes (no aerodynamic effects: the env must have
  ``aero`` off).

Starts and goals come from ``QuadNavigationEnv.reset`` in every backend.  ``episode_metrics``
scores a trajectory the same way for all of them (separation in the safety ellipsoid's metric).
``run_quad_navigation`` is ``marl-robots sim quad_navigation``.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from marl_robots.controllers.safety_filter import FilterStatus
from marl_robots.controllers.safety_filter_3d import Filter3DConfig
from marl_robots.core import validate
from marl_robots.sim.robots.quadrotor import AERO_OFF, AERO_ON, QuadState
from marl_robots.sim.tasks import quad_navigation as qn

QUAD_BACKENDS = ("jax", "mjx", "mujoco", "pybullet")
#: Distance between the episodes that share one MuJoCo or PyBullet world [m].
EPISODE_SPACING_M = 50.0
#: Roundabout term of the go-to-goal setpoints (``quad_navigation.go_to_goal_velocity``).
SWIRL = 0.5
#: Files a run writes (``--overwrite`` removes them first).
QUAD_OUTPUT_FILES = ("metrics.json", "rollout.npz", "trajectories.png", "rollout.gif")


@dataclass(frozen=True)
class QuadRunSpec:
    """Everything that defines a ``quad_navigation`` run (the CLI's arguments).

    Attributes:
        backend: ``jax``, ``mjx``, ``mujoco`` or ``pybullet``.
        robots: drones per episode.
        scenario: ``antipodal`` or ``random``.
        controller: ``pid`` or ``geometric``.
        filter: ``cbf`` or ``none``.
        steps: env steps (50 Hz).
        seed: the episode's seed.
        aero: aerodynamic effects (drag, ground effect, downwash) on (``mjx``: must be off).
        speed_mps: go-to-goal cruise speed [m/s].
        obstacles: static spherical obstacles, each (x, y, z, radius) [m].
    """

    backend: str = "jax"
    robots: int = 8
    scenario: str = "antipodal"
    controller: str = "pid"
    filter: str = "cbf"
    steps: int = 400
    seed: int = 0
    aero: bool = True
    speed_mps: float = 0.5
    obstacles: tuple[tuple[float, float, float, float], ...] = ()


def make_env(spec: QuadRunSpec) -> qn.QuadNavigationEnv:
    """The task env of ``spec`` (the filter on iff ``spec.filter == "cbf"``)."""
    task = qn.QuadNavigationConfig(
        robots=spec.robots,
        scenario=spec.scenario,
        controller=spec.controller,
        aero=AERO_ON if spec.aero else AERO_OFF,
        obstacles=tuple(tuple(float(x) for x in o) for o in spec.obstacles),
    )
    filt = Filter3DConfig() if spec.filter == "cbf" else None
    return qn.QuadNavigationEnv(qn.QuadEnvConfig(task=task, filter=filt))


class Trace(NamedTuple):
    """``E`` flown episodes (NumPy).

    Attributes:
        pos: ``[E, T + 1, n, 3]`` positions [m] at every env step (the start included).
        goal: ``[E, n, 3]`` goals [m].
        interventions: ``[E]`` drone-physics-steps where the filter changed the command.
        infeasible: ``[E]`` drone-physics-steps that fell back to hover.
    """

    pos: np.ndarray
    goal: np.ndarray
    interventions: np.ndarray
    infeasible: np.ndarray


def rollout(env: qn.QuadNavigationEnv, backend: str, keys, speeds, steps: int) -> Trace:
    """Fly ``E`` episodes (one per key, go-to-goal at ``speeds [E]`` m/s) for ``steps`` steps."""
    if backend not in QUAD_BACKENDS:
        raise KeyError(
            f"unknown backend {backend!r}; known backends: {', '.join(sorted(QUAD_BACKENDS))}"
        )
    speeds = jnp.asarray(speeds, jnp.float32)
    if backend == "jax":
        return _rollout_jax(env, keys, speeds, steps)
    if backend == "mjx":
        if env.config.task.aero != AERO_OFF:
            raise ValueError("the mjx backend has no aerodynamic effects; fly it with aero off")
        return _rollout_jax(env, keys, speeds, steps, _mjx_episodes)
    return _rollout_engine(env, backend, keys, speeds, steps)


def _rollout_jax(env, keys, speeds, steps, episodes=None) -> Trace:
    pos, goal, changed, infeasible = (episodes or _jax_episodes)(env, steps)(keys, speeds)
    return Trace(*(np.asarray(x) for x in (pos, goal, changed, infeasible)))


def _filter_counts(info):
    """(interventions, hover fallbacks) summed over the last (drone) axis (zeros unfiltered)."""
    if info is None:
        return jnp.float32(0.0), jnp.float32(0.0)
    changed = jnp.sum(info.intervened, axis=-1).astype(jnp.float32)
    infeasible = jnp.sum(info.status != int(FilterStatus.OK), axis=-1).astype(jnp.float32)
    return changed, infeasible


@functools.lru_cache(maxsize=8)
def _jax_episodes(env, steps: int):
    """The jitted, episode-vmapped rollout of ``env`` (cached: one compile per env and length)."""
    params = env.default_params()

    def episode(key, speed):
        def body(s, _):
            s = env.step(s, qn.go_to_goal(s, speed, SWIRL), params)
            m = s.metrics
            return s, (s.task.quad.pos, m["filter_interventions"], m["qp_infeasible"])

        s0 = env.reset(key, params)
        _, (pos, changed, infeasible) = jax.lax.scan(body, s0, None, length=steps)
        pos = jnp.concatenate([s0.task.quad.pos[None], pos], axis=0)
        return pos, s0.task.goal, jnp.sum(changed), jnp.sum(infeasible)

    return jax.jit(jax.vmap(episode))


@functools.lru_cache(maxsize=4)
def _mjx_episodes(env, steps: int):
    """The jitted, episode-vmapped closed-loop rollout on MJX (one ``n``-drone model)."""
    from mujoco import mjx  # noqa: PLC0415 - optional dependency

    from marl_robots.sim.backends.mujoco_backend import (  # noqa: PLC0415
        load_model,
        mjx_data,
        mjx_state,
    )

    tc, n = env.config.task, env.n
    h = tc.dt_s / tc.substeps
    model = mjx.put_model(load_model(n, h))
    params = env.default_params()

    def episode(key, speed):
        s0 = env.reset(key, params)
        goal = s0.task.goal

        def substep(carry, v_sp):
            data, ctrl = carry
            quad = mjx_state(data, n)
            thrust, ctrl, info = qn.flight_command(
                quad,
                ctrl,
                v_sp,
                params.robot,
                tc.controller,
                env._gains,
                env.filter_config,
                h,
                s0.task.obstacles,
            )
            data = mjx.step(model, data.replace(ctrl=thrust.reshape(-1).astype(data.ctrl.dtype)))
            return (data, ctrl), _filter_counts(info)

        def body(carry, _):
            v_sp = qn.go_to_goal_velocity(mjx_state(carry[0], n).pos, goal, speed, SWIRL)
            carry, (changed, infeasible) = jax.lax.scan(
                lambda c, _: substep(c, v_sp), carry, None, length=tc.substeps
            )
            return carry, (mjx_state(carry[0], n).pos, jnp.sum(changed), jnp.sum(infeasible))

        carry = (mjx_data(model, s0.task.quad), s0.task.ctrl)
        _, (pos, changed, infeasible) = jax.lax.scan(body, carry, None, length=steps)
        pos = jnp.concatenate([s0.task.quad.pos[None], pos.astype(jnp.float32)], axis=0)
        return pos, goal, jnp.sum(changed), jnp.sum(infeasible)

    return jax.jit(jax.vmap(episode))


@functools.lru_cache(maxsize=8)
def _resets(env):
    """``env.reset`` jitted and vmapped over keys (one compile instead of op-by-op dispatch)."""
    return jax.jit(jax.vmap(env.reset, in_axes=(0, None)))


def _rollout_engine(env, backend: str, keys, speeds, steps) -> Trace:
    from marl_robots.sim.backends import BACKENDS  # noqa: PLC0415

    tc = env.config.task
    params = env.default_params()
    s0 = _resets(env)(keys, params)
    e, n = s0.task.goal.shape[:2]
    h = tc.dt_s / tc.substeps
    offset = np.zeros((e, 1, 3))
    offset[:, 0, 0] = EPISODE_SPACING_M * np.arange(e)
    sim = BACKENDS.get(backend)(n=e * n, dt=h, aero=tc.aero)
    start = QuadState(*(np.asarray(x, np.float64) for x in s0.task.quad))
    sim.reset(QuadState(*(x.reshape(e * n, -1) for x in start._replace(pos=start.pos + offset))))
    goal = s0.task.goal

    spheres = s0.task.obstacles  # [E, s, 4]

    @jax.jit
    def command(quad, ctrl, v_sp):
        def one(q, c, v, obst):
            return qn.flight_command(
                q, c, v, params.robot, tc.controller, env._gains, env.filter_config, h, obst
            )

        thrust, ctrl, info = jax.vmap(one)(quad, ctrl, v_sp, spheres)
        return (thrust, ctrl, *_filter_counts(info))

    setpoint = jax.jit(jax.vmap(lambda p, g, v: qn.go_to_goal_velocity(p, g, v, SWIRL)))
    ctrl = s0.task.ctrl
    state = start
    trace = [start.pos]
    changed = np.zeros(e)
    infeasible = np.zeros(e)
    for _ in range(steps):
        v_sp = setpoint(jnp.asarray(state.pos, jnp.float32), goal, speeds)
        for _ in range(tc.substeps):
            local = QuadState(*(jnp.asarray(x, jnp.float32) for x in state))
            thrust, ctrl, dc, di = command(local, ctrl, v_sp)
            changed += np.asarray(dc)
            infeasible += np.asarray(di)
            flat = sim.step(np.asarray(thrust, np.float64).reshape(e * n, -1))
            state = QuadState(*(np.asarray(x).reshape(e, n, -1) for x in flat))
            state = state._replace(pos=state.pos - offset)
        trace.append(state.pos)
    if hasattr(sim, "close"):
        sim.close()
    pos = np.stack(trace, axis=1)
    return Trace(pos, np.asarray(goal), changed, infeasible)


def episode_metrics(env: qn.QuadNavigationEnv, trace: Trace) -> dict[str, np.ndarray]:
    """Per-episode scores of a trace (NumPy), the same for every backend.

    Returns arrays ``[E]``: ``min_separation_m`` (ellipsoid metric), ``ellipsoid_violations``
    (drone pairs that ever entered the safety ellipsoid), ``collisions`` (pairs whose rotor
    discs ever overlapped: centres closer than ``collision_distance_m``), ``success_rate``
    (fraction at their goal at the end), ``mean_time_to_goal_s`` (first arrivals; nan if none),
    ``min_altitude_m``; with spherical obstacles also ``min_obstacle_clearance_m`` (drone centre
    to sphere surface; inf without obstacles), ``obstacle_violations`` (drone-sphere pairs that
    ever came closer than ``obstacle_clearance_m``) and ``obstacle_contacts`` (pairs whose rotor
    discs ever touched a sphere: closer than the rotor-tip radius).
    """
    pos = trace.pos
    e, t, n, _ = pos.shape
    diff = pos[:, :, :, None] - pos[:, :, None]
    sep = env.config.safety.separation(diff, np)
    dist = np.linalg.norm(diff, axis=-1)
    upper = np.triu(np.ones((n, n), bool), k=1)
    sep_pairs = np.where(upper, sep, np.inf)
    params = env.default_params().robot
    collide = float(qn.collision_distance_m(params))
    inside = (sep_pairs < env.config.safety.horizontal_m).any(axis=1)  # [E, n, n]
    contact = (np.where(upper, dist, np.inf) < collide).any(axis=1)
    to_goal = np.linalg.norm(pos - trace.goal[:, None], axis=-1)  # [E, T, n]
    at_goal = to_goal < env.config.task.goal_tolerance_m
    first = np.where(at_goal.any(axis=1), at_goal.argmax(axis=1), -1)  # [E, n]
    dt = env.config.task.dt_s
    times = np.where(first >= 0, first * dt, np.nan)
    arrived = np.isfinite(times).any(axis=-1)
    mean_time = np.full(e, np.nan)
    mean_time[arrived] = np.nanmean(times[arrived], axis=-1)
    spheres = np.asarray(env.config.task.obstacles, np.float64).reshape(-1, 4)
    clear = qn.obstacle_clearance(pos, spheres, np)  # [E, T, n, s]
    return {
        "min_separation_m": sep_pairs.min(axis=(1, 2, 3)),
        "ellipsoid_violations": inside.sum(axis=(1, 2)),
        "collisions": contact.sum(axis=(1, 2)),
        "success_rate": at_goal[:, -1].mean(axis=-1),
        "mean_time_to_goal_s": mean_time,
        "min_altitude_m": pos[..., 2].min(axis=(1, 2)),
        "min_obstacle_clearance_m": clear.min(axis=(1, 2, 3), initial=np.inf),
        "obstacle_violations": (clear < env.config.obstacle_clearance_m).any(axis=1).sum((1, 2)),
        "obstacle_contacts": (clear < 0.5 * collide).any(axis=1).sum(axis=(1, 2)),
    }


def metrics_record(spec: QuadRunSpec, env, trace: Trace, timing: dict[str, float]):
    """The ``metrics.json`` record of one run: ground navigation's fields plus the quad's."""
    m = {k: v[0] for k, v in episode_metrics(env, trace).items()}
    safety = env.config.safety
    filt = env.filter_config
    return {
        "task": "quad_navigation",
        "scenario": spec.scenario,
        "robot": "crazyflie2",
        "filter": spec.filter,
        "filter_mode": "decentralised" if filt is not None else None,
        "class_k": "exponential (second order)" if filt is not None else None,
        "gamma": [filt.k1, filt.k2] if filt is not None else None,
        "seed": spec.seed,
        "robots": spec.robots,
        "steps": spec.steps,
        "dt_s": env.config.task.dt_s,
        "safety_distance_m": safety.horizontal_m,
        "robot_diameter_m": float(qn.collision_distance_m(env.default_params().robot)),
        "collisions": int(m["collisions"]),
        "min_separation_m": validate.json_number(float(m["min_separation_m"])),
        "min_obstacle_clearance_m": (
            validate.json_number(float(m["min_obstacle_clearance_m"])) if spec.obstacles else None
        ),
        "success_rate": float(m["success_rate"]),
        "mean_time_to_goal_s": validate.json_number(float(m["mean_time_to_goal_s"])),
        "filter_interventions": int(trace.interventions[0]),
        "qp_relaxed": 0,
        "qp_infeasible": int(trace.infeasible[0]),
        "compile_time_s": timing["compile_s"],
        "wall_time_s": timing["compile_s"] + timing["run_s"],
        "env_steps_per_s": spec.steps / max(timing["run_s"], 1e-9),
        "backend": spec.backend,
        "controller": spec.controller,
        "aero": spec.aero,
        "safety_ellipsoid_m": [safety.horizontal_m, safety.vertical_m],
        "separation_metric": "sqrt(dx^2 + dy^2 + (horizontal/vertical)^2 dz^2)",
        "ellipsoid_violations": int(m["ellipsoid_violations"]),
        "min_altitude_m": float(m["min_altitude_m"]),
        "obstacles": [list(o) for o in env.config.task.obstacles],
        "obstacle_clearance_required_m": env.config.obstacle_clearance_m,
        "obstacle_violations": int(m["obstacle_violations"]),
        "obstacle_contacts": int(m["obstacle_contacts"]),
    }


def check_layout(env: qn.QuadNavigationEnv, key) -> None:
    """Refuse starts or goals closer than the filter keeps drones apart or from an obstacle.

    Without the filter the limits are the safety ellipsoid and the obstacle clearance.

    Raises:
        ValidationError: one line naming the drones (or drone and obstacle), their
            separation and the limit.
    """
    s = jax.tree.map(lambda x: x[0], _resets(env)(key[None], env.default_params()))
    filt = env.filter_config
    limit = filt.radii_m[0] if filt is not None else env.config.safety.horizontal_m
    n = env.n
    for name, pts in (("start", s.task.quad.pos), ("goal", s.task.goal)):
        pts = np.asarray(pts, np.float64)
        sep = env.config.safety.separation(pts[:, None] - pts[None], np) + np.where(
            np.eye(n, dtype=bool), np.inf, 0.0
        )
        i, j = np.unravel_index(np.argmin(sep), sep.shape)
        if n > 1 and sep[i, j] < limit:
            raise validate.ValidationError(
                f"quad_navigation/{env.config.task.scenario}: drones {min(i, j)} and "
                f"{max(i, j)} {name}s are {sep[i, j]:.3f} m apart (safety-ellipsoid metric), "
                f"closer than the {limit:.3f} m the filter keeps; use fewer drones"
            )
        clear = qn.obstacle_clearance(pts, np.asarray(s.task.obstacles, np.float64), np)
        keep = env.config.obstacle_clearance_m + (filt.buffer_m if filt is not None else 0.0)
        if clear.size and clear.min() < keep:
            i, j = np.unravel_index(np.argmin(clear), clear.shape)
            raise validate.ValidationError(
                f"quad_navigation/{env.config.task.scenario}: drone {i}'s {name} is "
                f"{clear[i, j]:.3f} m from obstacle {j}'s surface, closer than the {keep:.3f} m "
                "the filter keeps; move or shrink the obstacle"
            )


def simulate(spec: QuadRunSpec):
    """Fly ``spec``'s episode; returns ``(env, trace, timing)``."""
    validate.steps(spec.steps)
    env = make_env(spec)
    key = jnp.asarray(validate.seed_key_data(spec.seed), dtype=jnp.uint32)[None]
    check_layout(env, key[0])
    speeds = jnp.full((1,), spec.speed_mps, jnp.float32)
    if spec.backend == "mjx" and spec.aero:
        raise ValueError("the mjx backend has no aerodynamic effects; fly it with aero off")
    t0 = time.perf_counter()
    if spec.backend in ("jax", "mjx"):  # compile ahead of time, so that the timing excludes it
        episodes = _jax_episodes if spec.backend == "jax" else _mjx_episodes
        run = episodes(env, spec.steps).lower(key, speeds).compile()
        t1 = time.perf_counter()
        trace = Trace(*(np.asarray(x) for x in run(key, speeds)))
    else:
        t1 = time.perf_counter()
        trace = rollout(env, spec.backend, key, speeds, spec.steps)
    t2 = time.perf_counter()
    return env, trace, {"compile_s": t1 - t0, "run_s": t2 - t1}


def write_outputs(out: Path, spec: QuadRunSpec, env, trace: Trace, metrics, animation=True):
    """Write metrics.json, rollout.npz, trajectories.png (3D) and rollout.gif."""
    from marl_robots.sim import render_3d  # noqa: PLC0415 - matplotlib only when writing

    out.mkdir(parents=True, exist_ok=True)
    for name in QUAD_OUTPUT_FILES:
        (out / name).unlink(missing_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, allow_nan=False) + "\n")
    pos, goal = trace.pos[0], trace.goal[0]
    np.savez_compressed(
        out / "rollout.npz", dt_s=np.float32(env.config.task.dt_s), pos=pos, goal=goal
    )
    title = (
        f"{spec.scenario}, {spec.robots} drones, {spec.backend}, {spec.controller}, "
        f"filter={spec.filter}"
    )
    bounds, spheres = env.config.task.arena_bounds, env.config.task.obstacles
    render_3d.plot_trajectories_3d(out / "trajectories.png", pos, goal, bounds, title, spheres)
    if animation:
        dt = env.config.task.dt_s
        render_3d.animate_3d(out / "rollout.gif", pos, goal, bounds, dt, title, spheres=spheres)


def run_quad_navigation(spec: QuadRunSpec, out: Path | None, animation: bool = True):
    """Simulate, write the files to ``out`` (if given) and return the metrics dict."""
    env, trace, timing = simulate(spec)
    metrics = metrics_record(spec, env, trace, timing)
    if out is not None:
        write_outputs(out, spec, env, trace, metrics, animation)
    return metrics


__all__ = [
    "QUAD_BACKENDS",
    "QuadRunSpec",
    "Trace",
    "episode_metrics",
    "make_env",
    "rollout",
    "run_quad_navigation",
]
