"""ROS 2 nodes (thin shells over the pure core) and their ROS-free helpers.

``fleet``, ``expansion`` and ``onboard`` are pure (no ``rclpy``, no messages) so that launch files
and tests can use them without ROS; the node modules, ``swarm_host``, ``fleet_state``,
``conversions``, ``common`` and the benchmarks import ``rclpy`` and message packages.

Importing this package from a node executable (``controller_node``, ``python -m
marl_robots.nodes.controller_node``, ...) makes SIGINT during start-up end the process quietly
with status 130: importing NumPy, JAX and rclpy takes seconds, and Python's default handler
would print a ``KeyboardInterrupt`` traceback from wherever the import was.  No node exists
yet, so nothing has been commanded.  ``common.run`` replaces the handler with the
clean-shutdown one (final zero command, exit 0) before it creates the nodes.
"""

import os
import signal
import sys
import threading

#: The executables of this package (console scripts, or ``python -m marl_robots.nodes.<name>``).
EXECUTABLES = ("sim_node", "controller_node", "safety_filter_node", "swarm_host")
#: Exit status of a SIGINT during start-up (128 + SIGINT, the shell's convention).
STARTUP_INTERRUPT_STATUS = 130


def _started_as_executable() -> bool:
    if os.path.basename(sys.argv[0]) in EXECUTABLES:
        return True
    argv = list(getattr(sys, "orig_argv", ()))
    modules = {f"{__name__}.{name}" for name in EXECUTABLES}
    return any(a == "-m" and b in modules for a, b in zip(argv, argv[1:]))


def _interrupted_during_startup(signum, frame):
    os._exit(STARTUP_INTERRUPT_STATUS)


if _started_as_executable() and threading.current_thread() is threading.main_thread():
    signal.signal(signal.SIGINT, _interrupted_during_startup)
