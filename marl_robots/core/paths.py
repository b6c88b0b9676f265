"""One resolver for the package's content folders (models, gains, fleets, launch files).

Order: the ament index (a colcon install, when ``ament_index_python`` is importable and
knows the package), then the Python install prefix (``pip install``: data files land in
``<prefix>/share/marl_robots``), then the source tree (editable installs and checkouts).
"""

from __future__ import annotations

import sys
from pathlib import Path

PACKAGE = "marl_robots"
_SOURCE_ROOT = Path(__file__).resolve().parents[2]


def _candidates() -> list[Path]:
    roots: list[Path] = []
    try:
        from ament_index_python.packages import (  # noqa: PLC0415 - optional dependency
            PackageNotFoundError,
            get_package_share_directory,
        )

        try:
            roots.append(Path(get_package_share_directory(PACKAGE)))
        except (PackageNotFoundError, KeyError, LookupError, ValueError, OSError):
            pass
    except ImportError:
        pass
    roots.append(Path(sys.prefix) / "share" / PACKAGE)
    roots.append(_SOURCE_ROOT)
    return roots


def share_dir() -> Path:
    """Return the first root that holds the package's content (has ``controllers/``)."""
    for root in _candidates():
        if (root / "controllers").is_dir():
            return root
    raise FileNotFoundError(
        f"cannot find the {PACKAGE} content folders; looked in: "
        + ", ".join(str(r) for r in _candidates())
    )


def content_path(*parts: str) -> Path:
    """Return the path of a content file, e.g. ``content_path('hardware', 'fleet.yaml')``.

    Raises:
        FileNotFoundError: naming every place that was searched.
    """
    tried = []
    for root in _candidates():
        candidate = root.joinpath(*parts)
        if candidate.exists():
            return candidate
        tried.append(str(candidate))
    raise FileNotFoundError(f"no content file {'/'.join(parts)!r}; looked in: {', '.join(tried)}")
