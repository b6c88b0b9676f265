"""Filtered throughput side by side with JaxRobotarium's Navigation (a command, not a test).

    python -m marl_robots.sim.jaxrobotarium_bench --robots 7 --envs 1024 --devices 1,2

In one process, on the same devices, it times

* **ours**: ``bench navigation``'s closed loop with the CBF filter on every robot (``random``
  scenario, unicycles; ``sim.bench.jax_rate``);
* **JaxRobotarium**: ``jaxrobotarium.scenarios.navigation.Navigation`` with its
  ``clf_uni_position`` controller and its ``robust_barriers`` barrier certificate (a QP solved
  by ``jaxopt.BoxCDQP``), one simulator update per step, ``vmap`` over environments and
  ``lax.scan`` over ``--steps`` steps, the batch split across the devices by its sharding;

and prints robot-steps/s of both and their ratio, with the machine.  Their Navigation places
2N start and goal points on a 15-cell grid, so it takes at most 7 robots.

JaxRobotarium is not a dependency: bring it (GT-STAR-Lab/JaxRobotarium, with its
``robotarium_python_simulator`` submodule's ``rps_jax``) and its extra imports (``chex``,
``jaxopt``) onto ``PYTHONPATH``; without them the command says so and exits 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

#: Their Navigation's largest team (2N points on 15 grid cells).
MAX_ROBOTS = 7


def _theirs(robots: int, envs: int, steps: int, repeats: int, devices: int) -> float:
    """Robot-steps/s of JaxRobotarium's Navigation with its robust barriers."""
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415
    from jax.sharding import Mesh, NamedSharding  # noqa: PLC0415
    from jax.sharding import PartitionSpec as P  # noqa: PLC0415
    from jaxrobotarium.scenarios.navigation import Navigation  # noqa: PLC0415

    env = Navigation(num_agents=robots, action_type="Continuous", max_steps=10**9,
                     update_frequency=1,
                     controller={"controller": "clf_uni_position",
                                 "barrier_fn": "robust_barriers"})
    _, states = jax.vmap(env.reset)(jax.random.split(jax.random.PRNGKey(0), envs))
    mesh = Mesh(jax.devices()[:devices], ("envs",))

    def place(leaf):
        if getattr(leaf, "ndim", 0) and leaf.shape[0] == envs:
            return jax.device_put(leaf, NamedSharding(mesh, P("envs")))
        return leaf

    states = jax.tree_util.tree_map(place, states)
    keys = place(jax.random.split(jax.random.PRNGKey(1), envs))
    goals = {f"agent_{i}": place(jnp.tile(jnp.array([0.5, 0.3]), (envs, 1)))
             for i in range(robots)}

    def body(s, _):
        return jax.vmap(env.step_env)(keys, s, goals)[1], None

    run = jax.jit(lambda s: jax.lax.scan(body, s, None, length=steps)[0])
    jax.block_until_ready(run(states))  # compile + warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(run(states))
        best = min(best, time.perf_counter() - t0)
    return envs * steps * robots / best


def main(argv=None) -> int:
    """Run both sides on every device count, print the rows and write the JSON record."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--robots", type=int, default=MAX_ROBOTS)
    parser.add_argument("--envs", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--devices", default="1,2", help="comma-separated device counts")
    parser.add_argument("--json", type=Path, default=Path("jaxrobotarium_bench.json"))
    args = parser.parse_args(argv)
    try:
        devices = [int(d) for d in args.devices.split(",")]
    except ValueError:
        print(f"error: --devices must be integers, got {args.devices!r}", file=sys.stderr)
        return 2
    if not 1 <= args.robots <= MAX_ROBOTS or args.envs < 1 or min(devices) < 1:
        print(f"error: --robots must be 1..{MAX_ROBOTS} (their Navigation's limit), --envs and "
              "--devices >= 1", file=sys.stderr)
        return 2
    from marl_robots.sim.bench import jax_rate, machine_description, use_host_devices

    available = use_host_devices(max(devices))
    try:
        import jaxrobotarium.scenarios.navigation  # noqa: F401, PLC0415
    except ImportError as err:
        print(f"error: JaxRobotarium is not importable ({err}); see this module's docstring",
              file=sys.stderr)
        return 2
    from marl_robots.sim.run import RunSpec  # noqa: PLC0415

    spec = RunSpec(robots=args.robots, scenario="random", filter="cbf", seed=0)
    rows = []
    print(f"{'devices':>7} {'ours robot-steps/s':>20} {'JaxRobotarium':>15} {'ratio':>7}")
    for dev in devices:
        if dev > available or args.envs % dev:
            print(f"{dev:>7} left out ({available} devices, {args.envs} environments)")
            continue
        ours = jax_rate(spec, args.envs, args.steps, args.repeats, dev)[0] * args.robots
        theirs = _theirs(args.robots, args.envs, args.steps, args.repeats, dev)
        rows.append({"devices": dev, "ours_robot_steps_per_s": ours,
                     "jaxrobotarium_robot_steps_per_s": theirs, "ratio": ours / theirs})
        print(f"{dev:>7} {ours:>20,.0f} {theirs:>15,.0f} {ours / theirs:>6.1f}x", flush=True)
    record = {"benchmark": "filtered robot-steps/s vs JaxRobotarium Navigation (robust_barriers)",
              "machine": machine_description(), "robots": args.robots, "envs": args.envs,
              "steps_per_call": args.steps, "rows": rows}
    args.json.write_text(json.dumps(record, indent=2))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
