"""Bad node inputs fail configuration with one line naming the parameter (real processes).

One process per class of bad input (issue 6, node side): an unknown key in a parameter file
or on the command line (named with the nearest declared parameter), a key given twice in a
parameter file, a safety distance below the body diameter, a fleet file whose layout breaks the
filter's margins, a non-finite arena and a bad obstacle radius.  Each must exit 1 without a
traceback and print ``invalid parameter '<name>'`` plus the reason.  ``--help`` of every
executable prints the parameter table and exits 0.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
import yaml

pytest.importorskip("rclpy")

from marl_robots.nodes.expansion import expand_swarm  # noqa: E402
from marl_robots.nodes.fleet import fleet_to_dict, load_fleet  # noqa: E402

pytestmark = pytest.mark.ros

#: Exit of a node that fails to configure: start-up plus import time on a loaded machine [s].
EXIT_TIMEOUT_S = 60.0
EXECUTABLES = ("sim_node", "controller_node", "safety_filter_node", "swarm_host")


def _with(spec, files=(), **overrides):
    return dataclasses.replace(spec, param_files=(*spec.param_files, *map(str, files)),
                               parameters={**spec.parameters, **overrides})


def _params_file(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def _overlapping_fleet(tmp_path):
    data = fleet_to_dict(load_fleet("antipodal_8.yaml"))
    robots = data["fleet"]["robots"]
    robots[3]["initial_pose"] = [robots[2]["initial_pose"][0] + 0.05,
                                 *robots[2]["initial_pose"][1:]]
    return _params_file(tmp_path, "overlap.yaml", yaml.safe_dump(data))


def test_bad_inputs_fail_configuration_naming_the_parameter(launcher, tmp_path):
    specs = {s.fqn: s for s in expand_swarm(robots=2, use_sim_time=False)}
    filt, ctrl, sim = specs["/robot_0/safety_filter"], specs["/robot_1/controller"], specs["/sim"]
    typo = _params_file(tmp_path, "typo.yaml", "/**:\n  ros__parameters:\n    gama: 3.0\n")
    dup = _params_file(tmp_path, "dup.yaml",
                       "/**:\n  ros__parameters:\n    gamma: 5.0\n    gamma: 7.0\n")
    sim_typo = _params_file(tmp_path, "sim_typo.yaml",
                            "/sim:\n  ros__parameters:\n    rate_hx: 60.0\n")
    overlap = _overlapping_fleet(tmp_path)
    # label: (spec, parameter named, further text the message must hold)
    cases = {
        "typo in a parameter file (filter)": (_with(filt, [typo]), "gama",
                                              "did you mean 'gamma'"),
        "typo on the command line (controller)": (_with(ctrl, gama=3.0), "gama",
                                                  "unknown parameter"),
        "typo in a node-specific file section (sim)": (_with(sim, [sim_typo]), "rate_hx",
                                                       "did you mean 'rate_hz'"),
        "duplicate key in a parameter file": (_with(filt, [dup]), "gamma",
                                              "duplicate key 'gamma'"),
        "safety distance below the body (filter)": (_with(filt, safety_distance_m=0.05),
                                                    "safety_distance_m", "body diameter"),
        "zero safety distance (controller)": (_with(ctrl, safety_distance_m=0.0),
                                              "safety_distance_m", "body diameter"),
        "overlapping starts in the fleet file (filter)": (
            _with(filt, fleet_file=str(overlap)), "fleet_file", "'robot_2' and 'robot_3'"),
        "overlapping starts in the fleet file (sim)": (
            _with(sim, fleet_file=str(overlap)), "fleet_file", "'robot_2' and 'robot_3'"),
        "non-finite arena (filter)": (_with(filt, arena=[-1.6, float("nan"), -1.0, 1.0]),
                                      "arena", "finite"),
        "negative obstacle radius (controller)": (_with(ctrl, obstacles=[0.0, 0.0, -0.1]),
                                                  "obstacles", "r > 0"),
    }
    procs = {label: (launcher.start_spec(spec), name, text)
             for label, (spec, name, text) in cases.items()}
    for label, (proc, name, text) in procs.items():
        try:
            rc = proc.wait(timeout=EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{label}: still running after {EXIT_TIMEOUT_S} s; its stacks:\n"
                        f"{proc.dump_stacks()}")
        log = proc.log()
        assert rc == 1, f"{label}: exited {rc}\n{log}"
        fatal = [line for line in log.splitlines() if "failed to configure" in line]
        assert fatal, f"{label}: no 'failed to configure' line\n{log}"
        assert f"invalid parameter '{name}'" in fatal[-1], f"{label}: not named\n{log}"
        assert text in fatal[-1], f"{label}: reason missing\n{log}"
        assert "Traceback" not in log, f"{label}: crashed instead of failing cleanly\n{log}"


@pytest.mark.parametrize("executable", EXECUTABLES)
def test_help_prints_the_parameters_and_exits_zero(executable):
    from marl_robots.nodes import controller_node, safety_filter_node, swarm_host
    from marl_robots.nodes.onboard import SIM_PARAMS

    # Each executable's own table (the nodes add the fleet state input and the like).
    specs = {"sim_node": SIM_PARAMS, "controller_node": controller_node.PARAMS,
             "safety_filter_node": safety_filter_node.PARAMS,
             "swarm_host": swarm_host.HOST_PARAMS}[executable]
    out = subprocess.run([sys.executable, "-m", f"marl_robots.nodes.{executable}", "--help"],
                         capture_output=True, text=True, timeout=EXIT_TIMEOUT_S)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"usage: {executable}"), out.stdout[:200]
    for spec in specs:
        line = next((ln for ln in out.stdout.splitlines() if ln.split()[:1] == [spec.name]),
                    None)
        assert line is not None, f"{spec.name} missing from --help"
        assert spec.description in line
        if spec.default is not None:
            assert repr(spec.default) in line
    assert "FATAL" not in out.stdout + out.stderr


def test_params_files_are_found_and_read_as_rcl_reads_them(tmp_path):
    """launch_ros writes list parameters as ``!!python/tuple``: accepted, duplicates are not."""
    from marl_robots.nodes.onboard import ParameterError, check_params_files, params_files

    tagged = _params_file(tmp_path, "tagged.yaml", "/**:\n  ros__parameters:\n"
                          "    fleet_ids: !!python/tuple [0, 1]\n"
                          "    fleet_namespaces: !!python/tuple\n    - robot_0\n    - robot_1\n")
    dup = _params_file(tmp_path, "dup.yaml", "/**:\n  ros__parameters:\n    v_max: 0.1\n"
                       "    v_max: 0.2\n")
    argv = ["--foo", "--ros-args", "-p", "a:=1", "--params-file", str(tagged), "--",
            "--params-file", "not-a-ros-arg"]
    assert params_files(argv) == [str(tagged)]
    check_params_files(argv)
    with pytest.raises(ParameterError, match=r"invalid parameter 'v_max': .*dup.yaml: line 4"):
        check_params_files(["--ros-args", f"--params-file={dup}"])
