"""The one home of every default shared by the simulation, training, the CLI and the nodes.

Everything else imports these names: ``sim.closed_loop.ControlConfig``, ``sim.env.EnvConfig``,
``sim.layout``, ``sim.robots.ground.GroundParams``, ``sim.wrappers``, the ``marl-robots`` CLI,
the nodes' parameter tables (``nodes.onboard``) and, through a test
(``tests/test_param_drift.py``), the node parameter YAMLs under ``controllers/``.  Changing a
value here changes it everywhere; a YAML or declaration that disagrees fails that test.

Plain Python numbers only (no JAX, no NumPy): the onboard runtime and the nodes import this
module on computers without JAX.

Why gamma = 10 /s: it is the gain every figure of the README's navigation tables was measured
with (``marl-robots sim``), and the centre of the learned policies' gain range
(``GAMMA_BOUNDS``); the nodes used 5 /s until the two were unified.
"""

from __future__ import annotations

# -- filter -------------------------------------------------------------------------------------
#: Class-K gain of the CBF filter [1/s] (linear class-K: hdot >= -gamma h).
GAMMA = 10.0
#: Class-K function of the filter.
CLASS_K = "linear"
#: Bounds of the per-robot class-K gain a CBF-tuning policy may set [1/s].  Any value in them is
#: safe (the filter's discrete-time clip makes every gain > 0 safe); the bounds keep the filter
#: well conditioned and the policy's output space small.
GAMMA_BOUNDS = (0.5, 30.0)
#: Least distance between robot centres [m]: the 0.11 m body plus 2 cm.
SAFETY_DISTANCE_M = 0.13
#: Weight of the squared slack of the relaxed QP.
RELAX_WEIGHT = 1e6
#: Interior-point iterations of the relaxed / centralised QP.
RELAX_ITERS = 30

# -- timing and sensing -------------------------------------------------------------------------
#: Control and integration period [s] (the Robotarium's).
DT_S = 0.033
#: Neighbour budget k of the sensing graph (the filter's and the observation's).
NEIGHBOURS = 6
#: Neighbours farther than this are not sensed [m].
SENSING_RADIUS_M = 1.0

# -- ground robot (GRITSbot-like, see sim.robots.ground) ---------------------------------------
#: Robot family of the ground-robot defaults (a name in ``sim.robots.ROBOTS``).
ROBOT = "unicycle"
#: Body diameter [m].
DIAMETER_M = 0.11
#: Top linear speed [m/s].
V_MAX = 0.2
#: Top turn rate [rad/s] (unicycle).
OMEGA_MAX = 3.6
#: Control point ahead of the axle [m] (unicycle).
LOOKAHEAD_M = 0.04

# -- nominal go-to-goal -------------------------------------------------------------------------
#: Proportional go-to-goal gain [1/s].
GOAL_GAIN = 1.0
#: Right-hand bias, fraction of v_max.
BIAS = 0.5
#: Largest step-aside speed from closing neighbours, fraction of v_max.
MAKE_WAY = 1.0
#: Gap to a neighbour's safety disc below which robots step aside [m].
MAKE_WAY_RADIUS_M = 0.05

# -- world --------------------------------------------------------------------------------------
#: Arena size (x, y) [m], centred on the origin.
ARENA_M = (3.2, 2.0)


def arena_bounds(arena_m=ARENA_M) -> list[float]:
    """(x_min, x_max, y_min, y_max) [m] of an arena of size ``arena_m`` centred on the origin."""
    w, h = (float(v) for v in arena_m)
    return [-0.5 * w, 0.5 * w, -0.5 * h, 0.5 * h]


#: Name -> value of every default a node parameter of the same name must equal (checked by
#: ``tests/test_param_drift.py`` against the declarations and the YAMLs).
NODE_PARAMETERS = {
    "gamma": GAMMA,
    "class_k": CLASS_K,
    "safety_distance_m": SAFETY_DISTANCE_M,
    "relax_weight": RELAX_WEIGHT,
    "relax_iters": RELAX_ITERS,
    "dt_s": DT_S,
    "neighbours": NEIGHBOURS,
    "sensing_radius_m": SENSING_RADIUS_M,
    "robot": ROBOT,
    "diameter_m": DIAMETER_M,
    "v_max": V_MAX,
    "omega_max": OMEGA_MAX,
    "lookahead_m": LOOKAHEAD_M,
    "goal_gain": GOAL_GAIN,
    "bias": BIAS,
    "make_way": MAKE_WAY,
    "make_way_radius_m": MAKE_WAY_RADIUS_M,
    "arena": arena_bounds(),
    "gamma_bounds": list(GAMMA_BOUNDS),
}
