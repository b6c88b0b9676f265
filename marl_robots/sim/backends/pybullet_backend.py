"""PyBullet backend (CPU) with optional drag, ground effect and downwash between drones.

Each drone is ``sim/crazyflie2/crazyflie2.urdf`` (one rigid link, Förster's inertia, no
contacts).  The motor lag and every force are computed for all drones at once in NumPy by
``sim.robots.quadrotor`` -- the functions the JAX backend runs -- and PyBullet integrates the
rigid bodies: per step one world-frame force at the centre of mass and one world-frame torque
per drone, then ``stepSimulation``.  Gravity is part of the applied force (PyBullet's is 0).

Downwash is vectorised over the ``[n, n]`` pair matrix (``quadrotor.downwash_forces``).
``downwash="loop"`` selects ``downwash_forces_loop``, a Python loop over drone pairs as in
gym-pybullet-drones, kept as the benchmark baseline and the test oracle.
"""

from __future__ import annotations

import math

import numpy as np

from marl_robots.core import math3d
from marl_robots.core.paths import content_path
from marl_robots.sim.backends.base import (
    DEFAULT_DT_S,
    check_action,
    same_params,
    stack_states,
)
from marl_robots.sim.robots import crazyflie_params as cf
from marl_robots.sim.robots import quadrotor
from marl_robots.sim.robots.quadrotor import AERO_OFF, Aero, QuadState

URDF_PARTS = ("sim", "crazyflie2", "crazyflie2.urdf")
DOWNWASH_IMPLS = ("vectorised", "loop")


def downwash_forces_loop(pos, params: cf.QuadParams) -> np.ndarray:
    """Reference downwash [N] ``[n, 3]``, one drone pair at a time in plain Python.

    The model of ``quadrotor.downwash_forces`` written as the per-pair loop of
    gym-pybullet-drones: the benchmark baseline and the test oracle.
    """
    alpha, b1, b0 = (float(c) for c in params.downwash_coeffs)
    r_p = float(params.prop_radius_m)
    weight = float(params.mass_kg * params.gravity_mps2)  # the peak's cap (momentum bound)
    out = np.zeros((len(pos), 3))
    for i in range(len(pos)):
        for j in range(len(pos)):
            dz = pos[j][2] - pos[i][2]
            if i == j or dz <= 0.0:
                continue
            dz = max(dz, r_p)
            d2 = (pos[j][0] - pos[i][0]) ** 2 + (pos[j][1] - pos[i][1]) ** 2
            beta = b1 * dz + b0
            peak = min(alpha * (r_p / (4.0 * dz)) ** 2, weight)
            out[i, 2] -= peak * math.exp(-0.5 * d2 / max(beta * beta, 1e-12))
    return out


class PybulletBackend:
    """``n`` drones in one PyBullet world (``DIRECT`` mode, no GUI)."""

    name = "pybullet"

    def __init__(
        self,
        n: int,
        params: cf.QuadParams | None = None,
        dt: float = DEFAULT_DT_S,
        aero: Aero = AERO_OFF,
        downwash: str = "vectorised",
    ) -> None:
        import pybullet as pb  # noqa: PLC0415 - optional dependency

        if downwash not in DOWNWASH_IMPLS:
            raise ValueError(f"unknown downwash {downwash!r}; known: {', '.join(DOWNWASH_IMPLS)}")
        self._pb = pb
        self.n, self.dt, self.aero, self.downwash = n, dt, aero, downwash
        if params is not None and not same_params(params, cf.crazyflie_params()):
            raise ValueError("the PyBullet backend simulates the URDF's mass and inertia only")
        self.params = cf.crazyflie_params()  # NumPy float64 copy of the model file's numbers
        self.client = pb.connect(pb.DIRECT)
        pb.setGravity(0.0, 0.0, 0.0, physicsClientId=self.client)
        pb.setTimeStep(dt, physicsClientId=self.client)
        urdf = str(content_path(*URDF_PARTS))
        self.bodies = []
        for i in range(n):
            body = pb.loadURDF(
                urdf,
                [float(i), 0.0, 1.0],
                flags=pb.URDF_USE_INERTIA_FROM_FILE,
                physicsClientId=self.client,
            )
            # PyBullet damps multibody bases by default (0.04); a drone in air is undamped
            # apart from the drag model.  Contacts are off, as in the MuJoCo model.
            pb.changeDynamics(
                body, -1, linearDamping=0.0, angularDamping=0.0, physicsClientId=self.client
            )
            pb.setCollisionFilterGroupMask(body, -1, 0, 0, physicsClientId=self.client)
            self.bodies.append(body)
        self.thrust = np.zeros((n, cf.ROTORS))
        self.reset(quadrotor.hover_state(np.zeros((n, 3)) + [0.0, 0.0, 1.0], self.params))

    def close(self) -> None:
        """Disconnect the PyBullet client."""
        if self.client is not None:
            self._pb.disconnect(physicsClientId=self.client)
            self.client = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def reset(self, state: QuadState) -> None:
        pb, c = self._pb, self.client
        rot = math3d.quat_to_matrix(np.asarray(state.quat))
        omega_world = np.einsum("nij,nj->ni", rot, state.omega)
        for i, body in enumerate(self.bodies):
            pb.resetBasePositionAndOrientation(
                body, state.pos[i].tolist(), state.quat[i].tolist(), physicsClientId=c
            )
            pb.resetBaseVelocity(
                body, state.vel[i].tolist(), omega_world[i].tolist(), physicsClientId=c
            )
        self.thrust = np.array(state.thrust, np.float64)

    def get_state(self) -> QuadState:
        pb, c = self._pb, self.client
        pos, quat, vel, omega_world = (np.empty((self.n, k)) for k in (3, 4, 3, 3))
        for i, body in enumerate(self.bodies):
            pos[i], quat[i] = pb.getBasePositionAndOrientation(body, physicsClientId=c)
            vel[i], omega_world[i] = pb.getBaseVelocity(body, physicsClientId=c)
        rot = math3d.quat_to_matrix(quat)
        omega = np.einsum("nji,nj->ni", rot, omega_world)
        return QuadState(pos=pos, vel=vel, quat=quat, omega=omega, thrust=self.thrust.copy())

    def step(self, action) -> QuadState:
        pb, c = self._pb, self.client
        action = check_action(action, self.n)
        state = self.get_state()
        local = self.aero._replace(downwash=self.aero.downwash and self.downwash == "vectorised")
        force, torque = quadrotor.wrench(state, self.params, local)
        if self.aero.downwash and self.downwash == "loop":
            force = force + downwash_forces_loop(state.pos, self.params)
        torque_world = np.einsum("nij,nj->ni", math3d.quat_to_matrix(state.quat), torque)
        for i, body in enumerate(self.bodies):
            pb.applyExternalForce(
                body,
                -1,
                force[i].tolist(),
                state.pos[i].tolist(),
                pb.WORLD_FRAME,
                physicsClientId=c,
            )
            pb.applyExternalTorque(
                body, -1, torque_world[i].tolist(), pb.WORLD_FRAME, physicsClientId=c
            )
        pb.stepSimulation(physicsClientId=c)
        cmd = np.clip(action, 0.0, self.params.thrust_max_n)
        self.thrust = cmd + (self.thrust - cmd) * math.exp(-self.dt / self.params.motor_tau_s)
        return self.get_state()

    def rollout(self, state: QuadState, actions) -> QuadState:
        self.reset(state)
        return stack_states([self.step(a) for a in np.asarray(actions)])
