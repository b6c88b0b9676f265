"""Strict configuration: frozen dataclasses loaded from YAML that reject unknown keys.

``load_config(MyConfig, "path.yaml")`` returns a ``MyConfig``; a key the dataclass does not
declare, or a value of the wrong type, raises ``ConfigError`` naming the file and the key.
Nested dataclasses are supported; tuples are accepted from YAML lists.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from marl_robots.core.validate import unknown_name

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration file or mapping that does not match its dataclass."""


def _check_value(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in typing.get_args(hint):
            try:
                return _check_value(value, option, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"{where}: {value!r} matches none of {hint}")
    if hint is type(None):
        if value is None:
            return None
        raise ConfigError(f"{where}: expected null, got {value!r}")
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return from_dict(hint, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_check_value(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
        return tuple(
            _check_value(v, a, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value))
        )
    if origin is typing.Literal:
        if value in typing.get_args(hint):
            return value
        raise ConfigError(f"{where}: {value!r} is not one of {list(typing.get_args(hint))}")
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint in (str, bool):
        if not isinstance(value, hint):
            raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported field type {hint}")


def from_dict(cls: type[T], data: dict[str, Any], source: str = "<dict>") -> T:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys and mistyped values.

    Args:
        cls: a dataclass type.
        data: mapping of field name to value (missing fields take their defaults).
        source: where ``data`` came from, used as the prefix of every error message.

    Returns:
        An instance of ``cls``.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{source}: {unknown_name('key', unknown[0], fields)}")
    kwargs = {k: _check_value(v, hints[k], f"{source}: key {k!r}") for k, v in data.items()}
    missing = [
        name
        for name, f in fields.items()
        if name not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{source}: missing key {missing[0]!r}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{source}: {err}") from err


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping."""


def _no_duplicates(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False):
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ConfigError(
                f"line {key_node.start_mark.line + 1}: duplicate key {key!r} "
                f"(first given on line {seen[key]})"
            )
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def load_yaml(text: str, source: str = "<yaml>") -> Any:
    """Parse YAML safely, refusing duplicate keys (PyYAML keeps the last one silently).

    Raises:
        ConfigError: naming ``source``, for invalid YAML or a duplicate key.
    """
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: not valid YAML: {err}") from err


def load_config(cls: type[T], path: str | Path, section: str | None = None) -> T:
    """Load dataclass ``cls`` from a YAML file (optionally one top-level ``section`` of it)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    data = load_yaml(path.read_text(), str(path)) or {}
    if section is not None:
        if not isinstance(data, dict) or section not in data:
            raise ConfigError(f"{path}: missing section {section!r}")
        data = data[section]
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return from_dict(cls, data, str(path))
