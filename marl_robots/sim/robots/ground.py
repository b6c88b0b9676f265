"""Parameters shared by the ground-robot models (Robotarium-like defaults).

Defaults follow the GRITSbot of the Georgia Tech Robotarium: 0.11 m body diameter and
0.2 m/s top speed (Pickem et al., "The Robotarium", ICRA 2017).  The look-ahead distance of the
unicycle's control point is 0.04 m, a little shorter than the Robotarium's 0.05 m so that 32
robots fit on the antipodal ellipse with the default 0.13 m safety distance (the filter keeps
look-ahead points ``d + 2 l`` apart).
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp

from marl_robots.core import defaults


class GroundParams(NamedTuple):
    """Physical parameters of a ground robot (a pytree: vmap it to randomise).

    Attributes:
        diameter_m: body diameter [m]; closer centres than this is a collision.
        v_max: top linear speed [m/s].
        omega_max: top turn rate [rad/s] (unicycle only).
        lookahead_m: distance of the control point ahead of the axle [m] (unicycle only).
    """

    diameter_m: float = defaults.DIAMETER_M
    v_max: float = defaults.V_MAX
    omega_max: float = defaults.OMEGA_MAX
    lookahead_m: float = defaults.LOOKAHEAD_M


def default_params() -> GroundParams:
    """Robotarium-like parameters as float32 JAX scalars."""
    return GroundParams(*(jnp.float32(v) for v in GroundParams()))
