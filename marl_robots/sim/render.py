"""Pictures of a navigation rollout: a trajectory PNG and an animated GIF (matplotlib)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _setup(ax, arena, obstacles, mask):
    from matplotlib.patches import Circle, Rectangle  # noqa: PLC0415

    x0, x1, y0, y1 = arena
    ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=1.5, color="k"))
    for (cx, cy, r), real in zip(obstacles, mask):
        if real:
            ax.add_patch(Circle((cx, cy), r, color="0.5"))
    ax.set_xlim(x0 - 0.05, x1 + 0.05)
    ax.set_ylim(y0 - 0.05, y1 + 0.05)
    ax.set_aspect("equal")
    ax.set_xlabel("x [m]")
    ax.set_ylabel("y [m]")


def plot_trajectories(path: Path, pos, goal, obstacles, mask, arena, diameter, title="") -> None:
    """Write a PNG of every robot's path (start dot, goal cross, final body disc)."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    from matplotlib.patches import Circle  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(8, 5.2), dpi=110)
    _setup(ax, arena, obstacles, mask)
    colours = plt.cm.tab20(np.linspace(0, 1, pos.shape[1]))
    for i, c in enumerate(colours):
        ax.plot(pos[:, i, 0], pos[:, i, 1], color=c, lw=1.0)
        ax.plot(*pos[0, i], "o", color=c, ms=3)
        ax.plot(*goal[i], "x", color=c, ms=5)
        ax.add_patch(Circle(pos[-1, i], diameter / 2, color=c, alpha=0.7))
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def animate(
    path: Path, pos, yaw, goal, obstacles, mask, arena, diameter, dt, frames=120, title=""
) -> None:
    """Write an animated GIF with at most ``frames`` frames sampled evenly over the rollout."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    from matplotlib.animation import FuncAnimation, PillowWriter  # noqa: PLC0415
    from matplotlib.patches import Circle  # noqa: PLC0415

    idx = np.unique(np.linspace(0, pos.shape[0] - 1, min(frames, pos.shape[0])).astype(int))
    fig, ax = plt.subplots(figsize=(6.4, 4.3), dpi=80)
    _setup(ax, arena, obstacles, mask)
    colours = plt.cm.tab20(np.linspace(0, 1, pos.shape[1]))
    ax.scatter(goal[:, 0], goal[:, 1], marker="x", c=colours, s=20)
    discs = [ax.add_patch(Circle(pos[0, i], diameter / 2, color=c)) for i, c in enumerate(colours)]
    heads = ax.quiver(
        pos[0, :, 0], pos[0, :, 1], np.cos(yaw[0]), np.sin(yaw[0]), scale=40, width=0.004
    )
    label = ax.set_title(title)

    def draw(k):
        t = idx[k]
        for i, d in enumerate(discs):
            d.center = pos[t, i]
        heads.set_offsets(pos[t])
        heads.set_UVC(np.cos(yaw[t]), np.sin(yaw[t]))
        label.set_text(f"{title}  t = {t * dt:5.1f} s")
        return [*discs, heads, label]

    anim = FuncAnimation(fig, draw, frames=len(idx), blit=False)
    anim.save(path, writer=PillowWriter(fps=15))
    plt.close(fig)
