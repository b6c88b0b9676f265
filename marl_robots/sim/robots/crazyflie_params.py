"""One Crazyflie 2.x parameter set, its sources cited, for every quadrotor backend.

Primary source (system identification):
    J. Förster, "System Identification of the Crazyflie 2.0 Nano Quadrocopter", BSc thesis,
    Institute for Dynamic Systems and Control, ETH Zurich, August 2015 (IDSC-RD-MDH-04).
    Used here: the inertia matrix (bifilar pendulum), the static thrust map
    ``f = C_T rpm^2`` and the PWM -> thrust map (thrust stand), the rotor torque map
    ``tau = 0.005964552 f + 1.563383e-5`` (torque stand), and the body drag matrix
    ``K_aero = -diag(9.1785, 9.1785, 10.311) 1e-7 kg/rad`` (drag force
    ``K_aero (sum of rotor speeds [rad/s]) v_body``).

Other numbers, each from the source named next to it:
    * mass 27 g and the 92 mm motor-to-motor diagonal (so 46 mm centre to motor): Bitcraze's
      Crazyflie 2.0 datasheet (take-off weight, size).
    * propeller radius, ground-effect and downwash coefficients: the empirical aerodynamic
      models of gym-pybullet-drones (J. Panerati et al., "Learning to Fly -- a Gym Environment
      with PyBullet Physics for Reinforcement Learning of Multi-agent Quadcopter Control",
      IROS 2021), whose ground effect follows Shi et al., "Neural Lander", ICRA 2019.
    * motor time constant: **an assumption, not copied from a source** (Förster identifies the
      motors' transfer function, but the number here was not checked against it): 30 ms, the
      order of a 7 mm coreless motor's spin-up.  It is a parameter; randomise it.

Choices where sources disagree (the reason this file exists):
    * Mass 0.027 kg (datasheet) rather than 0.034 kg (a Crazyflie with markers and a deck).
    * Inertia: Förster's diagonal, Ixx = 1.657e-5 kg m^2, not the 1.4e-5 (a CAD estimate) or
      2.4e-5 found elsewhere.  Förster's products of inertia (0.83, 0.72, 1.80 e-6 kg m^2, at
      most 11 % of a diagonal entry) are dropped: every backend uses a diagonal inertia.
    * Yaw torque per thrust: Förster's torque-stand slope 0.005964552 m (the constant the
      Crazyflie firmware's power distribution uses).  The ratio of Förster's rpm-based
      coefficients, C_D / C_T = 7.9379e-12 / 3.1582e-10 = 0.0251 m, which some simulators use,
      is four times larger; it is not used.
    * Per-rotor thrust limit: Förster's PWM -> thrust map at full PWM (65535), 0.1597 N, so the
      thrust-to-weight ratio is 2.41.

Rotor layout (X configuration, REP-103 body frame: x forward, y left, z up), numbered as on the
Crazyflie: M1 front right, M2 back right, M3 back left, M4 front left.  M1 and M3 spin clockwise
seen from above (their reaction torque on the body is +z), M2 and M4 counter-clockwise.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

# ------------------------------------------------------------------ cited numbers (SI units)
#: Take-off mass [kg] (Bitcraze Crazyflie 2.0 datasheet: 27 g).
MASS_KG = 0.027
#: Motor-to-motor diagonal [m] (Bitcraze datasheet: 92 mm).
MOTOR_DIAGONAL_M = 0.092
#: Förster (2015) inertia matrix [kg m^2], about the centre of mass, body axes.
INERTIA_FORSTER_KGM2 = 1e-6 * np.array(
    [
        [16.571710, 0.830806, 0.718277],
        [0.830806, 16.655602, 1.800197],
        [0.718277, 1.800197, 29.261652],
    ]
)
#: Förster (2015) static thrust coefficient, ``f = C_T rpm^2`` [N / rpm^2].
THRUST_COEFF_N_PER_RPM2 = 3.1582e-10
#: Förster (2015) rotor torque per thrust (torque-stand slope) [N m / N = m].
TORQUE_PER_THRUST_M = 0.005964552
#: Förster (2015) PWM -> thrust map per rotor, ``f = a pwm^2 + b pwm + c`` [N], pwm in 0..65535.
PWM_TO_THRUST = (2.130295e-11, 1.032633e-6, 5.484560e-4)
PWM_MAX = 65535
#: Förster (2015) body drag coefficients (magnitudes of K_aero's diagonal) [kg / rad].
DRAG_COEFF_KG_PER_RAD = (9.1785e-7, 9.1785e-7, 10.311e-7)
#: Motor (first-order lag) time constant [s].  ASSUMPTION, see the module docstring.
MOTOR_TAU_S = 0.03
#: Panerati et al. (2021): propeller radius [m], ground-effect coefficient [-],
#: downwash coefficients (alpha [N], beta slope [-], beta offset [m]).
PROP_RADIUS_M = 2.31348e-2
GROUND_EFFECT_COEFF = 11.36859
DOWNWASH_COEFFS = (2267.18, 0.16, -0.11)
#: Standard gravity [m/s^2].
GRAVITY_MPS2 = 9.81

#: Rotor position signs (x, y) in the body frame, M1..M4, and reaction-torque signs (+z).
ROTOR_XY_SIGNS = np.array([[1.0, -1.0], [-1.0, -1.0], [-1.0, 1.0], [1.0, 1.0]])
ROTOR_YAW_SIGNS = np.array([1.0, -1.0, 1.0, -1.0])
ROTORS = 4


def rpm_to_rad_s(rpm: float) -> float:
    """Convert revolutions per minute to rad/s."""
    return rpm * 2.0 * math.pi / 60.0


def thrust_coeff_si() -> float:
    """Förster's C_T in SI: ``f = k_f omega^2`` with omega in rad/s [N s^2 / rad^2]."""
    return THRUST_COEFF_N_PER_RPM2 / rpm_to_rad_s(1.0) ** 2


def pwm_thrust(pwm):
    """Förster's measured thrust per rotor [N] at a PWM command (0..65535)."""
    a, b, c = PWM_TO_THRUST
    return a * pwm * pwm + b * pwm + c


class QuadParams(NamedTuple):
    """Physical parameters of one quadrotor model (a pytree: ``vmap`` over it to randomise).

    Attributes:
        mass_kg: mass [kg].
        inertia_kgm2: principal moments of inertia (Ixx, Iyy, Izz) [kg m^2], body frame.
        arm_m: centre-to-rotor distance [m].
        thrust_coeff: ``f = k_f omega^2`` [N s^2/rad^2] (omega: rotor speed [rad/s]).
        torque_per_thrust_m: rotor reaction torque per unit thrust [m].
        motor_tau_s: first-order time constant of each rotor's thrust [s].
        thrust_max_n: per-rotor thrust limit [N] (lower limit 0).
        drag_coeff: body drag coefficients (x, y, z) [kg/rad]; drag force in the body frame is
            ``-drag_coeff * sum(omega) * v_body``.
        gravity_mps2: gravitational acceleration [m/s^2], along -z.
        prop_radius_m: propeller radius [m] (ground effect, downwash).
        ground_effect_coeff: ground-effect gain [-].
        ground_effect_min_height_m: rotor heights below this count as this height [m].
        downwash_coeffs: (alpha [N], beta slope [-], beta offset [m]) of the downwash model.
    """

    mass_kg: object
    inertia_kgm2: object
    arm_m: object
    thrust_coeff: object
    torque_per_thrust_m: object
    motor_tau_s: object
    thrust_max_n: object
    drag_coeff: object
    gravity_mps2: object
    prop_radius_m: object
    ground_effect_coeff: object
    ground_effect_min_height_m: object
    downwash_coeffs: object


def crazyflie_params(dtype=np.float64, xp=np) -> QuadParams:
    """The Crazyflie 2.x parameter set (see the module docstring for each number's source).

    Args:
        dtype: floating dtype of every leaf.
        xp: ``numpy`` or ``jax.numpy`` (the array type of the leaves).
    """

    def arr(v):
        return xp.asarray(v, dtype=dtype)

    return QuadParams(
        mass_kg=arr(MASS_KG),
        inertia_kgm2=arr(np.diag(INERTIA_FORSTER_KGM2)),
        arm_m=arr(MOTOR_DIAGONAL_M / 2.0),
        thrust_coeff=arr(thrust_coeff_si()),
        torque_per_thrust_m=arr(TORQUE_PER_THRUST_M),
        motor_tau_s=arr(MOTOR_TAU_S),
        thrust_max_n=arr(pwm_thrust(PWM_MAX)),
        drag_coeff=arr(DRAG_COEFF_KG_PER_RAD),
        gravity_mps2=arr(GRAVITY_MPS2),
        prop_radius_m=arr(PROP_RADIUS_M),
        ground_effect_coeff=arr(GROUND_EFFECT_COEFF),
        # At a rotor height of one propeller radius the ground adds 71 % thrust; the
        # model's 1/h^2 blow-up below that is cut off.
        ground_effect_min_height_m=arr(PROP_RADIUS_M),
        downwash_coeffs=arr(DOWNWASH_COEFFS),
    )


def rotor_positions(params: QuadParams, xp=np):
    """Rotor centres [4, 3] in the body frame [m] (M1..M4, X configuration, z = 0)."""
    half = params.arm_m / math.sqrt(2.0)
    xy = xp.asarray(ROTOR_XY_SIGNS) * half
    return xp.concatenate([xy, xp.zeros((ROTORS, 1), dtype=xy.dtype)], axis=-1)


def allocation_matrix(params: QuadParams, xp=np):
    """``[4, 4]`` map from rotor thrusts [N] to (collective thrust [N], torque x, y, z [N m]).

    Torque of a rotor at ``r`` pushing along body z: ``r x (0, 0, f) = (y f, -x f, 0)``, plus
    its reaction torque ``s kappa f`` about z.
    """
    r = rotor_positions(params, xp)
    ones = xp.ones((ROTORS,), dtype=r.dtype)
    yaw = xp.asarray(ROTOR_YAW_SIGNS, dtype=r.dtype) * params.torque_per_thrust_m
    return xp.stack([ones, r[:, 1], -r[:, 0], yaw], axis=0)


def hover_thrust_per_rotor(params: QuadParams):
    """Per-rotor thrust that balances gravity [N]: ``m g / 4``."""
    return params.mass_kg * params.gravity_mps2 / ROTORS


def thrust_to_weight(params: QuadParams):
    """Ratio of the largest collective thrust to the weight [-]."""
    return ROTORS * params.thrust_max_n / (params.mass_kg * params.gravity_mps2)
