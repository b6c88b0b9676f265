r"""Ship a trained policy: copy a run's bundle into ``policies/<name>/`` with a model card.

    python -m marl_robots.policies.ship runs/x --name navigation_gnn \\
        --command "marl-robots train navigation ..." [--eval runs/eval_x/metrics.json ...]

Writes ``policies/<name>/params.msgpack`` and ``policy.json`` (the bundle ``marl-robots eval``
and ``sim --policy`` read; the CLI finds it by ``<name>`` through ``core.paths``, installed
under ``share/marl_robots/policies/``) and ``README.md``, the model card: training command,
seed, updates, env steps, wall time, device and machine, the last training row, every
``--eval`` metrics file given (scenario, robots, episodes, success, time to goal, collisions,
minimum separation), and the date.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import shutil
import sys
from pathlib import Path

from marl_robots.core.machine import machine_description

ROOT = Path(__file__).resolve().parents[2]
EVAL_KEYS = (
    "scenario",
    "robots",
    "episodes",
    "steps",
    "success_rate",
    "mean_time_to_goal_s",
    "collisions",
    "min_separation_m",
    "filter_interventions",
    "relaxed_or_infeasible_rate",
)


def _fmt(v) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def _last_update(tr: dict, final: dict) -> str:
    """The card's line on the last training update (MAPPO) or iteration (imitation)."""
    if tr.get("method") == "dagger":
        last = (tr.get("history") or [{}])[-1]
        return (
            f"- imitation (DAgger from `{tr.get('teacher')}`, scenarios "
            f"{', '.join(tr.get('scenarios', []))}): last iteration {last.get('iteration')}, "
            f"{last.get('samples', 0):,} robot-step samples, loss {last.get('loss', 0.0):.4f} "
            f"(m/s)^2, success of its noisy rollouts {json.dumps(last.get('rollout_success'))}"
        )
    return (
        f"- last update: reward per robot-step {final.get('reward', float('nan')):.3f}, "
        f"success at episode end {final.get('success', float('nan')):.2f}, "
        f"collisions {final.get('collisions', float('nan')):.0f}"
    )


def model_card(name: str, meta: dict, command: str, evals: list[dict], note: str) -> str:
    """Markdown model card of a bundle's ``policy.json`` ``meta`` and its evaluations."""
    tr = meta.get("training", {})
    cfg = meta.get("train_config", {})
    final = tr.get("final") or {}
    lines = [
        f"# `{name}` ({meta['policy']} policy)",
        "",
        note,
        "",
        "## Training",
        "",
        f"- command: `{command}`",
        f"- seed: {tr.get('seed')}; updates: {tr.get('updates')}; env steps: "
        f"{tr.get('env_steps', 0):,}",
        f"- wall time: {tr.get('wall_time_s', 0.0):.0f} s (compilation included) on "
        f"{tr.get('device')}",
        f"- machine: {json.dumps(machine_description())}",
        f"- policy options: `{json.dumps(meta.get('policy_kwargs', {}))}`",
        f"- instance: {cfg.get('robots')} {cfg.get('robot')} robots, `{cfg.get('scenario')}`, "
        f"{cfg.get('num_envs')} envs x {cfg.get('rollout_steps')} steps per update, "
        f"episodes of {cfg.get('episode_length')} steps",
        _last_update(tr, final),
        f"- date: {_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        "",
        "## Evaluation (`marl-robots eval`, CBF filter in the loop, deterministic actions)",
        "",
        "| " + " | ".join(EVAL_KEYS) + " |",
        "|" + "---|" * len(EVAL_KEYS),
    ]
    for m in evals:
        lines.append("| " + " | ".join(_fmt(m.get(k)) for k in EVAL_KEYS) + " |")
    if not evals:
        lines.append("| " + " | ".join("-" for _ in EVAL_KEYS) + " |")
    return "\n".join(lines) + "\n"


def ship(run: Path, name: str, command: str, evals: list[Path], note: str, dest: Path) -> Path:
    """Copy ``run``'s policy bundle to ``dest/name`` and write its model card."""
    src = run / "policy" if (run / "policy" / "policy.json").is_file() else run
    if not (src / "policy.json").is_file():
        raise FileNotFoundError(f"no policy bundle (policy.json) in {run} or {run}/policy")
    out = dest / name
    out.mkdir(parents=True, exist_ok=True)
    for f in ("params.msgpack", "policy.json"):
        shutil.copyfile(src / f, out / f)
    meta = json.loads((src / "policy.json").read_text())
    rows = [json.loads(Path(p).read_text()) for p in evals]
    (out / "README.md").write_text(model_card(name, meta, command, rows, note))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m marl_robots.policies.ship")
    p.add_argument("run", type=Path, help="train --out folder (or its policy/)")
    p.add_argument("--name", required=True, help="folder name under policies/")
    p.add_argument("--command", required=True, help="the training command, for the card")
    p.add_argument("--eval", action="append", default=[], type=Path, help="metrics.json")
    p.add_argument("--note", default="", help="a paragraph for the card")
    p.add_argument("--dest", type=Path, default=ROOT / "policies")
    a = p.parse_args(argv)
    try:
        out = ship(a.run, a.name, a.command, a.eval, a.note, a.dest)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"shipped {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
