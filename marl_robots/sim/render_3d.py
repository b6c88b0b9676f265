"""Pictures of a 3D (quadrotor) rollout: a trajectory PNG and a cheap animated GIF (matplotlib).

Both draw in an ``mplot3d`` axis over the arena box; the GIF samples at most ``frames`` frames
at a low resolution so that writing it stays a second or two.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _axes(fig, bounds, title, spheres=()):
    ax = fig.add_subplot(projection="3d")
    u, v = np.meshgrid(np.linspace(0, 2 * np.pi, 16), np.linspace(0, np.pi, 9))
    for x, y, z, r in spheres:  # obstacles as grey wireframes
        ax.plot_wireframe(
            x + r * np.cos(u) * np.sin(v),
            y + r * np.sin(u) * np.sin(v),
            z + r * np.cos(v),
            color="0.5",
            lw=0.4,
        )
    x0, x1, y0, y1, z0, z1 = bounds
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_zlim(z0, z1)
    ax.set_box_aspect((x1 - x0, y1 - y0, z1 - z0))
    ax.set_xlabel("x [m]")
    ax.set_ylabel("y [m]")
    ax.set_zlabel("z [m]")
    ax.set_title(title, fontsize=8)
    return ax


def plot_trajectories_3d(path: Path, pos, goal, bounds, title: str = "", spheres=()) -> None:
    """Write a PNG of every drone's path (start dot, goal cross, final position ring).

    Args:
        path: output file.
        pos: ``[T, n, 3]`` positions [m].
        goal: ``[n, 3]`` goals [m].
        bounds: arena (x_min, x_max, y_min, y_max, z_min, z_max) [m].
        title: figure title.
        spheres: spherical obstacles, each (x, y, z, radius) [m].
    """
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig = plt.figure(figsize=(6.4, 5.6), dpi=100)
    ax = _axes(fig, bounds, title, spheres)
    colours = plt.cm.tab20(np.linspace(0, 1, pos.shape[1]))
    for i, c in enumerate(colours):
        ax.plot(pos[:, i, 0], pos[:, i, 1], pos[:, i, 2], color=c, lw=1.0)
        ax.scatter(*pos[0, i], color=c, s=8)
        ax.scatter(*goal[i], color=c, marker="x", s=20)
        ax.scatter(*pos[-1, i], color=c, s=40, facecolors="none")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def animate_3d(
    path: Path, pos, goal, bounds, dt: float, title: str = "", frames: int = 60, spheres=()
):
    """Write an animated GIF of the drones (at most ``frames`` frames, 10 per second).

    Args:
        path: output file.
        pos: ``[T, n, 3]`` positions [m]; goal ``[n, 3]``; bounds as ``plot_trajectories_3d``.
        dt: time between rows of ``pos`` [s] (for the time label).
        title: figure title.
        frames: largest number of frames.
        spheres: spherical obstacles, as ``plot_trajectories_3d``.
    """
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    from matplotlib.animation import FuncAnimation, PillowWriter  # noqa: PLC0415

    idx = np.unique(np.linspace(0, pos.shape[0] - 1, min(frames, pos.shape[0])).astype(int))
    fig = plt.figure(figsize=(4.8, 4.2), dpi=70)
    ax = _axes(fig, bounds, title, spheres)
    colours = plt.cm.tab20(np.linspace(0, 1, pos.shape[1]))
    ax.scatter(goal[:, 0], goal[:, 1], goal[:, 2], c=colours, marker="x", s=15)
    dots = ax.scatter(pos[0, :, 0], pos[0, :, 1], pos[0, :, 2], c=colours, s=25)
    label = ax.text2D(0.02, 0.95, "", transform=ax.transAxes, fontsize=8)

    def draw(k):
        p = pos[idx[k]]
        dots._offsets3d = (p[:, 0], p[:, 1], p[:, 2])
        label.set_text(f"t = {idx[k] * dt:.1f} s")
        return dots, label

    anim = FuncAnimation(fig, draw, frames=len(idx), blit=False)
    anim.save(path, writer=PillowWriter(fps=10))
    plt.close(fig)
