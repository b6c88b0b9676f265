"""Quadrotor simulation backends behind one interface, looked up by name through ``BACKENDS``.

Every backend simulates ``n`` Crazyflie-class drones (``sim.robots.quadrotor``'s state and
action: rotor thrust commands [N], M1..M4) and implements ``QuadBackend``:

    backend = BACKENDS.get("mujoco")(n=8, dt=0.002, aero=AERO_OFF)
    backend.reset(hover_state(pos, params))
    state = backend.step(thrust_cmd)               # [n, 4] -> QuadState (NumPy, float64)
    traj = backend.rollout(state0, thrust_cmds)    # [T, n, 4] -> QuadState with a T axis

``jax`` (pure JAX, jit/vmap/grad), ``mujoco`` (CPU, ``mujoco.rollout`` for open-loop batches),
``mjx`` (MuJoCo XLA, for GPU batching) and ``pybullet`` (CPU, aerodynamics vectorised over drone
pairs).  Numbers and assumptions of each are in its module.
"""

from marl_robots.core.registry import Registry

BACKENDS = Registry("backend")
BACKENDS.register("jax", "marl_robots.sim.backends.jax_backend:JaxBackend")
BACKENDS.register("mujoco", "marl_robots.sim.backends.mujoco_backend:MujocoBackend")
BACKENDS.register("mjx", "marl_robots.sim.backends.mujoco_backend:MjxBackend")
BACKENDS.register("pybullet", "marl_robots.sim.backends.pybullet_backend:PybulletBackend")
