"""What every node shares: explicit QoS profiles, parameter tables, steady clocks, ``main``.

QoS (REP-2003 style): state and commands are best effort, depth 1 (the newest sample is the
only useful one and a retransmitted old one is harmful); goals and configuration are reliable
and transient-local (late joiners get the last value); diagnostics are reliable.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable

import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.clock import Clock, ClockType
from rclpy.exceptions import (
    InvalidParameterTypeException,
    InvalidParameterValueException,
    ParameterUninitializedException,
)
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from marl_robots.nodes.onboard import ParameterError, ParamSpec

#: Odometry and other fast state: newest sample only.
STATE_QOS = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST,
                       reliability=ReliabilityPolicy.BEST_EFFORT,
                       durability=DurabilityPolicy.VOLATILE)
#: Velocity commands: newest sample only.
COMMAND_QOS = STATE_QOS
#: Goals and configuration: delivered, and kept for late joiners.
LATCHED_QOS = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST,
                         reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
#: Diagnostics: delivered, a short backlog.
DIAGNOSTICS_QOS = QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST,
                             reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.VOLATILE)
#: RViz markers and /clock: reliable publishers match both reliable and best-effort readers.
DISPLAY_QOS = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST,
                         reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.VOLATILE)

#: Longest teardown of a node process before it exits regardless [s].
CLEANUP_TIMEOUT_S = 10.0

_TYPES = {
    "bool": Parameter.Type.BOOL,
    "int": Parameter.Type.INTEGER,
    "double": Parameter.Type.DOUBLE,
    "string": Parameter.Type.STRING,
    "int_array": Parameter.Type.INTEGER_ARRAY,
    "double_array": Parameter.Type.DOUBLE_ARRAY,
    "string_array": Parameter.Type.STRING_ARRAY,
}


def declare_parameters(node, specs: tuple[ParamSpec, ...]) -> dict:
    """Declare a parameter table on ``node`` and return ``{name: value}``.

    Parameters without a default are declared statically typed and read as ``[]`` when unset.

    Raises:
        ParameterError: an override of the wrong type or value, naming the parameter.

    """
    values = {}
    for spec in specs:
        descriptor = ParameterDescriptor(description=spec.description)
        try:
            if spec.default is None:
                node.declare_parameter(spec.name, _TYPES[spec.kind], descriptor)
            else:
                node.declare_parameter(spec.name, spec.default, descriptor)
        except (InvalidParameterTypeException, InvalidParameterValueException) as err:
            raise ParameterError(spec.name, f"expected {spec.kind}: {err}") from err
        try:
            value = node.get_parameter(spec.name).value
        except ParameterUninitializedException:
            value = []
        values[spec.name] = list(value) if spec.kind.endswith("_array") else value
    return values


def steady_clock() -> Clock:
    """A steady clock for watchdogs: keeps ticking when ``/clock`` (sim time) stops."""
    return Clock(clock_type=ClockType.STEADY_TIME)


def monotonic() -> float:
    """Seconds on the monotonic clock (arrival times for staleness checks)."""
    return time.monotonic()


def run(make_node: Callable[[], object], args=None) -> int:
    """Create a node, spin it, and map the outcome to a process exit code.

    Args:
        make_node: builds the node; it may raise ``ParameterError`` (or return a node whose
            ``failed`` attribute holds an error message after start-up).
        args: command-line arguments for ``rclpy.init`` (``None``: ``sys.argv``).

    Returns:
        0 after SIGINT / external shutdown, 1 when the node failed to configure.

    """
    rclpy.init(args=args)
    node = None
    code = 0
    try:
        node = make_node()
        failed = getattr(node, "failed", None)
        if failed:
            raise ParameterError(*failed)
        # rclpy's experimental EventsExecutor would cut per-callback overhead, but in Kilted
        # it does not return on SIGINT; the SingleThreadedExecutor is on every distribution.
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except ParameterError as err:
        print(f"[FATAL] failed to configure: {err}", file=sys.stderr, flush=True)
        code = 1
    except (KeyboardInterrupt, ExternalShutdownException):
        code = 0
    except Exception:  # noqa: BLE001 - see below
        # SIGINT shuts the context down under a running callback, which then fails in rcl
        # ("context is invalid"): that is a clean shutdown, anything else is a real error.
        if rclpy.ok():
            raise
        code = 0
    finally:
        if not _bounded(lambda: _cleanup(node), CLEANUP_TIMEOUT_S):
            # Rarely, destroying a DDS entity blocks in the middleware (seen when peers exit
            # at the same moment); the exit code matters more than a tidy teardown.
            print(f"[WARN] cleanup took over {CLEANUP_TIMEOUT_S} s; exiting anyway",
                  file=sys.stderr, flush=True)
            sys.stdout.flush()
            os._exit(code)
    return code


def _cleanup(node) -> None:
    if node is not None:
        node.destroy_node()
    rclpy.try_shutdown()


def _bounded(fn: Callable[[], None], timeout: float) -> bool:
    """Run ``fn`` in a daemon thread; False if it did not finish within ``timeout`` [s]."""
    worker = threading.Thread(target=fn, daemon=True)
    worker.start()
    worker.join(timeout)
    return not worker.is_alive()
