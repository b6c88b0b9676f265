"""The filter keeps unicycle *bodies* clear in discrete time, not only their control points.

A unicycle's control point moves on an arc over a period, up to the step margin
(``Unicycle.step_margin``: 0.48 mm at the defaults) off the straight line ``p + u dt`` the
filter's clip assumes.  The margins include it (``sim.layout.filter_margins``) and the band it
covers is left within one period (``cbf.class_k``).  These properties drive the real robot model
and its exact-arc integrator through the real filter, with adversarial nominal commands (full
speed along the barrier with the hardest turn, turning on the spot, ramming, arbitrary command
sequences), from starts anywhere at or outside the filter's margin and inside its step band.

Mutations, by hand (reverted): with ``Unicycle.step_margin`` returning 0 (the margins of
before) the obstacle property fails at the first step with a body clearance of -0.24 mm (orbit
at full speed and turn rate from the margin, gamma 0.5), the wall and pair properties with the
control point 0.08 mm and 0.23 mm inside the true margin; with the margin kept but the band clip
removed (``class_k`` clipping only where ``h > 0``, as before) all three fail after 2-6 steps,
the point 0.06 / 0.17 / 0.08 mm inside the true margin (gamma 0.5).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marl_robots.controllers.safety_filter import (
    CBFParams,
    FilterConfig,
    FilterStatus,
    World,
    filter_robots,
    pair_order,
)
from marl_robots.core import defaults
from marl_robots.sim.layout import filter_margins
from marl_robots.sim.robots import ROBOTS
from marl_robots.sim.robots.ground import GroundParams

UNICYCLE = ROBOTS.get("unicycle")
PARAMS = GroundParams()  # float defaults: v_max 0.2 m/s, omega_max 3.6 rad/s, l = 0.04 m
DT = defaults.DT_S
D = defaults.SAFETY_DISTANCE_M
MARGINS = filter_margins(UNICYCLE, PARAMS, D, DT)
RADIUS = 0.5 * PARAMS.diameter_m
STEP = MARGINS.step
#: Body clearance / centre distance may fall short of its bound by this much [m]: float64
#: rounding of sub-metre positions over the steps below (~1e-15), far below any contact.
BODY_TOL_M = 1e-12
STEPS = 90
FAR = 50.0  # arena half-size where walls are not the subject [m]

MODES = ("orbit", "spin", "tangent", "ram", "sequence")
commands = st.lists(
    st.tuples(st.floats(-1.0, 1.0), st.floats(-1.0, 1.0)), min_size=1, max_size=12
)
#: Start offset of the control point from the filter margin [m]: on it, inside the step band
#: (the true margin holds), or a little outside.
offsets = st.one_of(st.just(0.0), st.floats(-0.999 * STEP, 0.0), st.floats(0.0, 0.006))
gammas = st.sampled_from([defaults.GAMMA_BOUNDS[0], 3.0, defaults.GAMMA, defaults.GAMMA_BOUNDS[1]])


def _nominal(mode, k, yaw, point, away, sign, seq):
    """Adversarial nominal control-point velocity [1, 2] of one robot.

    ``away``: unit vector from the constraint towards the point.
    """
    u_max = np.hypot(PARAMS.v_max, PARAMS.lookahead_m * PARAMS.omega_max)
    if mode == "orbit":  # full speed with the hardest turn
        action = np.array([[sign * PARAMS.v_max, PARAMS.omega_max * np.sign(sign + 0.5)]])
    elif mode == "spin":
        action = np.array([[0.0, sign * PARAMS.omega_max]])
    elif mode == "sequence":
        v, w = seq[k % len(seq)]
        action = np.array([[v * PARAMS.v_max, w * PARAMS.omega_max]])
    elif mode == "tangent":
        return u_max * sign * np.array([[-away[1], away[0]]])
    else:  # ram
        return -u_max * away[None]
    return UNICYCLE.to_point_velocity(action, yaw, PARAMS, np)


def _run(pos, yaw, modes, signs, seqs, world, gamma, check):
    """Step robots through the filter and the integrator, calling ``check`` after each step.

    ``check(pos, points, k)``: axles [n, 2] and control points [n, 2] after step k.
    """
    n = len(pos)
    cbf = CBFParams(
        gamma=np.full(n, gamma),
        safety_distance=MARGINS.pair,
        obstacle_margin=MARGINS.obstacle,
        wall_margin=MARGINS.wall,
        step_margin=STEP,
    )
    config = FilterConfig(dt_s=DT)
    index = np.array([[1], [0]]) if n == 2 else np.zeros((1, 0), int)
    mask = np.ones(index.shape, bool)
    for k in range(STEPS):
        points = UNICYCLE.control_point(pos, yaw, PARAMS, np)
        u_nom = []
        for i in range(n):
            if n == 2:
                away = points[i] - points[1 - i]
            elif world.obstacles.shape[0]:
                away = points[i] - world.obstacles[0, :2]
            else:
                away = np.array([-1.0, 0.0])  # the x_max wall
            away = away / max(np.linalg.norm(away), 1e-9)
            u_nom.append(_nominal(modes[i], k, yaw[i : i + 1], points[i], away, signs[i], seqs[i]))
        u_nom = np.concatenate(u_nom)
        extra = UNICYCLE.body_rows(pos, yaw, points, index, mask, cbf, "linear", DT, PARAMS, np)
        u, info = filter_robots(
            points, u_nom, points[index], mask, world, cbf, UNICYCLE.limits(yaw, PARAMS, np),
            config, np, pair_order(index, np) if n == 2 else None, extra,
        )
        assert np.all(info.status == FilterStatus.OK), (k, info.status)
        action = UNICYCLE.from_point_velocity(u, yaw, PARAMS, np)
        pos, yaw = UNICYCLE.step(pos, yaw, action, PARAMS, DT, np)
        check(pos, UNICYCLE.control_point(pos, yaw, PARAMS, np), k)


def _pose(point, heading):
    """Axle position [1, 2] and yaw [1] of a unicycle whose control point is ``point``."""
    e = np.array([np.cos(heading), np.sin(heading)])
    return (np.asarray(point) - PARAMS.lookahead_m * e)[None], np.array([heading])


@settings(max_examples=60)
@given(
    radius=st.floats(0.02, 0.4),
    bearing=st.floats(-np.pi, np.pi),
    heading=st.floats(-np.pi, np.pi),
    offset=offsets,
    mode=st.sampled_from(MODES),
    sign=st.sampled_from([-1.0, 1.0]),
    seq=commands,
    gamma=gammas,
)
def test_body_never_touches_an_obstacle(radius, bearing, heading, offset, mode, sign, seq, gamma):
    """Body clearance to a circular obstacle stays >= 0 for every step.

    So does the control point's clearance to the true margin (``l`` + body radius), which
    implies it by the triangle inequality whatever the heading.
    """
    obstacle = np.array([[0.0, 0.0, radius]])
    world = World(obstacle, np.ones(1, bool), np.array([-FAR, FAR, -FAR, FAR]))
    reach = radius + MARGINS.obstacle + offset
    pos, yaw = _pose(reach * np.array([np.cos(bearing), np.sin(bearing)]), heading)

    def check(p, pts, k):
        clearance = np.linalg.norm(p[0]) - radius - RADIUS
        assert clearance >= -BODY_TOL_M, f"step {k}: body clearance {clearance:.3e} m"
        point = np.linalg.norm(pts[0]) - radius - (MARGINS.obstacle - STEP)
        assert point >= -BODY_TOL_M, f"step {k}: point inside the true margin by {-point:.3e} m"

    _run(pos, yaw, [mode], [sign], [seq], world, gamma, check)


@settings(max_examples=40)
@given(
    along=st.floats(-0.5, 0.5),
    heading=st.floats(-np.pi, np.pi),
    offset=offsets,
    mode=st.sampled_from(MODES),
    sign=st.sampled_from([-1.0, 1.0]),
    seq=commands,
    gamma=gammas,
)
def test_body_never_crosses_a_wall(along, heading, offset, mode, sign, seq, gamma):
    """The body stays inside the arena (the x_max wall) for every step; so does the point
    inside the true margin."""
    x_max = 1.0
    world = World(np.zeros((0, 3)), np.zeros(0, bool), np.array([-FAR, x_max, -FAR, FAR]))
    pos, yaw = _pose([x_max - MARGINS.wall - offset, along], heading)

    def check(p, pts, k):
        clearance = x_max - p[0, 0] - RADIUS
        assert clearance >= -BODY_TOL_M, f"step {k}: wall clearance {clearance:.3e} m"
        point = x_max - pts[0, 0] - (MARGINS.wall - STEP)
        assert point >= -BODY_TOL_M, f"step {k}: point inside the true margin by {-point:.3e} m"

    _run(pos, yaw, [mode], [sign], [seq], world, gamma, check)


@settings(max_examples=40)
@given(
    bearing=st.floats(-np.pi, np.pi),
    headings=st.tuples(st.floats(-np.pi, np.pi), st.floats(-np.pi, np.pi)),
    offset=st.one_of(st.just(0.0), st.floats(-1.998 * STEP, 0.0), st.floats(0.0, 0.006)),
    modes=st.tuples(st.sampled_from(MODES), st.sampled_from(MODES)),
    signs=st.tuples(st.sampled_from([-1.0, 1.0]), st.sampled_from([-1.0, 1.0])),
    seqs=st.tuples(commands, commands),
    gamma=gammas,
)
def test_two_robots_keep_the_safety_distance(bearing, headings, offset, modes, signs, seqs, gamma):
    """Two adversarial unicycles' centres stay >= the safety distance apart for every step,
    and their control points >= the true pair margin ``d + 2 l``."""
    world = World(np.zeros((0, 3)), np.zeros(0, bool), np.array([-FAR, FAR, -FAR, FAR]))
    sep = (MARGINS.pair + offset) * np.array([np.cos(bearing), np.sin(bearing)])
    p0, y0 = _pose(0.5 * sep, headings[0])
    p1, y1 = _pose(-0.5 * sep, headings[1])
    pos, yaw = np.concatenate([p0, p1]), np.concatenate([y0, y1])

    def check(p, pts, k):
        dist = np.linalg.norm(p[0] - p[1])
        assert dist >= D - BODY_TOL_M, f"step {k}: centre distance {dist:.6f} m < {D} m"
        gap = np.linalg.norm(pts[0] - pts[1]) - (MARGINS.pair - 2.0 * STEP)
        assert gap >= -BODY_TOL_M, f"step {k}: points inside the true margin by {-gap:.3e} m"

    _run(pos, yaw, list(modes), list(signs), list(seqs), world, gamma, check)


def test_step_margin_is_the_arc_bound():
    """The step margin is |u|max omega_max dt^2 / 2 and the exact arc comes within 1 % of it."""
    u_max = np.hypot(PARAMS.v_max, PARAMS.lookahead_m * PARAMS.omega_max)
    assert STEP == pytest.approx(0.5 * u_max * PARAMS.omega_max * DT * DT, rel=1e-12)
    # The box corner (v_max, l omega_max) held for dt: the point's gap from p + u dt.
    pos, yaw = np.zeros((1, 2)), np.zeros(1)
    action = np.array([[PARAMS.v_max, PARAMS.omega_max]])
    u = UNICYCLE.to_point_velocity(action, yaw, PARAMS, np)
    p0 = UNICYCLE.control_point(pos, yaw, PARAMS, np)
    p1 = UNICYCLE.control_point(*UNICYCLE.step(pos, yaw, action, PARAMS, DT, np), PARAMS, np)
    gap = float(np.linalg.norm(p1 - p0 - u * DT))
    assert 0.99 * STEP <= gap <= STEP


def test_contact_metric_counts_obstacle_and_wall_contacts():
    """``StepMetrics.touching`` (``obstacle_contacts`` in metrics.json): a body overlapping an
    obstacle or reaching past a wall counts, one just clear of both does not."""
    import jax.numpy as jnp  # noqa: PLC0415

    from marl_robots.sim.tasks.navigation import NavigationConfig, NavigationTask, NavState

    task = NavigationTask(NavigationConfig(robots=4, scenario="random"))
    params = task.default_params()
    x0, x1, y0, y1 = task.config.arena_bounds
    r = 0.5 * float(params.diameter_m)
    gap = 1e-4  # [m], well above float32 rounding at these coordinates
    pos = jnp.array(
        [
            [0.0, 0.2 + r - gap],  # overlaps the obstacle (centre 0, radius 0.2) by 0.1 mm
            [0.0, -(0.2 + r + gap)],  # clear of it by 0.1 mm
            [x1 - r + gap, 0.0],  # past the x_max wall by 0.1 mm
            [0.5, y0 + r + gap],  # clear of the y_min wall
        ],
        jnp.float32,
    )
    obstacles = jnp.array([[0.0, 0.0, 0.2], [9.0, 9.0, 0.1]], jnp.float32)
    state = NavState(
        pos, jnp.zeros(4), pos, obstacles, jnp.array([True, False]), jnp.int32(0),
        jnp.full(4, -1, jnp.int32),
    )
    m = task.metrics(state, params)
    assert m.touching.tolist() == [True, False, True, False]
    assert float(m.obstacle_clearance_m) == pytest.approx(-gap, abs=1e-6)
