"""Name -> implementation registries with lazy ``module:attr`` entries.

A registry maps a short name (``"unicycle"``) to either an object or a lazy import string
(``"marl_robots.sim.robots.unicycle:Unicycle"``), imported on first ``get``.  Unknown names
fail with the list of valid ones, so a typo on the command line says what would have worked.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any


class UnknownNameError(KeyError):
    """Raised for a name that is not registered; the message lists the known names."""

    def __str__(self) -> str:  # KeyError quotes its argument; we want the plain sentence.
        return str(self.args[0])


class Registry:
    """A named collection of implementations.

    Args:
        kind: singular noun used in messages, e.g. ``"task"`` or ``"scenario"``.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Any] = {}

    def register(self, name: str, target: Any) -> None:
        """Register ``target`` (an object or a ``"module:attr"`` string) under ``name``."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = target

    def get(self, name: str) -> Any:
        """Return the implementation for ``name``, importing it if it is lazy."""
        if name not in self._entries:
            known = ", ".join(sorted(self._entries)) or "(none)"
            raise UnknownNameError(f"unknown {self.kind} {name!r}; known {self.kind}s: {known}")
        target = self._entries[name]
        if isinstance(target, str):
            module_name, _, attr = target.partition(":")
            target = getattr(importlib.import_module(module_name), attr)
            self._entries[name] = target
        return target

    def names(self) -> list[str]:
        """Return the registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
