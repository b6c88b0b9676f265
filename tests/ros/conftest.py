"""Shared machinery of the ROS 2 tests: isolated domains, node processes, a probe node.

Every test gets its own ``ROS_DOMAIN_ID`` (below 233, from the pid and a per-test counter) and
``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` so that discovery stays on loopback.  Node
processes start in their own process group and stop with SIGINT; waits are on conditions with
timeouts of at least 10 s, never fixed sleeps.
"""

from __future__ import annotations

import itertools
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

# Before any rclpy context exists in this process: discovery on loopback only.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.pop("ROS_LOCALHOST_ONLY", None)
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
os.environ.setdefault("AMENT_PREFIX_PATH", sys.prefix)

_COUNTER = itertools.count()
#: Shortest wait on a cross-process condition [s] (discovery alone can take 3 s).
MIN_TIMEOUT_S = 10.0
#: Signs of an unclean exit in a node's log (the last: a stack dump of a stalled teardown).
BAD_LOG_MARKS = ("Traceback", "Exception ignored", "KeyboardInterrupt", "teardown took over",
                 "most recent call first")


def next_domain_id() -> int:
    """A ROS domain id in [1, 232] unique to this pid and test (valid Fast DDS range)."""
    return 1 + (os.getpid() * 31 + next(_COUNTER) * 7) % 232


def ros_env(domain_id: int) -> dict:
    """Environment for node processes of one test."""
    env = dict(os.environ)
    env.update(
        ROS_DOMAIN_ID=str(domain_id),
        ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
        PYTHONUNBUFFERED="1",
        RCUTILS_LOGGING_BUFFERED_STREAM="0",
        # SIGABRT (``NodeProcess.dump_stacks``) prints every thread's Python stack.
        PYTHONFAULTHANDLER="1",
    )
    env.pop("ROS_LOCALHOST_ONLY", None)
    return env


class NodeProcess:
    """A node started as ``python -m <module> --ros-args ...`` in its own process group."""

    def __init__(self, module: str | None, ros_args: list[str], env: dict, log_dir: Path,
                 tag: str):
        self.tag = tag
        self.interrupted = False
        stem = tag.strip("/").replace("/", "_") or "node"
        self.log_path = log_dir / f"{stem}.log"
        for k in itertools.count(1):  # two processes with one node name get two logs
            if not self.log_path.exists():
                break
            self.log_path = log_dir / f"{stem}.{k}.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        command = [sys.executable, "-m", module, *ros_args] if module else list(ros_args)
        self.proc = subprocess.Popen(
            command,
            env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def log(self) -> str:
        """Everything the process printed so far."""
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit by itself; return its exit code."""
        return self.proc.wait(timeout=timeout)

    def dump_stacks(self, timeout: float = 5.0) -> str:
        """SIGABRT a process that seems stuck: faulthandler writes every thread's Python stack
        to its log (even while a C call holds the GIL); returns the log."""
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGABRT)
                self.proc.wait(timeout=timeout)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        return self.log()

    def interrupt(self) -> None:
        """Send one SIGINT to the process group (a second one would kill it uncleanly)."""
        if self.proc.poll() is None and not self.interrupted:
            self.interrupted = True
            try:
                os.killpg(self.proc.pid, signal.SIGINT)
            except ProcessLookupError:
                pass

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGINT the process group once and wait; SIGKILL (and return None) if it hangs."""
        if self.proc.poll() is None:
            self.interrupt()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
                self._log.close()
                return None
        self._log.close()
        return self.proc.returncode


class Launcher:
    """Starts node processes for one test and guarantees they are stopped afterwards."""

    def __init__(self, domain_id: int, log_dir: Path):
        self.domain_id = domain_id
        self.env = ros_env(domain_id)
        self.log_dir = log_dir
        self.procs: list[NodeProcess] = []

    def start(self, module: str, ros_args: list[str], tag: str) -> NodeProcess:
        """Start one node process."""
        proc = NodeProcess(module, ros_args, self.env, self.log_dir, tag)
        self.procs.append(proc)
        return proc

    def start_args(self, command: list[str], tag: str) -> NodeProcess:
        """Start an arbitrary command (e.g. a launch file runner) in its own process group."""
        proc = NodeProcess(None, command, self.env, self.log_dir, tag)
        self.procs.append(proc)
        return proc

    def start_spec(self, spec) -> NodeProcess:
        """Start a ``marl_robots.nodes.expansion.NodeSpec``."""
        from marl_robots.nodes.expansion import ros_arguments

        return self.start(spec.module, ros_arguments(spec), spec.fqn)

    def stop_all(self) -> dict[str, int | None]:
        """SIGINT every still-running process (all groups first, then wait)."""
        for p in self.procs:
            p.interrupt()
        return {p.tag: p.stop() for p in self.procs}

    def logs(self) -> str:
        """Tail of every process's log, for failure messages."""
        return "\n".join(f"--- {p.tag} (rc={p.proc.poll()})\n{p.log()[-1500:]}"
                         for p in self.procs)


class Probe:
    """An in-process rclpy node on the test's domain: publish, subscribe, wait on conditions."""

    def __init__(self, domain_id: int, name: str = "probe"):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self.rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)

    def spin_for(self, seconds: float) -> None:
        """Process callbacks for ``seconds`` (used between publishes, not as a wait)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=min(0.01, max(0.0, end - time.monotonic())))

    def wait_for(self, predicate, timeout: float = MIN_TIMEOUT_S, every=None,
                 period: float = 0.02) -> bool:
        """Spin until ``predicate()`` is true or ``timeout`` [s] passes; ``every()`` runs each
        ``period`` (e.g. to republish inputs).  Returns the final predicate value."""
        end = time.monotonic() + timeout
        next_every = 0.0
        while time.monotonic() < end:
            if every is not None and time.monotonic() >= next_every:
                every()
                next_every = time.monotonic() + period
            self.executor.spin_once(timeout_sec=0.005)
            if predicate():
                return True
        return bool(predicate())

    def close(self, timeout: float = 15.0) -> None:
        """Destroy the node and shut the context down (bounded: never hang a test run).

        Destroying a DDS writer can block in the middleware for a long time when the readers
        it matched died with their processes; a daemon thread keeps that from hanging pytest.
        """

        def _close():
            self.executor.shutdown(timeout_sec=5.0)
            self.node.destroy_node()
            self.rclpy.try_shutdown(context=self.context)

        worker = threading.Thread(target=_close, daemon=True)
        worker.start()
        worker.join(timeout)


@pytest.fixture
def domain_id() -> int:
    """A fresh ROS domain id for this test."""
    return next_domain_id()


@pytest.fixture
def launcher(domain_id, tmp_path):
    """Node-process launcher; every process is SIGINTed at teardown."""
    pytest.importorskip("rclpy")
    lch = Launcher(domain_id, tmp_path)
    yield lch
    lch.stop_all()


@pytest.fixture
def probe(domain_id):
    """In-process probe node on the test's domain."""
    pytest.importorskip("rclpy")
    prb = Probe(domain_id)
    yield prb
    prb.close()


def finite(*values) -> bool:
    """True if every value is a finite float."""
    return all(math.isfinite(v) for v in values)
