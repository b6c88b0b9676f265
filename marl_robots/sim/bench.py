"""``marl-robots bench navigation``: closed-loop throughput, JAX (vmap + scan) vs a NumPy loop.

For each number of parallel environments and filter on/off, the JAX closed loop (neighbour
graph, go-to-goal, CBF filter, dynamics, metrics) runs ``steps`` periods in one compiled
``lax.scan`` over ``vmap``-ed environments; compile time is excluded and reported separately.
The baseline is ``sim.numpy_loop.numpy_step``, the same work in plain NumPy called once per
environment per step from Python, timed in the same process on the same machine.

Each filtered row also reports the filter's share of the step time (``1 - t_none / t_cbf``,
against the unfiltered row of the same batch size, measured in the same run) and the fraction
of robot-steps in which the filter changed the nominal command (every robot-step that needed
a projection changes it; the few more are commands clipped to the actuator limits only).
The device JAX ran on is recorded with the machine (a GPU when one is present).

``devices``: each JAX row is measured on 1 device and, where the batch divides, on several.
On the CPU backend the extra devices are XLA host devices (``jax_num_cpu_devices``, set before
JAX starts its backend, default one per core): the environment batch is split across them with
``jax.shard_map`` and each device runs its shard's whole closed loop (neighbour graph, filter
with its own compaction, dynamics) on its own core, so a 2-core machine runs two halves at
once.  The per-environment results are the same as on one device
(``tests/test_filter_fast_path.py``).
The NumPy loop is measured as before, one environment and one step per Python call.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from marl_robots.core.machine import machine_description as base_machine_description
from marl_robots.sim.closed_loop import rollout
from marl_robots.sim.numpy_loop import numpy_step, to_numpy_inputs
from marl_robots.sim.run import RunSpec, build


def machine_description() -> dict:
    """The machine (``core.machine``) plus the JAX version, device and device count."""
    dev = jax.devices()[0]
    return base_machine_description() | {
        "jax": jax.__version__,
        "jax_device": f"{dev.platform}:{getattr(dev, 'device_kind', '')}",
        "jax_device_count": jax.device_count(),
    }


def use_host_devices(count: int) -> int:
    """Ask for ``count`` XLA host devices on the CPU backend; return how many JAX has.

    Takes effect only before JAX has started its backend (the first computation); later, or
    on a GPU, the devices JAX already has are kept.
    """
    try:
        jax.config.update("jax_num_cpu_devices", count)
    except RuntimeError:  # the backend already started
        pass
    return jax.device_count()


def default_devices() -> tuple[int, ...]:
    """1 and, on a machine with more cores, one device per core."""
    cores = os.cpu_count() or 1
    return (1, cores) if cores > 1 else (1,)


def sharded_rollout(fn, states, devices: int):
    """``(fn', states')``: ``fn`` over the environment axis split across ``devices`` devices.

    Each device runs ``fn`` on its own ``envs / devices`` environments (``jax.shard_map``);
    ``fn`` must treat environments independently and return per-environment leaves.
    """
    if devices == 1:
        return fn, states
    mesh = Mesh(np.array(jax.devices()[:devices]), ("envs",))
    spec = P("envs")
    sharded = jax.shard_map(fn, mesh=mesh, in_specs=spec, out_specs=spec, check_vma=False)
    return sharded, jax.device_put(states, NamedSharding(mesh, spec))


def jax_rate(
    spec: RunSpec, envs: int, steps: int, repeats: int, devices: int = 1
) -> tuple[float, float, float]:
    """(env-steps/s, compile time [s], fraction of robot-steps the filter changed)."""
    task, cfg, params, cbf = build(spec)
    keys = jax.random.split(jax.random.PRNGKey(spec.seed), envs)
    states = jax.vmap(lambda k: task.reset(k, params))(keys)
    # A batched rollout (not a vmap of single ones): see ``closed_loop.control``.
    fn, states = sharded_rollout(
        lambda s: rollout(task, cfg, s, params, cbf, steps, record=False)[:2], states, devices
    )
    fn = jax.jit(fn)
    t0 = time.perf_counter()
    compiled = fn.lower(states).compile()
    compile_s = time.perf_counter() - t0
    _, agg = jax.block_until_ready(compiled(states))  # warm-up
    changed = float(np.sum(np.asarray(agg.interventions))) / (envs * steps * spec.robots)
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(states))
        best = min(best, time.perf_counter() - t0)
    return envs * steps / best, compile_s, changed


def _numpy_rate(spec: RunSpec, envs: int, budget_s: float) -> float:
    task, cfg, params, cbf = build(spec)
    keys = jax.random.split(jax.random.PRNGKey(spec.seed), envs)
    states = [to_numpy_inputs(task.reset(k, params), params, cbf) for k in keys]
    done = 0
    t0 = time.perf_counter()
    # Whole sweeps over all environments until the time budget is spent (at least one).
    while True:
        for i, (s, p, c) in enumerate(states):
            nxt = numpy_step(task, cfg, s, p, c)[0]
            states[i] = (nxt, p, c)
        done += envs
        if time.perf_counter() - t0 >= budget_s:
            break
    return done / (time.perf_counter() - t0)


def run_bench(
    robots=16,
    envs_list=(1, 64, 1024),
    steps=100,
    repeats=3,
    numpy_budget_s=2.0,
    seed=0,
    log=print,
    devices=(1,),
) -> dict:
    """Measure every (envs, filter, devices) row and return the report dict.

    ``devices``: device counts to run each batch on (those above ``jax.device_count()``, and
    those that do not divide the batch, are left out).
    """
    rows = []
    unfiltered = {}
    for filt in ("none", "cbf"):
        spec = RunSpec(robots=robots, scenario="random", filter=filt, seed=seed)
        for envs in envs_list:
            base = _numpy_rate(spec, min(envs, 64), numpy_budget_s)
            for dev in devices:
                if dev > jax.device_count() or envs % dev or (dev > 1 and envs < 2 * dev):
                    continue
                rate, compile_s, changed = jax_rate(spec, envs, steps, repeats, dev)
                if filt == "none":
                    unfiltered[envs, dev] = rate
                ref = unfiltered.get((envs, dev))
                share = max(0.0, 1.0 - rate / ref) if filt != "none" and ref else 0.0
                row = {
                    "envs": envs,
                    "robots": robots,
                    "filter": filt,
                    "devices": dev,
                    "env_steps_per_s": rate,
                    "robot_steps_per_s": rate * robots,
                    "numpy_loop_env_steps_per_s": base,
                    "speedup_vs_numpy_loop": rate / base,
                    "compile_time_s": compile_s,
                    "filter_share_of_step_time": share,
                    "filter_changed_fraction": changed,
                }
                rows.append(row)
                log(
                    f"{envs:>6} {robots:>6} {filt:>6} {dev:>7} {rate:>14,.0f} "
                    f"{rate * robots:>16,.0f} {base:>12,.0f} {rate / base:>9.1f}x "
                    f"{100 * share:>8.0f}% {100 * changed:>9.2f}%"
                )
    return {
        "machine": machine_description(),
        "scenario": "random",
        "steps_per_call": steps,
        "rows": rows,
    }


def main_bench(out: Path | None, robots: int, envs_list, steps: int, devices=None) -> int:
    """Print the table, write JSON to ``out`` (if given); return the exit code.

    ``devices``: device counts per batch (default ``default_devices()``: 1 and one per core).
    """
    devices = tuple(devices) if devices else default_devices()
    available = use_host_devices(max(devices))
    print(f"machine: {json.dumps(machine_description())}")
    if max(devices) > available:
        print(f"note: only {available} JAX device(s); rows on more are left out", flush=True)
    print(
        f"{'envs':>6} {'robots':>6} {'filter':>6} {'devices':>7} {'env-steps/s':>14} "
        f"{'robot-steps/s':>16} {'numpy env/s':>12} {'speedup':>10} {'filter%':>9} "
        f"{'changed%':>10}"
    )
    report = run_bench(
        robots=robots,
        envs_list=envs_list,
        steps=steps,
        log=lambda s: print(s, flush=True),
        devices=devices,
    )
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {out}", file=sys.stderr)
    return 0
