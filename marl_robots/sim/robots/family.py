"""Robot families in any dimension: one protocol that ground robots and quadcopters satisfy.

A ``RobotFamily`` says, for ``n`` robots of one kind:

* its own state pytree and ``step(state, action, params, dt) -> state`` (the robot's native
  action: wheel/velocity commands for ground robots, rotor thrusts for a quadcopter);
* ``positions(state) -> [n, d]`` (d = 2 on the ground, 3 in the air);
* the point the safety filter acts on, ``filter_point(state, params) -> [n, d]``, and the
  level it acts at, ``level``: ``"velocity"`` (the filter's command is that point's velocity,
  ground robots) or ``"acceleration"`` (its acceleration, quadcopters: their position has
  relative degree two);
* ``to_action(state, command, params, dt) -> (action, state)``: the native action that realises
  a filter-level command (the look-ahead map of a unicycle; the attitude/rate loops and mixer
  of a quadcopter, whose integrators live in the state);
* ``limits(state, params) -> (A [n, r, d], b [n, r])``: the actuator limits on the filter-level
  command as half-spaces ``A u <= b`` (a ground robot's speed box, a drone's acceleration box).

The ground families wrap the existing models (``SingleIntegrator``, ``Unicycle``) without
changing them: ``GroundFamily.step`` *is* the model's step on ``(pos, yaw)``, so every ground
result (tests, the README's navigation table) is unchanged.  The quadcopter family is the
Crazyflie model of ``sim.robots.quadrotor`` behind the PID's inner loop.

``ROBOT_FAMILIES`` registers every family; ``tests/test_conformance.py`` checks each one
against this protocol.  (``ROBOTS`` stays the registry of the 2D ground models that the
navigation task, its filter and its nodes use.)
"""

from __future__ import annotations

from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np

from marl_robots.core.registry import Registry

LEVELS = ("velocity", "acceleration")


@runtime_checkable
class RobotFamily(Protocol):
    """``n`` robots of one kind in ``dim`` dimensions (see the module docstring)."""

    name: str
    dim: int
    level: str
    command_dim: int

    def default_params(self): ...

    def init(self, pos, params): ...

    def step(self, state, action, params, dt: float): ...

    def positions(self, state): ...

    def filter_point(self, state, params): ...

    def to_action(self, state, command, params, dt: float): ...

    def limits(self, state, params): ...


class GroundState(NamedTuple):
    """Ground robots' state: positions ``[n, 2]`` [m] and headings ``[n]`` [rad]."""

    pos: object
    yaw: object


class GroundFamily:
    """A 2D ground-robot model (``sim.robots.ROBOTS``) as a ``RobotFamily`` (velocity level).

    Args:
        model: the model class (``SingleIntegrator`` or ``Unicycle``).
        xp: ``numpy`` or ``jax.numpy``.
    """

    dim = 2
    level = "velocity"
    command_dim = 2

    def __init__(self, model, xp=np) -> None:
        self.model, self.xp, self.name = model, xp, model.name

    def default_params(self):
        """Robotarium-like ground parameters (``sim.robots.ground``)."""
        from marl_robots.sim.robots.ground import default_params  # noqa: PLC0415

        return default_params()

    def init(self, pos, params) -> GroundState:
        """Robots at ``pos [n, 2]`` facing +x."""
        pos = self.xp.asarray(pos)
        return GroundState(pos, self.xp.zeros(pos.shape[:-1], pos.dtype))

    def step(self, state: GroundState, action, params, dt: float) -> GroundState:
        """The model's own step (no change in behaviour)."""
        pos, yaw = self.model.step(state.pos, state.yaw, action, params, dt, self.xp)
        return GroundState(pos, yaw)

    def positions(self, state: GroundState):
        """Body centres ``[n, 2]`` [m]."""
        return state.pos

    def filter_point(self, state: GroundState, params):
        """The model's control point ``[n, 2]`` (a unicycle's look-ahead point)."""
        return self.model.control_point(state.pos, state.yaw, params, self.xp)

    def to_action(self, state: GroundState, command, params, dt: float):
        """The model's action for a control-point velocity ``command [n, 2]`` [m/s]."""
        return self.model.from_point_velocity(command, state.yaw, params, self.xp), state

    def limits(self, state: GroundState, params):
        """The model's velocity box (body frame, rotated by yaw) as half-spaces.

        Returns ``A [n, 4, 2]``, ``b [n, 4]`` (the speed cap, if any, is not a half-space and
        is left to the filter, as before).
        """
        xp = self.xp
        lim = self.model.limits(state.yaw, params, xp)
        c, s = xp.cos(lim.yaw), xp.sin(lim.yaw)
        ex = xp.stack([c, s], axis=-1)  # body x in the world frame
        ey = xp.stack([-s, c], axis=-1)
        A = xp.stack([ex, -ex, ey, -ey], axis=-2)
        hx, hy = lim.half_width[..., 0], lim.half_width[..., 1]
        return A, xp.stack([hx, hx, hy, hy], axis=-1)


class QuadFamilyState(NamedTuple):
    """Quadcopters' state: the rigid bodies and the PID's integrators (the inner loop)."""

    quad: object
    ctrl: object


class QuadrotorFamily:
    """The Crazyflie 2.x (``sim.robots.quadrotor``) as a ``RobotFamily`` (acceleration level).

    Native action: rotor thrusts ``[n, 4]`` [N], no aerodynamics in ``step`` (pass a backend
    for those).  Filter-level command: the commanded acceleration ``[n, 3]`` [m/s^2], tracked
    by the PID's attitude/rate loops and mixer (``quad_pid.track_acceleration``).
    """

    name = "crazyflie2"
    dim = 3
    level = "acceleration"
    command_dim = 3

    def __init__(self, xp=np) -> None:
        from marl_robots.controllers.quad_setpoints import load_gains  # noqa: PLC0415
        from marl_robots.controllers.safety_filter_3d import Filter3DConfig  # noqa: PLC0415

        self.xp = xp
        self.gains = load_gains("pid")
        self.acc_max = Filter3DConfig().acc_max_mps2

    def default_params(self):
        """The cited Crazyflie parameter set (float64 NumPy or float32 JAX leaves)."""
        from marl_robots.sim.robots.crazyflie_params import crazyflie_params  # noqa: PLC0415

        if self.xp is np:
            return crazyflie_params()
        return crazyflie_params(self.xp.float32, self.xp)

    def init(self, pos, params) -> QuadFamilyState:
        """Drones hovering at ``pos [n, 3]``, integrators zero."""
        from marl_robots.controllers import quad_pid  # noqa: PLC0415
        from marl_robots.sim.robots import quadrotor  # noqa: PLC0415

        quad = quadrotor.hover_state(pos, params, self.xp)
        return QuadFamilyState(quad, quad_pid.init(quad.pos.shape[0], quad.pos.dtype, self.xp))

    def step(self, state: QuadFamilyState, action, params, dt: float) -> QuadFamilyState:
        """``quadrotor.step`` with rotor thrusts ``action [n, 4]`` [N]."""
        from marl_robots.sim.robots import quadrotor  # noqa: PLC0415

        return state._replace(quad=quadrotor.step(state.quad, action, params, dt, xp=self.xp))

    def positions(self, state: QuadFamilyState):
        """Centres of mass ``[n, 3]`` [m]."""
        return state.quad.pos

    def filter_point(self, state: QuadFamilyState, params):
        """The centre of mass ``[n, 3]`` [m] (the filter's ellipsoids are centred there)."""
        return state.quad.pos

    def to_action(self, state: QuadFamilyState, command, params, dt: float):
        """Rotor thrusts ``[n, 4]`` tracking the acceleration ``command [n, 3]``, new state."""
        from marl_robots.controllers import quad_pid  # noqa: PLC0415

        yaw = self.xp.zeros(command.shape[:-1], command.dtype)
        thrust, rate_int = quad_pid.track_acceleration(
            state.ctrl, state.quad, command, yaw, params, self.gains, dt, self.xp
        )
        return thrust, state._replace(ctrl=state.ctrl._replace(rate_int=rate_int))

    def limits(self, state: QuadFamilyState, params):
        """The acceleration box ``|a_k| <= a_max,k`` as half-spaces ``A [n, 6, 3]``, ``b``."""
        xp = self.xp
        n = state.quad.pos.shape[0]
        eye = np.eye(3)
        A = np.concatenate([eye, -eye])
        b = np.concatenate([self.acc_max, self.acc_max])
        dtype = state.quad.pos.dtype
        return (
            xp.broadcast_to(xp.asarray(A, dtype), (n, 6, 3)),
            xp.broadcast_to(xp.asarray(b, dtype), (n, 6)),
        )


def _ground(name: str):
    def make(xp=np):
        from marl_robots.sim.robots import ROBOTS  # noqa: PLC0415

        return GroundFamily(ROBOTS.get(name), xp)

    return make


ROBOT_FAMILIES = Registry("robot family")
ROBOT_FAMILIES.register("single_integrator", _ground("single_integrator"))
ROBOT_FAMILIES.register("unicycle", _ground("unicycle"))
ROBOT_FAMILIES.register("crazyflie2", QuadrotorFamily)

__all__ = [
    "LEVELS",
    "ROBOT_FAMILIES",
    "GroundFamily",
    "GroundState",
    "QuadFamilyState",
    "QuadrotorFamily",
    "RobotFamily",
]
