"""``marl-robots train``: the MAPPO loop with progress, metrics files, checkpoints, resume.

Files under ``--out``:

* ``metrics.jsonl`` and ``metrics.csv`` - one row per update (env steps, wall time, steps/s,
  mean reward per robot-step, episodes finished, success at episode end, collisions, filter
  interventions, losses, entropy, gradient norm);
* ``events.out.tfevents.*`` - the same scalars for TensorBoard, when ``tensorboardX`` is
  installed;
* ``checkpoint/`` - the whole training state (msgpack) every ``--checkpoint-every`` updates
  and at the end; ``--resume`` continues from it bit-for-bit; ``--init RUN`` starts a new
  run (its own scenarios, envs, seed) from another run's networks, optimiser and
  normalisation statistics (``warm_start``: fine-tuning);
* ``policy/`` - the trained policy bundle (``params.msgpack``, ``policy.json``), what
  ``marl-robots eval`` reads;
* ``learning_curve.png`` - reward and success against env steps.
"""

from __future__ import annotations

import csv
import json
import platform
import sys
import time
from pathlib import Path

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

from marl_robots.policies.mappo import (
    TrainConfig,
    load_checkpoint,
    save_checkpoint,
    save_policy,
    trainer_for,
)

LOG_KEYS = (
    "reward",
    "episodes",
    "success",
    "collisions",
    "interventions",
    "policy_loss",
    "value_loss",
    "entropy",
    "grad_norm",
)


def device_name() -> str:
    """The JAX device the run uses, in words."""
    d = jax.devices()[0]
    kind = getattr(d, "device_kind", d.platform)
    return f"{d.platform}: {kind} x{jax.device_count()} ({platform.processor() or 'cpu'})"


def _tb_writer(out: Path):
    try:
        from tensorboardX import SummaryWriter  # noqa: PLC0415 - optional
    except ImportError:
        return None
    return SummaryWriter(str(out))


def plot_curve(path: Path, rows: list[dict]) -> None:
    """Learning curve: mean reward and success at episode end against env steps."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    steps = [r["env_steps"] for r in rows]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    ax[0].plot(steps, [r["reward"] for r in rows])
    ax[0].set(xlabel="env steps", ylabel="reward per robot-step")
    ax[1].plot(steps, [r["success"] for r in rows])
    ax[1].set(xlabel="env steps", ylabel="success at episode end", ylim=(-0.02, 1.02))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


#: What a warm start takes from another run's checkpoint: the networks, the optimiser state and
#: the observation / return statistics.  The environments, the key and the update count start
#: afresh, from this run's configuration and seed.
WARM_FIELDS = ("actor", "critic", "opt_state", "obs_stats", "ret_stats")


def warm_start(ts, run: Path):
    """``ts`` with ``WARM_FIELDS`` taken from the checkpoint of the run folder ``run``.

    Raises:
        ValueError: no checkpoint there, or its networks differ from this configuration's
            (policy kind, width, critic, observation layout), naming the first difference.
    """
    ckpt = Path(run) / "checkpoint" / "state.msgpack"
    if not ckpt.is_file():
        raise ValueError(f"--init: no checkpoint in {Path(run) / 'checkpoint'}")
    try:
        saved = flax.serialization.msgpack_restore(ckpt.read_bytes())
    except Exception as err:  # msgpack raises several kinds on a truncated or garbled file
        raise ValueError(f"--init: cannot read {ckpt} ({type(err).__name__})") from None
    fields = {}
    for name in WARM_FIELDS:
        mine = getattr(ts, name)
        try:
            theirs = flax.serialization.from_state_dict(mine, saved[name], name=name)
        except (KeyError, ValueError) as err:
            raise ValueError(f"--init: {run} has another {name} structure ({err})") from None
        for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(mine),
                                jax.tree_util.tree_leaves(theirs), strict=True):
            if np.shape(a) != np.shape(b):
                where = name + jax.tree_util.keystr(path)
                raise ValueError(f"--init: {run} has {where} of shape {np.shape(b)}, this "
                                 f"configuration needs {np.shape(a)}")
        fields[name] = jax.tree_util.tree_map(jnp.asarray, theirs)
    return ts._replace(**fields)


def train(
    config: TrainConfig,
    total_steps: int,
    seed: int,
    out: Path,
    resume: bool = False,
    checkpoint_every: int = 10,
    quiet: bool = False,
    init: Path | None = None,
) -> dict:
    """Train, writing the files above; returns the final summary dict.

    ``init``: a run folder to warm-start from (``warm_start``; ignored with ``resume``, whose
    checkpoint already carries it).
    """
    out.mkdir(parents=True, exist_ok=True)
    trainer = trainer_for(config)
    per_update = config.num_envs * config.rollout_steps
    updates = max(1, int(total_steps) // per_update)
    chunk = max(1, min(checkpoint_every, updates))
    ts = trainer.init(seed)
    rows: list[dict] = []
    wall0 = 0.0
    ckpt = out / "checkpoint"
    if resume:
        ts, meta = load_checkpoint(ckpt, ts)
        # Compared as configs: a field added since the checkpoint reads back as its default.
        if TrainConfig.from_json(meta["config"]) != config or meta["seed"] != seed:
            raise ValueError(f"--resume: {ckpt} was written by a different configuration or seed")
        jsonl = out / "metrics.jsonl"
        if jsonl.is_file():
            rows = [json.loads(line) for line in jsonl.read_text().splitlines() if line]
            rows = [r for r in rows if r["update"] <= int(ts.update)]
        wall0 = float(meta.get("wall_time_s", 0.0))
        init = meta.get("init")
    elif init is not None:
        ts = warm_start(ts, init)
    init = str(init) if init is not None else None
    log = (lambda *a: None) if quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    log(
        f"train {config.policy}: {config.robots} {config.robot} robots, {config.scenario}, "
        f"{config.num_envs} envs x {config.rollout_steps} steps/update, {updates} updates, "
        f"device {device_name()}"
    )
    t0 = time.perf_counter()

    def program(k):
        return trainer.compiled(k, ts)

    program(chunk)
    compile_s = time.perf_counter() - t0
    log(f"  compiled in {compile_s:.1f} s")
    tb = _tb_writer(out)
    start_update = int(ts.update)
    t_run = time.perf_counter()
    with (out / "metrics.jsonl").open("a" if resume else "w") as jf:
        while int(ts.update) < updates:
            k = min(chunk, updates - int(ts.update))
            t1 = time.perf_counter()
            ts, logs = program(k)(ts)
            logs = jax.device_get(logs)
            dt = time.perf_counter() - t1
            for i in range(k):
                u = int(ts.update) - k + i + 1
                row = {"update": u, "env_steps": u * per_update}
                row.update({key: float(np.asarray(logs[key])[i]) for key in LOG_KEYS})
                row["env_steps_per_s"] = per_update * k / dt
                row["wall_time_s"] = wall0 + time.perf_counter() - t_run + compile_s
                rows.append(row)
                jf.write(json.dumps(row) + "\n")
                if tb is not None:
                    for key in LOG_KEYS + ("env_steps_per_s",):
                        tb.add_scalar(key, row[key], row["env_steps"])
            jf.flush()
            last = rows[-1]
            done_u = int(ts.update)
            rate = per_update * (done_u - start_update) / (time.perf_counter() - t_run)
            eta = (updates - done_u) * per_update / max(rate, 1e-9)
            log(
                f"  update {done_u}/{updates}  env-steps {last['env_steps']:,}  "
                f"{last['env_steps_per_s']:,.0f} env-steps/s "
                f"({last['env_steps_per_s'] * config.robots:,.0f} robot-steps/s)  "
                f"reward {last['reward']:.3f}  success {last['success']:.2f}  "
                f"collisions {last['collisions']:.0f}  ETA {eta:,.0f} s"
            )
            save_checkpoint(ckpt, ts, config,
                            {"seed": seed, "wall_time_s": last["wall_time_s"], "init": init})
    if tb is not None:
        tb.close()
    if rows:
        with (out / "metrics.csv").open("w", newline="") as cf:
            w = csv.DictWriter(cf, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        plot_curve(out / "learning_curve.png", rows)
    wall = wall0 + compile_s + time.perf_counter() - t_run
    summary = {
        "policy": config.policy,
        "seed": seed,
        "updates": int(ts.update),
        "env_steps": int(ts.update) * per_update,
        "wall_time_s": wall,
        "device": device_name(),
        "init": init,
        "final": rows[-1] if rows else None,
    }
    save_policy(out / "policy", config.policy, ts.actor, config, {"training": summary})
    return summary
