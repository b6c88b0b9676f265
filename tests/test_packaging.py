"""Packaging: colcon builds (copy and symlink installs) and the pip console script.

The colcon tests build a copy of the tracked source tree in a temporary folder, so the checkout
is never written to, and check what ``ros2 run`` / ``ros2 launch`` / ``marl_robots.core.paths``
rely on: the node executables under ``lib/marl_robots``, the content folders and package.xml
under ``share/marl_robots``, and the ament index marker.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "marl_robots"
EXECUTABLES = ("sim_node", "controller_node", "safety_filter_node", "swarm_host", "marl-robots")
CONTENT_DIRS = ("sim", "controllers", "policies", "hardware", "launch")
#: One colcon build of this single pure-Python package on a loaded 2-core machine [s].
BUILD_TIMEOUT_S = 300
#: One Python interpreter start that imports the package [s].
RUN_TIMEOUT_S = 120
VENV_BIN = Path(sys.executable).parent
SEARCH_PATH = os.pathsep.join([str(VENV_BIN), os.environ.get("PATH", "")])
COLCON = shutil.which("colcon", path=SEARCH_PATH)
SHARE_DIR_SNIPPET = (
    "import marl_robots; from marl_robots.core.paths import share_dir; "
    "print(marl_robots.__file__); print(share_dir())"
)


def _clean_env(**extra: str) -> dict[str, str]:
    """The current environment without any ROS/colcon overlay, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("AMENT_PREFIX_PATH", "COLCON_PREFIX_PATH", "PYTHONPATH", "CMAKE_PREFIX_PATH")
    }
    env["PATH"] = SEARCH_PATH
    env.update(extra)
    return env


def _run(cmd, cwd, env, timeout) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _report(proc: subprocess.CompletedProcess) -> str:
    return (
        f"command: {proc.args}\nexit code: {proc.returncode}\n"
        f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
    )


def _tracked_files() -> list[str]:
    proc = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "ls-files", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot list the repository's files with git: {proc.stderr.strip()}")
    # The index may name files deleted from the work tree; copy only what exists.
    return [f for f in proc.stdout.splitlines() if (REPO_ROOT / f).is_file()]


@pytest.fixture(scope="module")
def source_copy(tmp_path_factory) -> Path:
    """A copy of the repository's source files (tracked and not ignored) in a temp folder."""
    src = tmp_path_factory.mktemp("colcon") / "src" / PACKAGE
    for rel in _tracked_files():
        dest = src / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / rel, dest)
    assert (src / "package.xml").is_file() and (src / "setup.py").is_file()
    return src


def _colcon_build(source: Path, name: str, *flags: str) -> Path:
    """Run ``colcon build`` into ``<workspace>/<name>-{build,install,log}``; return install."""
    if COLCON is None:
        pytest.skip("colcon is not installed (pip install colcon-common-extensions)")
    ws = source.parents[1]
    install = ws / f"{name}-install"
    proc = _run(
        [
            COLCON,
            "--log-base",
            str(ws / f"{name}-log"),
            "build",
            "--base-paths",
            str(source),
            "--build-base",
            str(ws / f"{name}-build"),
            "--install-base",
            str(install),
            *flags,
        ],
        cwd=ws,
        env=_clean_env(),
        timeout=BUILD_TIMEOUT_S,
    )
    assert proc.returncode == 0, _report(proc)
    assert f"Finished <<< {PACKAGE}" in proc.stdout, _report(proc)
    return install


def _check_layout(install: Path, source: Path) -> None:
    prefix = install / PACKAGE
    lib = prefix / "lib" / PACKAGE
    for exe in EXECUTABLES:
        path = lib / exe
        assert path.is_file(), f"missing executable {path}; lib holds {sorted(os.listdir(lib))}"
        assert os.access(path, os.X_OK), f"{path} is not executable"
    share = prefix / "share" / PACKAGE
    assert (share / "package.xml").is_file()
    for top in CONTENT_DIRS:
        expected = (
            sorted(
                p.relative_to(source).as_posix()
                for p in (source / top).rglob("*")
                if p.is_file() and p.name != "__init__.py" and p.suffix not in (".pyc", ".pyo")
            )
            if (source / top).is_dir()
            else []
        )
        for rel in expected:
            assert (share / rel).is_file(), f"{rel} was not installed under {share}"
    marker = prefix / "share" / "ament_index" / "resource_index" / "packages" / PACKAGE
    assert marker.is_file(), f"missing ament index marker {marker}"


def _module_and_share(text: str) -> tuple[Path, Path]:
    lines = text.strip().splitlines()
    return Path(lines[-2]).resolve(), Path(lines[-1]).resolve()


def _site_packages(prefix: Path) -> Path:
    found = sorted(prefix.glob("lib/python3*/site-packages"))
    assert len(found) == 1, f"expected one site-packages under {prefix}, found {found}"
    return found[0]


def test_colcon_build_copy_install(source_copy):
    install = _colcon_build(source_copy, "copy")
    _check_layout(install, source_copy)
    prefix = install / PACKAGE
    site = _site_packages(prefix)
    env = _clean_env(AMENT_PREFIX_PATH=str(prefix), PYTHONPATH=str(site))
    proc = _run(
        [sys.executable, "-c", SHARE_DIR_SNIPPET], cwd=install, env=env, timeout=RUN_TIMEOUT_S
    )
    assert proc.returncode == 0, _report(proc)
    module_file, share = _module_and_share(proc.stdout)
    assert module_file.is_relative_to(site.resolve()), "the installed package was imported"
    assert share == (prefix / "share" / PACKAGE).resolve(), _report(proc)
    # The installed console script runs against the installed package.
    cli = _run(
        [str(prefix / "lib" / PACKAGE / "marl-robots"), "--help"],
        cwd=install,
        env=env,
        timeout=RUN_TIMEOUT_S,
    )
    assert cli.returncode == 0, _report(cli)
    assert "usage: marl-robots" in cli.stdout


def test_colcon_build_symlink_install(source_copy):
    install = _colcon_build(source_copy, "symlink", "--symlink-install")
    _check_layout(install, source_copy)
    prefix = install / PACKAGE
    # Content files are links back to the source copy, so edits show without a rebuild.
    installed_yaml = prefix / "share" / PACKAGE / "controllers" / "sim_node.yaml"
    assert installed_yaml.is_symlink()
    assert installed_yaml.resolve() == (source_copy / "controllers" / "sim_node.yaml").resolve()
    # Use the environment colcon's own setup script gives (the package comes from a develop
    # path hook, not from site-packages, in a symlink install).
    script = f". {install / 'local_setup.bash'} && python -c '{SHARE_DIR_SNIPPET}'"
    proc = _run(["bash", "-c", script], cwd=install, env=_clean_env(), timeout=RUN_TIMEOUT_S)
    assert proc.returncode == 0, _report(proc)
    module_file, share = _module_and_share(proc.stdout)
    assert module_file.is_relative_to(source_copy.resolve()), "the linked source was imported"
    assert share == (prefix / "share" / PACKAGE).resolve(), _report(proc)


def test_console_script_on_venv_path():
    exe = shutil.which("marl-robots", path=str(VENV_BIN))
    assert exe is not None, f"marl-robots is not installed in {VENV_BIN}"
    proc = _run([exe, "--help"], cwd=REPO_ROOT, env=_clean_env(), timeout=RUN_TIMEOUT_S)
    assert proc.returncode == 0, _report(proc)
    assert "usage: marl-robots" in proc.stdout
    for command in ("sim", "bench"):
        assert command in proc.stdout
