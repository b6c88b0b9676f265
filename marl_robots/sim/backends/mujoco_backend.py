"""MuJoCo backends: CPU (``mujoco``) and MJX (``mujoco.mjx``, XLA, for GPU batching).

The CPU backend runs batched open-loop rollouts through ``mujoco.rollout`` (C, threads).

The model is ``sim/crazyflie2/crazyflie2.xml`` (content, found through ``core.paths``) copied
``n`` times into one world.  Each rotor is a site actuator: thrust along the site's z and its
reaction torque about z, with MuJoCo's own first-order lag (``filterexact``) as the motor
model, so ``mujoco.rollout`` runs the whole open-loop dynamics in C.  Contacts are disabled.

Aerodynamics (drag, ground effect, downwash) are not part of the MJCF: with ``aero`` switched on,
``MujocoBackend.step`` adds them each step as ``xfrc_applied`` computed by
``sim.robots.quadrotor`` (the same functions the JAX and PyBullet backends use); ``rollout``
then steps in Python instead of ``mujoco.rollout``.  ``MjxBackend`` runs without them.
"""

from __future__ import annotations

import copy
import functools
import xml.etree.ElementTree as ET

import numpy as np

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

MJCF_PARTS = ("sim", "crazyflie2", "crazyflie2.xml")
_PREFIX = "cf2"


def mjcf_path():
    """Path of the Crazyflie MJCF (content folder ``sim/``)."""
    return content_path(*MJCF_PARTS)


@functools.cache
def swarm_xml(n: int, dt: float) -> str:
    """MJCF text of ``n`` Crazyflies (bodies ``cf2_0 ..``, actuators ``cf2_<i>_m1 ..``)."""
    root = ET.parse(mjcf_path()).getroot()
    root.find("option").set("timestep", repr(float(dt)))
    world = root.find("worldbody")
    actuators = root.find("actuator")
    body = world.find("body")
    acts = list(actuators)
    world.remove(body)
    for a in acts:
        actuators.remove(a)

    def rename(elem, i):
        for e in elem.iter():
            for attr in ("name", "site"):
                if attr in e.attrib:
                    e.set(attr, e.get(attr).replace(_PREFIX, f"{_PREFIX}_{i}", 1))

    for i in range(n):
        b = copy.deepcopy(body)
        rename(b, i)
        b.set("pos", f"{i} 0 1")
        world.append(b)
        for a in acts:
            a2 = copy.deepcopy(a)
            rename(a2, i)
            actuators.append(a2)
    return ET.tostring(root, encoding="unicode")


def load_model(n: int, dt: float = DEFAULT_DT_S):
    """An ``mujoco.MjModel`` of ``n`` Crazyflies with time step ``dt`` [s]."""
    import mujoco  # noqa: PLC0415 - optional dependency

    return mujoco.MjModel.from_xml_string(swarm_xml(n, dt))


def _wxyz(quat_xyzw, xp=np):
    return xp.concatenate([quat_xyzw[..., 3:4], quat_xyzw[..., :3]], axis=-1)


def _xyzw(quat_wxyz, xp=np):
    return xp.concatenate([quat_wxyz[..., 1:4], quat_wxyz[..., 0:1]], axis=-1)


def state_to_mujoco(state: QuadState):
    """``(qpos [7n], qvel [6n], act [4n])`` of a ``QuadState`` (MuJoCo quaternions are w-first)."""
    n = state.pos.shape[0]
    qpos = np.concatenate([state.pos, _wxyz(np.asarray(state.quat))], axis=-1).reshape(7 * n)
    qvel = np.concatenate([state.vel, state.omega], axis=-1).reshape(6 * n)
    return qpos, qvel, np.asarray(state.thrust).reshape(4 * n)


def state_from_mujoco(qpos, qvel, act) -> QuadState:
    """Inverse of ``state_to_mujoco``; leading batch axes are kept."""
    qpos = np.asarray(qpos, np.float64)
    qvel = np.asarray(qvel, np.float64)
    lead = qpos.shape[:-1]
    qp = qpos.reshape(*lead, -1, 7)
    qv = qvel.reshape(*lead, -1, 6)
    thrust = np.asarray(act, np.float64).reshape(*lead, -1, cf.ROTORS)
    return QuadState(
        pos=qp[..., :3], vel=qv[..., :3], quat=_xyzw(qp[..., 3:]), omega=qv[..., 3:], thrust=thrust
    )


class MujocoBackend:
    """``n`` drones in one MuJoCo model on the CPU."""

    name = "mujoco"

    def __init__(
        self,
        n: int,
        params: cf.QuadParams | None = None,
        dt: float = DEFAULT_DT_S,
        aero: Aero = AERO_OFF,
    ) -> None:
        import mujoco  # noqa: PLC0415 - optional dependency

        self._mj = mujoco
        self.n, self.dt, self.aero = n, dt, aero
        if params is not None and not same_params(params, cf.crazyflie_params()):
            # The MJCF holds the numbers; randomised params need the JAX backend.
            raise ValueError("the MuJoCo backend simulates the MJCF's parameters only")
        self.params = cf.crazyflie_params()  # NumPy float64 copy of the model file's numbers
        self.model = load_model(n, dt)
        self.data = mujoco.MjData(self.model)
        self._body_ids = np.array(
            [
                mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, f"{_PREFIX}_{i}")
                for i in range(n)
            ]
        )
        self.reset(quadrotor.hover_state(np.zeros((n, 3)), self.params))

    def reset(self, state: QuadState) -> None:
        qpos, qvel, act = state_to_mujoco(state)
        self._mj.mj_resetData(self.model, self.data)
        self.data.qpos[:], self.data.qvel[:], self.data.act[:] = qpos, qvel, act
        self._mj.mj_forward(self.model, self.data)

    def get_state(self) -> QuadState:
        # Copies: MuJoCo's arrays are views that the next step overwrites.
        return state_from_mujoco(
            self.data.qpos.copy(), self.data.qvel.copy(), self.data.act.copy()
        )

    def _apply_aero(self) -> None:
        """``xfrc_applied`` = the aerodynamic part of the wrench (world force and torque)."""
        state = self.get_state()
        force_on, torque_on = quadrotor.wrench(state, self.params, self.aero)
        force_off, torque_off = quadrotor.wrench(state, self.params, AERO_OFF)
        rot = quadrotor.math3d.quat_to_matrix(state.quat)
        torque_world = np.einsum("nij,nj->ni", rot, torque_on - torque_off)
        self.data.xfrc_applied[self._body_ids, :3] = force_on - force_off
        self.data.xfrc_applied[self._body_ids, 3:] = torque_world

    def step(self, action) -> QuadState:
        self.data.ctrl[:] = check_action(action, self.n).reshape(-1)
        if self.aero != AERO_OFF:
            self._apply_aero()
        self._mj.mj_step(self.model, self.data)
        return self.get_state()

    def rollout(self, state: QuadState, actions) -> QuadState:
        actions = np.asarray(actions, np.float64)
        if self.aero != AERO_OFF:
            self.reset(state)
            return stack_states([self.step(a) for a in actions])
        out = self.rollout_batch(QuadState(*(np.asarray(x)[None] for x in state)), actions[None])
        return QuadState(*(x[0] for x in out))

    def rollout_batch(self, states: QuadState, actions, nthread: int | None = None) -> QuadState:
        """Open-loop rollouts of a batch through ``mujoco.rollout`` (C, multi-threaded).

        Args:
            states: initial states, each leaf with a leading batch axis ``B``.
            actions: ``[B, T, n, 4]`` rotor thrust commands [N].
            nthread: worker threads (default: one).

        Returns:
            States after each step, leaves ``[B, T, n, ...]``.
        """
        from mujoco import rollout  # noqa: PLC0415 - optional dependency

        mj = self._mj
        batch, steps = actions.shape[:2]
        spec = mj.mjtState.mjSTATE_FULLPHYSICS
        init = np.empty((batch, mj.mj_stateSize(self.model, spec)))
        for b in range(batch):
            self.reset(QuadState(*(np.asarray(x[b]) for x in states)))
            mj.mj_getState(self.model, self.data, init[b], spec)
        datas = [mj.MjData(self.model) for _ in range(nthread or 1)]
        out, _ = rollout.rollout(self.model, datas, init, actions.reshape(batch, steps, -1))
        size = functools.partial(mj.mj_stateSize, self.model)
        t = size(mj.mjtState.mjSTATE_TIME)
        nq, nv, na = self.model.nq, self.model.nv, self.model.na
        return state_from_mujoco(
            out[..., t : t + nq],
            out[..., t + nq : t + nq + nv],
            out[..., t + nq + nv : t + nq + nv + na],
        )


class MjxBackend:
    """``n`` drones in one MJX (MuJoCo XLA) model; jit-compiled steps, ``lax.scan`` rollouts.

    No aerodynamic effects (the MJCF has none); for GPU batching, ``vmap`` the step of
    ``make_mjx_step`` over a batch of ``mjx.Data``.
    """

    name = "mjx"

    def __init__(
        self,
        n: int,
        params: cf.QuadParams | None = None,
        dt: float = DEFAULT_DT_S,
        aero: Aero = AERO_OFF,
    ) -> None:
        import jax  # noqa: PLC0415
        from mujoco import mjx  # noqa: PLC0415 - optional dependency

        if aero != AERO_OFF:
            raise ValueError("the MJX backend has no aerodynamic effects; use aero=AERO_OFF")
        self._jax, self._mjx = jax, mjx
        self.n, self.dt, self.aero = n, dt, aero
        self.params = cf.crazyflie_params()
        self.model = load_model(n, dt)
        self.mjx_model = mjx.put_model(self.model)
        self._step = jax.jit(make_mjx_step(self.mjx_model))

        def scan(data, actions):
            def body(d, a):
                d = mjx.step(self.mjx_model, d.replace(ctrl=a))
                return d, (d.qpos, d.qvel, d.act)

            return jax.lax.scan(body, data, actions)[1]

        self._rollout = jax.jit(scan)
        self.reset(quadrotor.hover_state(np.zeros((n, 3)), self.params))

    def _data(self, state: QuadState):
        return mjx_data(self.mjx_model, state)

    def reset(self, state: QuadState) -> None:
        self.data = self._data(state)

    def get_state(self) -> QuadState:
        return state_from_mujoco(self.data.qpos, self.data.qvel, self.data.act)

    def step(self, action) -> QuadState:
        self.data = self._step(self.data, check_action(action, self.n).reshape(-1))
        return self.get_state()

    def rollout(self, state: QuadState, actions) -> QuadState:
        actions = np.asarray(actions)
        qpos, qvel, act = self._rollout(self._data(state), actions.reshape(len(actions), -1))
        return state_from_mujoco(qpos, qvel, act)


def mjx_data(mjx_model, state: QuadState):
    """An ``mjx.Data`` of ``mjx_model`` holding ``state`` (``n`` drones; JAX, jit/vmap-able)."""
    import jax.numpy as jnp  # noqa: PLC0415
    from mujoco import mjx  # noqa: PLC0415 - optional dependency

    data = mjx.make_data(mjx_model)
    pos, quat, vel, omega, thrust = (
        jnp.asarray(x, data.qpos.dtype)
        for x in (state.pos, state.quat, state.vel, state.omega, state.thrust)
    )
    qpos = jnp.concatenate([pos, _wxyz(quat, jnp)], axis=-1).reshape(-1)
    qvel = jnp.concatenate([vel, omega], axis=-1).reshape(-1)
    return data.replace(qpos=qpos, qvel=qvel, act=thrust.reshape(-1))


def mjx_state(data, n: int) -> QuadState:
    """The ``QuadState`` (JAX arrays, ``[n, ...]``) of an ``mjx.Data`` of ``n`` drones."""
    import jax.numpy as jnp  # noqa: PLC0415

    qp = data.qpos.reshape(n, 7)
    qv = data.qvel.reshape(n, 6)
    return QuadState(
        pos=qp[:, :3],
        vel=qv[:, :3],
        quat=_xyzw(qp[:, 3:], jnp),
        omega=qv[:, 3:],
        thrust=data.act.reshape(n, cf.ROTORS),
    )


def make_mjx_step(mjx_model):
    """``step(data, ctrl [4n]) -> data`` for an MJX model (jit and vmap it)."""
    from mujoco import mjx  # noqa: PLC0415 - optional dependency

    def step(data, ctrl):
        return mjx.step(mjx_model, data.replace(ctrl=ctrl))

    return step
