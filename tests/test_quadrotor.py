"""The Crazyflie parameter set and the rigid-body quadrotor dynamics (NumPy and JAX paths).

Parameters are checked against the cited numbers (``crazyflie_params``' docstring) and the
content files (MJCF, URDF) against the parameters; physics against closed-form answers: hover,
free fall, torque -> I^-1 tau, the motor's first-order step response.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpy.testing import assert_allclose

from marl_robots.core import math3d
from marl_robots.core.paths import content_path
from marl_robots.sim.backends.pybullet_backend import downwash_forces_loop
from marl_robots.sim.robots import crazyflie_params as cf
from marl_robots.sim.robots import quadrotor as quad

DT_S = 0.002
#: Exact float64 agreement (same formula, different arrangement) [SI units].
F64_ATOL = 1e-12
#: Relative tolerance of the cited numbers' unit conversions.
CITED_RTOL = 1e-9
#: Hover must hold the drone within this over 1 s of open-loop hover thrust [m].
HOVER_DRIFT_M = 1e-9
#: Float32 JAX vs float64 NumPy over 1 s [m].
F32_POS_ATOL_M = 1e-4


@pytest.fixture(scope="module")
def params():
    return cf.crazyflie_params()


# ============================================================================ parameters


def test_parameters_are_the_cited_numbers(params):
    assert float(params.mass_kg) == 0.027
    assert_allclose(params.inertia_kgm2, [16.571710e-6, 16.655602e-6, 29.261652e-6], rtol=0)
    assert float(params.arm_m) == pytest.approx(0.046, rel=CITED_RTOL)
    # Förster's C_T = 3.1582e-10 N/rpm^2 -> N/(rad/s)^2.
    assert float(params.thrust_coeff) == pytest.approx(
        3.1582e-10 * (60.0 / (2.0 * math.pi)) ** 2, rel=CITED_RTOL
    )
    assert float(params.torque_per_thrust_m) == 0.005964552
    # Förster's PWM -> thrust map at full PWM: 0.1597 N per rotor.
    assert float(params.thrust_max_n) == pytest.approx(
        2.130295e-11 * 65535**2 + 1.032633e-6 * 65535 + 5.484560e-4, rel=CITED_RTOL
    )
    assert float(params.thrust_max_n) == pytest.approx(0.15971, abs=1e-5)
    assert float(cf.thrust_to_weight(params)) == pytest.approx(2.412, abs=1e-3)
    assert_allclose(params.drag_coeff, [9.1785e-7, 9.1785e-7, 10.311e-7], rtol=0)
    assert float(params.motor_tau_s) == 0.03
    assert float(params.prop_radius_m) == 2.31348e-2
    assert float(params.ground_effect_coeff) == 11.36859
    assert_allclose(params.downwash_coeffs, [2267.18, 0.16, -0.11], rtol=0)


def test_inertia_is_the_diagonal_of_forsters_matrix(params):
    full = cf.INERTIA_FORSTER_KGM2
    assert_allclose(full, full.T, rtol=0)
    assert_allclose(np.diag(full), params.inertia_kgm2, rtol=0)
    # The dropped products of inertia are at most 11 % of a diagonal entry.
    off = np.abs(full - np.diag(np.diag(full)))
    assert off.max() / np.diag(full).min() < 0.11


def test_allocation_matches_cross_products(params):
    """Mixer rows: collective thrust, r x f along z, and the reaction torque of each rotor."""
    alloc = cf.allocation_matrix(params)
    r = cf.rotor_positions(params)
    assert_allclose(np.linalg.norm(r, axis=-1), params.arm_m, rtol=1e-12)
    for i in range(4):
        f = np.zeros(4)
        f[i] = 0.1
        tau = np.cross(r[i], [0.0, 0.0, 0.1]) + [
            0.0,
            0.0,
            cf.ROTOR_YAW_SIGNS[i] * 0.1 * 0.005964552,
        ]
        assert_allclose(alloc @ f, [0.1, *tau], atol=F64_ATOL)
    # M1 front right (+x, -y), M3 back left; M1/M3 clockwise -> +z reaction torque.
    assert r[0, 0] > 0 > r[0, 1] and r[2, 0] < 0 < r[2, 1]
    assert cf.ROTOR_YAW_SIGNS.tolist() == [1, -1, 1, -1]
    collective = np.array([0.3, 0.25])
    torque = np.array([[1e-4, -2e-4, 5e-5], [0.0, 0.0, 0.0]])
    f = quad.mix(collective, torque, params)
    assert_allclose(f @ alloc.T, np.concatenate([collective[:, None], torque], -1), atol=1e-12)


def test_mjcf_agrees_with_the_parameters(params):
    mujoco = pytest.importorskip("mujoco")
    path = content_path("sim", "crazyflie2", "crazyflie2.xml")
    model = mujoco.MjModel.from_xml_path(str(path))
    body = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "cf2")
    assert model.body_mass[body] == pytest.approx(float(params.mass_kg), rel=1e-12)
    assert_allclose(model.body_inertia[body], params.inertia_kgm2, rtol=1e-12)
    assert_allclose(model.body_ipos[body], 0.0, atol=0)
    assert_allclose(model.site_pos[:4], cf.rotor_positions(params), atol=1e-10)
    gear = model.actuator_gear[:4]
    assert_allclose(gear[:, :3], [[0, 0, 1]] * 4, atol=0)
    assert_allclose(gear[:, 5], cf.ROTOR_YAW_SIGNS * float(params.torque_per_thrust_m), rtol=0)
    assert_allclose(model.actuator_dynprm[:4, 0], float(params.motor_tau_s), rtol=0)
    assert_allclose(model.actuator_ctrlrange[:4], [[0.0, float(params.thrust_max_n)]] * 4)
    assert_allclose(model.opt.gravity, [0, 0, -float(params.gravity_mps2)], rtol=0)
    assert model.opt.integrator == mujoco.mjtIntegrator.mjINT_EULER
    assert model.opt.timestep == DT_S


def test_mjcf_is_accepted_by_mjx():
    pytest.importorskip("mujoco")
    mjx = pytest.importorskip("mujoco.mjx")
    from marl_robots.sim.backends.mujoco_backend import load_model

    mjx.put_model(load_model(2))


def test_urdf_agrees_with_the_parameters(params):
    path = content_path("sim", "crazyflie2", "crazyflie2.urdf")
    inertial = ET.parse(path).getroot().find("link/inertial")
    assert float(inertial.find("mass").get("value")) == float(params.mass_kg)
    inertia = inertial.find("inertia").attrib
    assert_allclose(
        [float(inertia[k]) for k in ("ixx", "iyy", "izz")], params.inertia_kgm2, rtol=1e-12
    )
    assert all(float(inertia[k]) == 0.0 for k in ("ixy", "ixz", "iyz"))
    pb = pytest.importorskip("pybullet")
    client = pb.connect(pb.DIRECT)
    try:
        body = pb.loadURDF(str(path), flags=pb.URDF_USE_INERTIA_FROM_FILE, physicsClientId=client)
        info = pb.getDynamicsInfo(body, -1, physicsClientId=client)
        assert info[0] == pytest.approx(float(params.mass_kg))
        assert_allclose(info[2], params.inertia_kgm2, rtol=1e-6)
    finally:
        pb.disconnect(client)


# ============================================================================ physics


def _run(state, action, params, steps, aero=quad.AERO_OFF, xp=np):
    for _ in range(steps):
        state = quad.step(state, action, params, DT_S, aero, xp)
    return state


def test_hover_thrust_is_weight_and_holds(params):
    """Collective hover thrust = m g (to float precision, far inside 0.5 %) and it holds."""
    hover = cf.hover_thrust_per_rotor(params)
    collective = 4 * hover
    assert collective == pytest.approx(float(params.mass_kg * params.gravity_mps2), rel=1e-12)
    start = np.array([[0.0, 0.0, 1.0], [1.0, 2.0, 3.0]])
    state = quad.hover_state(start, params)
    force, torque = quad.wrench(state, params)
    assert_allclose(force, 0.0, atol=1e-15)
    assert_allclose(torque, 0.0, atol=1e-15)
    end = _run(state, np.full((2, 4), hover), params, 500)
    assert_allclose(end.pos, start, atol=HOVER_DRIFT_M)
    assert_allclose(end.vel, 0.0, atol=HOVER_DRIFT_M)
    # 0.5 % less thrust is a visible sink: the test can tell.
    low = _run(state, np.full((2, 4), 0.995 * hover), params, 500)
    assert np.all(low.pos[:, 2] < start[:, 2] - 0.01)


def test_free_fall(params):
    """Motors off: z_k = z0 - g dt^2 k (k + 1) / 2 (semi-implicit Euler), i.e. -g t^2 / 2."""
    state = quad.hover_state(np.array([[0.0, 0.0, 10.0]]), params)._replace(
        thrust=np.zeros((1, 4))
    )
    g = float(params.gravity_mps2)
    zero = np.zeros((1, 4))
    for k in range(1, 501):
        state = quad.step(state, zero, params, DT_S)
        assert state.pos[0, 2] == pytest.approx(10.0 - g * DT_S**2 * k * (k + 1) / 2, abs=1e-10)
    t = 500 * DT_S
    assert state.vel[0, 2] == pytest.approx(-g * t, abs=1e-10)
    # Continuous answer within the integrator's first-order error g dt t / 2 (1 cm at 1 s).
    assert abs(state.pos[0, 2] - (10.0 - 0.5 * g * t * t)) <= 0.5 * g * DT_S * t + 1e-12
    assert_allclose(state.pos[0, :2], 0.0, atol=0)
    assert_allclose(state.quat[0], [0, 0, 0, 1], atol=0)


@pytest.mark.parametrize("rotor", range(4))
def test_torque_gives_inverse_inertia_times_torque(params, rotor):
    """From rest, one step of a single rotor's thrust spins the body at I^-1 tau."""
    state = quad.hover_state(np.zeros((1, 3)), params)
    thrust = np.zeros((1, 4))
    thrust[0, rotor] = 0.1
    state = state._replace(thrust=thrust)
    r = cf.rotor_positions(params)[rotor]
    tau = np.cross(r, [0.0, 0.0, 0.1]) + [0, 0, cf.ROTOR_YAW_SIGNS[rotor] * 0.1 * 0.005964552]
    nxt = quad.step(state, thrust, params, DT_S)
    assert_allclose(nxt.omega[0] / DT_S, tau / np.asarray(params.inertia_kgm2), rtol=1e-12)


def test_gyroscopic_term_conserves_angular_momentum(params):
    """Torque-free tumbling: |I omega| stays constant (to the integrator's error)."""
    state = quad.hover_state(np.zeros((1, 3)), params)._replace(
        omega=np.array([[3.0, -2.0, 5.0]]), thrust=np.zeros((1, 4))
    )
    inertia = np.asarray(params.inertia_kgm2)
    h0 = np.linalg.norm(math3d.quat_rotate(state.quat, inertia * state.omega))
    state = _run(state, np.zeros((1, 4)), params, 200)
    h1 = np.linalg.norm(math3d.quat_rotate(state.quat, inertia * state.omega))
    assert h1 == pytest.approx(h0, rel=2e-2)


def test_motor_lag_step_response(params):
    """A step command: f(t) = f_cmd (1 - exp(-t / tau)); 63.2 % at t = tau."""
    tau = float(params.motor_tau_s)
    state = quad.hover_state(np.zeros((1, 3)), params)._replace(thrust=np.zeros((1, 4)))
    cmd = np.full((1, 4), 0.12)
    for k in range(1, 101):
        state = quad.step(state, cmd, params, DT_S)
        assert_allclose(state.thrust, 0.12 * (1 - math.exp(-k * DT_S / tau)), rtol=1e-12)
    steps_tau = round(tau / DT_S)
    state = quad.hover_state(np.zeros((1, 3)), params)._replace(thrust=np.zeros((1, 4)))
    state = _run(state, cmd, params, steps_tau)
    assert float(state.thrust[0, 0]) / 0.12 == pytest.approx(1 - math.exp(-1), abs=1e-9)
    # Commands beyond the limits are clipped.
    big = _run(state, np.full((1, 4), 10.0), params, 2000)
    assert_allclose(big.thrust, float(params.thrust_max_n), rtol=1e-9)
    neg = _run(state, np.full((1, 4), -1.0), params, 2000)
    assert np.all(neg.thrust >= 0) and np.all(neg.thrust < 1e-9)


def _random_state(n, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    quat = rng.normal(size=(n, 4))
    quat /= np.linalg.norm(quat, axis=-1, keepdims=True)
    return quad.QuadState(
        pos=rng.uniform(-1, 1, (n, 3)) + [0, 0, 1.0],
        vel=rng.normal(scale=0.5, size=(n, 3)),
        quat=quat,
        omega=rng.normal(scale=2.0, size=(n, 3)),
        thrust=rng.uniform(0.0, 0.15, (n, 4)),
    ), rng.uniform(0.0, 0.16, (n, 4))


@pytest.mark.parametrize("aero", [quad.AERO_OFF, quad.AERO_ON], ids=["aero_off", "aero_on"])
def test_jax_jit_vmap_matches_numpy(params, aero):
    state, action = _random_state(6)
    ref = _run(state, action, params, 50, aero)
    jparams = cf.crazyflie_params(jnp.float32, jnp)
    step = jax.jit(lambda s, a: quad.step(s, a, jparams, DT_S, aero, jnp))
    s = quad.QuadState(*(jnp.asarray(x, jnp.float32) for x in state))
    for _ in range(50):
        s = step(s, jnp.asarray(action, jnp.float32))
    assert all(leaf.dtype == jnp.float32 for leaf in s)
    assert_allclose(np.asarray(s.pos), ref.pos, atol=F32_POS_ATOL_M)
    assert_allclose(np.asarray(s.thrust), ref.thrust, atol=1e-6)


def test_jax_vmaps_over_params_and_differentiates(params):
    """Domain randomisation is a vmap over params; the step is differentiable."""
    jparams = cf.crazyflie_params(jnp.float32, jnp)
    masses = jnp.array([0.025, 0.027, 0.030], jnp.float32)
    batched = jax.vmap(lambda m: jparams._replace(mass_kg=m))(masses)
    start = quad.hover_state(jnp.array([[0.0, 0.0, 1.0]], jnp.float32), jparams, jnp)
    hover = jnp.full((1, 4), float(cf.hover_thrust_per_rotor(params)), jnp.float32)

    def climb(p, thrust):
        def body(_, s):
            return quad.step(s, thrust, p, DT_S, quad.AERO_ON, jnp)

        return jax.lax.fori_loop(0, 100, body, start._replace(thrust=thrust)).pos[0, 2]

    z = jax.jit(jax.vmap(climb, in_axes=(0, None)))(batched, hover)
    assert float(z[0]) > 1.0 > float(z[2]) and abs(float(z[1]) - 1.0) < 1e-3
    grad = jax.grad(climb, argnums=1)(jparams, hover)
    assert np.all(np.isfinite(np.asarray(grad))) and np.all(np.asarray(grad) > 0)


# ============================================================================ aerodynamics


def _cluster(n, rng):
    """Drones in a tight column-ish cluster so that many pairs feel downwash."""
    pos = rng.uniform(-0.15, 0.15, (n, 3)) + [0.0, 0.0, 1.0]
    pos[: n // 3, 2] = pos[0, 2]  # same heights: dz == 0 pairs
    pos[n // 3] = pos[n // 3 + 1] + [0.0, 0.0, 0.3]  # one drone straight above another
    return pos


@pytest.mark.parametrize("n", [2, 5, 40])
def test_vectorised_downwash_equals_per_pair_loop(params, n):
    rng = np.random.default_rng(n)
    for _ in range(5):
        pos = _cluster(n, rng)
        ref = downwash_forces_loop(pos, params)
        assert_allclose(quad.downwash_forces(pos, params, np), ref, rtol=1e-12, atol=1e-15)
        got = quad.downwash_forces(
            jnp.asarray(pos, jnp.float32), cf.crazyflie_params(jnp.float32, jnp), jnp
        )
        assert_allclose(np.asarray(got), ref, rtol=1e-4, atol=1e-6)
        assert np.any(ref[:, 2] < -1e-3), "the layout must exercise the model"
        assert np.all(ref[:, :2] == 0) and np.all(ref[:, 2] <= 0)


def test_downwash_peak_capped_at_the_upper_drones_weight(params):
    """Straight below: the cited model above 0.53 m, at most m g closer (momentum bound)."""
    weight = float(params.mass_kg * params.gravity_mps2)
    alpha, r_p = 2267.18, 2.31348e-2
    for dz, expected in [(1.0, alpha * (r_p / 4.0) ** 2), (0.6, alpha * (r_p / 2.4) ** 2)]:
        f = quad.downwash_forces(np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0 + dz]]), params)
        assert -f[0, 2] == pytest.approx(expected, rel=1e-9) and expected < weight
    for dz in (0.05, 0.1, 0.3, 0.5):
        pos = np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0 + dz]])
        f = quad.downwash_forces(pos, params)
        assert -f[0, 2] == pytest.approx(weight, rel=1e-9)
        assert downwash_forces_loop(pos, params)[0, 2] == pytest.approx(f[0, 2], rel=1e-12)


def test_downwash_acts_only_below(params):
    pos = np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 1.5], [3.0, 0.0, 1.0]])
    f = quad.downwash_forces(pos, params)
    assert f[0, 2] < 0 and f[1, 2] == 0 and f[2, 2] == pytest.approx(0.0, abs=1e-300)


def test_ground_effect_and_drag(params):
    hover = cf.hover_thrust_per_rotor(params)
    low = quad.hover_state(np.array([[0.0, 0.0, 0.05], [0.0, 0.0, 2.0]]), params)
    force, _ = quad.wrench(low, params, quad.Aero(ground_effect=True))
    # k (r_p / (4 h))^2 extra thrust at h = 5 cm; ~0 at 2 m.
    gain = 11.36859 * (2.31348e-2 / (4 * 0.05)) ** 2
    assert force[0, 2] == pytest.approx(4 * hover * gain, rel=1e-9)
    assert force[1, 2] == pytest.approx(4 * hover * 11.36859 * (2.31348e-2 / 8.0) ** 2, rel=1e-9)
    moving = low._replace(vel=np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0]]))
    force, _ = quad.wrench(moving, params, quad.Aero(drag=True))
    spin = 4 * math.sqrt(hover / float(params.thrust_coeff))
    assert force[0, 0] == pytest.approx(-9.1785e-7 * spin, rel=1e-9)
    assert force[1, 2] == pytest.approx(10.311e-7 * spin, rel=1e-9)


def test_gradients_are_finite_at_rest_with_motors_off(params):
    """Zero body rates (norm at 0) and zero thrusts (sqrt at 0, drag on): finite gradients."""
    jparams = cf.crazyflie_params(jnp.float32, jnp)
    start = quad.hover_state(jnp.array([[0.0, 0.0, 1.0]], jnp.float32), jparams, jnp)
    start = start._replace(thrust=jnp.zeros((1, 4), jnp.float32))

    def final_z(omega, thrust):
        s = start._replace(omega=omega)
        for _ in range(3):
            s = quad.step(s, thrust, jparams, DT_S, quad.AERO_ON, jnp)
        return s.pos[0, 2] + s.quat[0, 0]

    grads = jax.grad(final_z, argnums=(0, 1))(
        jnp.zeros((1, 3), jnp.float32), jnp.zeros((1, 4), jnp.float32)
    )
    for g in grads:
        assert np.all(np.isfinite(np.asarray(g)))
