"""What every node shares: explicit QoS profiles, parameter tables, steady clocks, ``main``.

QoS (REP-2003 style): state and commands are best effort, depth 1 (the newest sample is the
only useful one and a retransmitted old one is harmful); goals and configuration are reliable
and transient-local (late joiners get the last value); diagnostics are reliable.
"""

from __future__ import annotations

import ctypes
import faulthandler
import gc
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial

import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.clock import Clock, ClockType
from rclpy.exceptions import (
    InvalidParameterTypeException,
    InvalidParameterValueException,
    ParameterUninitializedException,
)
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions

from marl_robots.core.validate import unknown_name
from marl_robots.nodes.onboard import (
    ParameterError,
    ParamSpec,
    check_params_files,
    help_text,
    wants_help,
)

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

#: Longest teardown of a node process (destroying its DDS entities and the context) before it
#: exits with its code regardless [s].  Teardown is slow, not stuck, when many processes stop
#: at once on a loaded machine: every destroyed entity (a node has ~30: publishers,
#: subscriptions, parameter and lifecycle services) is announced to every peer participant
#: (measured with 17 processes stopping at once next to 2 CPU burners: 0.2-1.2 s; one
#: ``Publisher.destroy`` once blocked for over 4.5 s while the test suite's other jobs also
#: loaded the machine).  The final zero command goes out before teardown starts.
CLEANUP_TIMEOUT_S = 6.0
#: When the teardown has not returned this long after it started [s], every thread's Python
#: stack goes to stderr (faulthandler's C watchdog, which needs no GIL): what was stuck.
STALL_DUMP_S = 6.5
#: Last resort [s]: one destroy call can block in the middleware *holding the GIL*, which no
#: Python timeout can interrupt.  A POSIX timer then ends the process from a thread of its
#: own with the node's status (``_ExitDeadline``).  Below ``ros2 launch``'s SIGKILL, 10 s
#: after its SIGINT (the spin loop leaves within ``SPIN_PERIOD_S`` of the signal).
HARD_EXIT_S = 7.0
#: A teardown longer than this is reported in the log (one line) [s].
SLOW_TEARDOWN_S = 2.0
#: Pause between the final zero commands and destroying the nodes [s].  Commands are best
#: effort: a sample still on its way when the writer's participant is destroyed can be dropped
#: by a reader that processes the removal first (seen under load on 1 in ~40 nodes).
FINAL_COMMAND_LINGER_S = 0.3
#: Longest wait of the executor between checks of the stop flag [s] (SIGINT latency).
SPIN_PERIOD_S = 0.1
#: Parameters rclpy declares on every node itself (never unknown).
_RCLPY_PARAMETERS = ("use_sim_time", "start_type_description_service")

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
    check_overrides(node, specs)
    return values


def check_overrides(node, specs: tuple[ParamSpec, ...]) -> None:
    """Refuse parameter overrides (``--params-file``, ``-p``) that the node does not declare.

    rclpy keeps every override addressed to this node in ``node._parameter_overrides`` and,
    with ``allow_undeclared_parameters=False`` (the default), silently ignores those never
    declared: a ``gama:`` typo would run with the default ``gamma``.

    Raises:
        ParameterError: naming the first unknown parameter and the nearest declared one.

    """
    known = {spec.name for spec in specs} | set(_RCLPY_PARAMETERS) | set(node._parameters)
    overrides = getattr(node, "_parameter_overrides", {}) or {}
    for name in sorted(set(overrides) - known):
        raise ParameterError(name, unknown_name("parameter", name, sorted(s.name for s in specs)))


def steady_clock() -> Clock:
    """A steady clock for watchdogs: keeps ticking when ``/clock`` (sim time) stops."""
    return Clock(clock_type=ClockType.STEADY_TIME)


def monotonic() -> float:
    """Seconds on the monotonic clock (arrival times for staleness checks)."""
    return time.monotonic()


class StopRequest:
    """SIGINT / SIGTERM turned into a flag that the spin loop polls.

    Why not rclpy's own handlers (the root cause of unclean shutdowns): on SIGINT rclpy shuts
    every context down *from its signal-handling thread*, while the main thread may be inside
    a callback or ``take_message`` (which then fails in rcl with a ``RuntimeError``, or in the
    middleware), and then lets Python raise ``KeyboardInterrupt`` at whatever bytecode runs
    next - inside a finaliser such as ``Future.__del__`` it is printed and lost, and the
    process keeps running; a second SIGINT raises again in the middle of teardown.  Here the
    handler only records the request; the main thread leaves the spin loop between callbacks,
    publishes the final commands and tears down in order, and repeated signals are ignored.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous = {}

    @property
    def requested(self) -> bool:
        """True once SIGINT or SIGTERM arrived."""
        return self.signum is not None

    def _handle(self, signum, frame) -> None:
        if self.signum is None:
            self.signum = signum

    def install(self) -> StopRequest:
        """Install the handlers (main thread only); returns self."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def uninstall(self) -> None:
        """Restore the previous handlers."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}


def autostart(node):
    """Configure and activate a lifecycle node whose ``autostart`` parameter is set.

    Args:
        node: a lifecycle node with ``failed`` (None or (parameter, why)) and ``params``.

    Returns:
        The node; ``failed`` is set when the configure transition failed.

    """
    if node.failed or not node.params["autostart"]:
        return node
    if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
        node.failed = node.failed or ("autostart", "configure transition failed")
        return node
    node.trigger_activate()
    return node


def _as_list(built) -> list:
    return list(built) if isinstance(built, (list, tuple)) else [built]


def events_executor(context=None):
    """The ``EventsExecutor`` of rclpy where the distribution has one, else single-threaded.

    ``SingleThreadedExecutor`` rebuilds its wait set in Python before every wait, from every
    entity of every node: with the 2N nodes of a hosted swarm (each with parameter and
    lifecycle services and QoS event handlers, ~25 entities) that is most of the process's CPU
    time (measured: 50 ms of CPU per simulation step at 16 robots, 8 ms with the
    ``EventsExecutor``, which queues ready events in C++; Kilted's rclpy has it in
    ``rclpy.experimental``).  SIGINT is still this module's flag, polled between spins.
    ``safety_filter_node`` and ``policy_node`` use it too (their state -> command latency,
    ``latency_bench``), as does ``latency_bench``'s driver; ``_teardown`` removes the nodes
    from it before destroying them (without that, a ``controller_node`` on it once stalled
    over 6.5 s inside ``destroy_node`` under load; with it, 8 stress rounds of 17 processes
    stopped within 0.92 s).  ``controller_node`` and ``sim_node`` keep the single-threaded one.

    Args:
        context: the rclpy context (None: the default one).
    """
    try:
        from rclpy.experimental import EventsExecutor  # noqa: PLC0415
    except ImportError:  # Humble, Jazzy
        return SingleThreadedExecutor(context=context)
    return EventsExecutor(context=context)


def run(make_node: Callable[[], object], args: Sequence[str] | None = None,
        specs: tuple[ParamSpec, ...] = (), summary: str = "",
        executor_factory: Callable[[], object] = SingleThreadedExecutor,
        exit_process: bool = True) -> int:
    """Create one node (or several), spin them in one executor, map the outcome to an exit code.

    Shutdown semantics: SIGINT or SIGTERM (once or repeatedly) stops spinning between two
    callbacks; every node's ``stop()`` (if it has one) then publishes its final zero command;
    then, with ``exit_process``, the process ends at once (``_exit_now``: no entity is
    destroyed one by one, the DDS participant goes with the process), otherwise the nodes are
    destroyed and the context shut down; bounded by ``CLEANUP_TIMEOUT_S``.

    Args:
        make_node: builds the node, or a list of nodes; it may raise ``ParameterError`` (or
            return nodes whose ``failed`` attribute holds (parameter, reason) after start-up).
        args: command line, program name first (``None``: ``sys.argv``); ``-h``/``--help``
            before ``--ros-args`` prints ``help_text`` of ``specs`` and returns 0.
        specs: the node's parameter table (for ``--help``).
        summary: what the node does (for ``--help``).
        executor_factory: builds the executor (``events_executor`` for many nodes).
        exit_process: end the process after teardown (``_exit_now``) instead of returning:
            what the node executables do.

    Returns:
        0 after SIGINT / SIGTERM / external shutdown, 1 when a node failed to configure (as
        the process's exit status when ``exit_process``).

    """
    argv = list(sys.argv if args is None else args)
    if wants_help(argv[1:]):
        prog = os.path.basename(argv[0]).removesuffix(".py") if argv else "node"
        print(help_text(prog, summary, specs))
        return 0
    try:
        check_params_files(argv[1:])
    except ParameterError as err:
        print(f"[FATAL] failed to configure: {err}", file=sys.stderr, flush=True)
        return 1
    stop = StopRequest().install()
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    nodes: list = []
    executor = None
    code = 0
    try:
        nodes = _as_list(make_node())
        for node in nodes:
            failed = getattr(node, "failed", None)
            if failed:
                raise ParameterError(*failed)
        executor = executor_factory()
        for node in nodes:
            executor.add_node(node)
        # Start-up left ~36,000 objects (imports, configuration) that live as long as the
        # process: keep the collector from scanning them again (a full collection of them
        # took 68 ms on the loaded development machine, inside some control period).
        gc.freeze()
        while not stop.requested and rclpy.ok():
            executor.spin_once(timeout_sec=SPIN_PERIOD_S)
    except ParameterError as err:
        print(f"[FATAL] failed to configure: {err}", file=sys.stderr, flush=True)
        code = 1
    except ExternalShutdownException:
        pass
    deadline = _ExitDeadline(HARD_EXIT_S, code, dump_after=STALL_DUMP_S)
    started = time.monotonic()
    if exit_process:
        # The process ends right after its final commands: its DDS participant goes with it
        # (never deleted gracefully: os._exit skips that anyway), and peers drop it after
        # their lease.  Destroying the entities one by one first only risked the stalls:
        # rcl's Service.destroy / Publisher.destroy blocked over 6.5 s under load, holding
        # the GIL, while peers exited at the same moment.
        teardown = partial(_final_commands, nodes if code == 0 else [])
    else:
        teardown = partial(_teardown, nodes, executor, final=code == 0)
    if not _bounded(teardown, CLEANUP_TIMEOUT_S):
        # Destroying a DDS entity can block in the middleware (peers exiting at the same
        # moment); the exit code and the final command already sent matter more.
        print(f"[WARN] teardown took over {CLEANUP_TIMEOUT_S} s; exiting anyway",
              file=sys.stderr, flush=True)
        _exit_now(code)
    deadline.cancel()
    took = time.monotonic() - started
    if took > SLOW_TEARDOWN_S:
        print(f"[INFO] slow teardown: {took:.1f} s for {len(nodes)} node(s)", file=sys.stderr,
              flush=True)
    stop.uninstall()
    if exit_process:
        _exit_now(code)
    return code


def _exit_now(code: int) -> None:
    """Flush stdio and end the process without Python's finalisation.

    Once the nodes and the context are gone nothing in it is needed, and it is slow: module
    teardown and the ``atexit`` handlers of JAX and rclpy took up to 2 s per process with 17
    node processes stopping at once on 2 busy cores (measured: the slowest process exited 2.3-3.7
    s after SIGINT with it, 0.8 s without).
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


class _Sigval(ctypes.Union):
    _fields_ = [("sival_int", ctypes.c_int), ("sival_ptr", ctypes.c_void_p)]


class _SigEvent(ctypes.Structure):
    """Linux ``struct sigevent`` (64 bytes) with the ``SIGEV_THREAD`` members."""

    _fields_ = [("sigev_value", _Sigval), ("sigev_signo", ctypes.c_int),
                ("sigev_notify", ctypes.c_int), ("function", ctypes.c_void_p),
                ("attributes", ctypes.c_void_p), ("_pad", ctypes.c_byte * 32)]


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _ITimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


_SIGEV_THREAD = 2
_CLOCK_MONOTONIC = 1


class _ExitDeadline:
    """``_exit(code)`` after ``seconds`` unless cancelled, even while a C call holds the GIL.

    A POSIX timer with ``SIGEV_THREAD`` notification: when it expires, the C library starts a
    thread that calls ``_exit`` with the timer's value as its argument, without entering Python.
    Before that, at ``dump_after``, faulthandler's watchdog thread (no GIL either) writes every
    thread's Python stack to stderr.  Elsewhere than Linux (or if the timer cannot be made),
    faulthandler's watchdog does both at ``seconds``, but can only exit with status 1.
    """

    def __init__(self, seconds: float, code: int, dump_after: float) -> None:
        self._timer = None
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            event = _SigEvent()
            event.sigev_notify = _SIGEV_THREAD
            event.sigev_value.sival_int = int(code)
            event.function = ctypes.cast(libc._exit, ctypes.c_void_p).value
            timer = ctypes.c_void_p()
            if libc.timer_create(_CLOCK_MONOTONIC, ctypes.byref(event), ctypes.byref(timer)):
                raise OSError(ctypes.get_errno(), "timer_create")
            whole = int(seconds)
            spec = _ITimerspec(_Timespec(0, 0),
                               _Timespec(whole, int((seconds - whole) * 1e9)))
            if libc.timer_settime(timer, 0, ctypes.byref(spec), None):
                libc.timer_delete(timer)
                raise OSError(ctypes.get_errno(), "timer_settime")
            self._libc, self._timer = libc, timer
            faulthandler.dump_traceback_later(min(dump_after, seconds), exit=False)
        except (OSError, AttributeError):
            faulthandler.dump_traceback_later(seconds, exit=True)

    def cancel(self) -> None:
        """Disarm (the teardown finished in time)."""
        faulthandler.cancel_dump_traceback_later()
        if self._timer is not None:
            self._libc.timer_delete(self._timer)
            self._timer = None


def _final_commands(nodes: list) -> None:
    """Every node's ``stop()`` (its final zero command), then a linger for their delivery."""
    stopping = [node for node in nodes if hasattr(node, "stop")]
    for node in stopping:
        node.stop()
    if stopping:
        time.sleep(FINAL_COMMAND_LINGER_S)


def _teardown(nodes: list, executor, final: bool) -> None:
    """Final commands (when the nodes ran), then destroy the nodes and the context, in order."""
    _final_commands(nodes if final else [])
    if executor is not None:
        for node in nodes:  # unhooks the executor's middleware callbacks before destruction
            executor.remove_node(node)
        executor.shutdown(timeout_sec=0.0)
    for node in nodes:
        node.destroy_node()
    rclpy.try_shutdown()


def _bounded(fn: Callable[[], None], timeout: float) -> bool:
    """Run ``fn`` in a daemon thread; False if it did not finish within ``timeout`` [s]."""
    worker = threading.Thread(target=fn, daemon=True)
    worker.start()
    worker.join(timeout)
    return not worker.is_alive()
