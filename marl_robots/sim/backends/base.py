"""The interface every quadrotor backend implements, and helpers they share."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from marl_robots.sim.robots import crazyflie_params as cf
from marl_robots.sim.robots.quadrotor import AERO_OFF, Aero, QuadState

#: Default physics step [s] (500 Hz, the Crazyflie's attitude-loop rate).
DEFAULT_DT_S = 0.002


class QuadBackend(Protocol):
    """``n`` quadrotors in one simulator.

    Attributes:
        name: registry name.
        n: number of drones.
        dt: physics step [s].
        aero: aerodynamic effects simulated.
        params: the physical parameters (NumPy float64 leaves).
    """

    name: str
    n: int
    dt: float
    aero: Aero
    params: cf.QuadParams

    def reset(self, state: QuadState) -> None:
        """Set every drone's state (NumPy arrays, shapes as ``QuadState``)."""

    def step(self, action: np.ndarray) -> QuadState:
        """Apply rotor thrust commands ``[n, 4]`` [N] for one ``dt``; return the new state."""

    def get_state(self) -> QuadState:
        """The current state (NumPy float64)."""

    def rollout(self, state: QuadState, actions: np.ndarray) -> QuadState:
        """Open-loop run from ``state`` with ``actions [T, n, 4]``.

        Returns the states after each step, each leaf with a leading ``T`` axis.
        """


def as_numpy_state(state: QuadState) -> QuadState:
    """The same state with float64 NumPy leaves."""
    return QuadState(*(np.asarray(x, dtype=np.float64) for x in state))


def check_action(action, n: int) -> np.ndarray:
    """Rotor thrust commands as a float64 ``[n, 4]`` array; raise on a wrong shape."""
    action = np.asarray(action, dtype=np.float64)
    if action.shape != (n, cf.ROTORS):
        raise ValueError(f"expected rotor thrusts of shape ({n}, {cf.ROTORS}), got {action.shape}")
    return action


def same_params(a: cf.QuadParams, b: cf.QuadParams) -> bool:
    """Whether two parameter sets hold the same numbers (float32 rounding allowed)."""
    return all(
        np.allclose(np.asarray(x, np.float64), np.asarray(y, np.float64), rtol=1e-6, atol=0)
        for x, y in zip(a, b, strict=True)
    )


def stack_states(states: list[QuadState]) -> QuadState:
    """Stack per-step states into one ``QuadState`` with a leading time axis."""
    return QuadState(*(np.stack(leaf) for leaf in zip(*states, strict=True)))


__all__ = ["AERO_OFF", "DEFAULT_DT_S", "QuadBackend", "as_numpy_state", "check_action"]
