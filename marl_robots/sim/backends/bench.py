"""Throughput of the quadrotor backends: drone-steps per second, and PyBullet's real-time factor.

    python -m marl_robots.sim.backends.bench [--quick] [--out bench_quad.json]

Measured in one run on this machine (printed with the figures):

* ``jax``: ``vmap`` over environments of a ``lax.fori_loop`` over steps (float32), compile time
  excluded; one drone per environment, and 40 drones per environment with aerodynamics.
* ``mujoco``: ``mujoco.rollout`` (C, one thread per core) over a batch of one-drone models, and
  one 40-drone model stepped by ``mj_step``.
* ``mjx``: MJX on whatever device JAX has (on a CPU it is slow; it is there for GPUs).
* ``pybullet``: 40 drones at gym-pybullet-drones' physics rate (240 Hz), without aerodynamics,
  with them (drag, ground effect, downwash vectorised over pairs), and with the downwash as a
  Python loop over pairs (the baseline); real-time factor = simulated time / wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

from marl_robots.core.machine import machine_description
from marl_robots.sim.backends import BACKENDS
from marl_robots.sim.robots import crazyflie_params as cf
from marl_robots.sim.robots import quadrotor as quad

DT_S = 0.002
PYBULLET_DT_S = 1.0 / 240.0
SWARM = 40


def _grid(n: int, spacing: float = 0.5, z: float = 1.0) -> np.ndarray:
    """``n`` drones on a square grid at height ``z``; every other row 0.3 m higher (downwash)."""
    side = int(np.ceil(np.sqrt(n)))
    idx = np.arange(n)
    return np.stack(
        [spacing * (idx % side), spacing * (idx // side), z + 0.3 * ((idx // side) % 2)], -1
    ).astype(float)


def _timed(fn, min_s: float) -> tuple[float, int]:
    """Call ``fn`` until ``min_s`` seconds have passed; return (seconds, calls)."""
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_s:
            return elapsed, calls


def bench_jax(envs: int, drones: int, steps: int, aero, min_s: float) -> dict:
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415

    from marl_robots.sim.backends.jax_backend import batched_rollout  # noqa: PLC0415

    params = cf.crazyflie_params(np.float32)
    state = quad.hover_state(_grid(drones).astype(np.float32), params)
    states = quad.QuadState(*(jnp.asarray(np.repeat(x[None], envs, 0)) for x in state))
    action = jnp.full((envs, drones, 4), cf.hover_thrust_per_rotor(params), jnp.float32)
    fn = batched_rollout(drones, steps, DT_S, aero)
    t0 = time.perf_counter()
    jax.block_until_ready(fn(states, action))
    compile_s = time.perf_counter() - t0
    seconds, calls = _timed(lambda: jax.block_until_ready(fn(states, action)), min_s)
    return {
        "backend": "jax",
        "device": str(jax.devices()[0]),
        "envs": envs,
        "drones_per_env": drones,
        "aero": aero != quad.AERO_OFF,
        "compile_s": round(compile_s, 2),
        "drone_steps_per_s": envs * drones * steps * calls / seconds,
    }


def bench_mujoco_rollout(batch: int, steps: int, min_s: float) -> dict:
    backend = BACKENDS.get("mujoco")(1, dt=DT_S)
    params = backend.params
    state = quad.hover_state(_grid(1), params)
    states = quad.QuadState(*(np.repeat(x[None], batch, 0) for x in state))
    actions = np.full((batch, steps, 1, 4), cf.hover_thrust_per_rotor(params))
    threads = os.cpu_count() or 1
    seconds, calls = _timed(lambda: backend.rollout_batch(states, actions, threads), min_s)
    return {
        "backend": "mujoco (mujoco.rollout)",
        "envs": batch,
        "drones_per_env": 1,
        "threads": threads,
        "aero": False,
        "drone_steps_per_s": batch * steps * calls / seconds,
    }


def bench_stepper(name: str, drones: int, steps: int, dt: float, min_s: float, **kw) -> dict:
    backend = BACKENDS.get(name)(drones, dt=dt, **kw)
    params = backend.params
    backend.reset(quad.hover_state(_grid(drones), params))
    action = np.full((drones, 4), cf.hover_thrust_per_rotor(params))

    def run():
        for _ in range(steps):
            backend.step(action)

    seconds, calls = _timed(run, min_s)
    rate = steps * calls / seconds
    aero = kw.get("aero", quad.AERO_OFF)
    return {
        "backend": name + (f" (downwash: {kw['downwash']})" if "downwash" in kw else ""),
        "envs": 1,
        "drones_per_env": drones,
        "dt_s": dt,
        "aero": aero != quad.AERO_OFF,
        "drone_steps_per_s": drones * rate,
        "real_time_factor": rate * dt,
    }


def bench_mjx(envs: int, steps: int, min_s: float) -> dict:
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415
    from mujoco import mjx  # noqa: PLC0415

    from marl_robots.sim.backends.mujoco_backend import (  # noqa: PLC0415
        load_model,
        make_mjx_step,
        mjx_data,
    )

    model = load_model(1, DT_S)
    mjx_model = mjx.put_model(model)
    params = cf.crazyflie_params()
    data = mjx_data(mjx_model, quad.hover_state(_grid(1), params))
    datas = jax.tree.map(lambda x: jnp.repeat(x[None], envs, 0), data)
    ctrl = jnp.full((envs, 4), cf.hover_thrust_per_rotor(params), jnp.float32)
    step = make_mjx_step(mjx_model)

    @jax.jit
    def roll(d, c):
        return jax.lax.fori_loop(0, steps, lambda _, x: jax.vmap(step)(x, c), d)

    t0 = time.perf_counter()
    jax.block_until_ready(roll(datas, ctrl))
    compile_s = time.perf_counter() - t0
    seconds, calls = _timed(lambda: jax.block_until_ready(roll(datas, ctrl)), min_s)
    return {
        "backend": "mjx",
        "device": str(jax.devices()[0]),
        "envs": envs,
        "drones_per_env": 1,
        "aero": False,
        "compile_s": round(compile_s, 2),
        "drone_steps_per_s": envs * steps * calls / seconds,
    }


def run(quick: bool = False, mjx_envs: int = 256, jax_envs: tuple[int, ...] = (1, 1024, 16384)):
    """Run every measurement; return a JSON-able record."""
    min_s = 0.5 if quick else 2.0
    results = []
    for envs in jax_envs[:2] if quick else jax_envs:
        results.append(bench_jax(envs, 1, 100, quad.AERO_OFF, min_s))
    results.append(bench_jax(64, SWARM, 100, quad.AERO_ON, min_s))
    results.append(bench_mujoco_rollout(256, 100, min_s))
    results.append(bench_stepper("mujoco", SWARM, 100, DT_S, min_s))
    for aero, downwash in (
        (quad.AERO_OFF, "vectorised"),
        (quad.AERO_ON, "vectorised"),
        (quad.AERO_ON, "loop"),
    ):
        results.append(
            bench_stepper(
                "pybullet", SWARM, 48, PYBULLET_DT_S, min_s, aero=aero, downwash=downwash
            )
        )
    if not quick:
        results.append(bench_mjx(mjx_envs, 20, min_s))
    loop = next(r for r in results if "loop" in r["backend"])
    vec = next(r for r in results if "vectorised" in r["backend"] and r["aero"])
    return {
        "machine": machine_description(),
        "jax": __import__("jax").__version__,
        "mujoco": __import__("mujoco").__version__,
        "pybullet_api": __import__("pybullet").getAPIVersion(),
        "date": time.strftime("%Y-%m-%d"),
        "platform": platform.platform(),
        "results": results,
        "pybullet_aero_vectorised_vs_loop": vec["drone_steps_per_s"] / loop["drone_steps_per_s"],
    }


def _table(record: dict) -> str:
    lines = [
        "| backend | device | envs x drones | aero | drone-steps/s | real-time factor |",
        "|---|---|---:|:---:|---:|---:|",
    ]
    for r in record["results"]:
        rtf = f"{r['real_time_factor']:.2f}x" if "real_time_factor" in r else "-"
        lines.append(
            f"| {r['backend']} | {r.get('device', 'cpu')} | {r['envs']} x {r['drones_per_env']} "
            f"| {'on' if r['aero'] else 'off'} | {r['drone_steps_per_s']:,.0f} | {rtf} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter timings, no MJX")
    parser.add_argument("--mjx-envs", type=int, default=256, help="MJX batch size")
    parser.add_argument(
        "--jax-envs", default="1,1024,16384", help="JAX batch sizes, comma-separated"
    )
    parser.add_argument("--out", help="write the record as JSON here")
    args = parser.parse_args(argv)
    envs = tuple(int(e) for e in args.jax_envs.split(","))
    record = run(args.quick, args.mjx_envs, envs)
    m = record["machine"]
    print(f"machine: {m['cpu']}, {m['cores']} cores, {m['os']}, Python {m['python']}")
    print(f"jax {record['jax']}, mujoco {record['mujoco']}, date {record['date']}")
    print(_table(record))
    print(
        "PyBullet 40 drones with aerodynamics, vectorised downwash vs per-pair Python loop: "
        f"{record['pybullet_aero_vectorised_vs_loop']:.2f}x"
    )
    if args.out:
        with open(args.out, "w") as f:
            json.dump(record, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
