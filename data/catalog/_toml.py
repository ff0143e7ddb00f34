"""The catalog's TOML reader: one parsed file with typed, checked accessors.

Owns reading a catalog file and every check of a single value's type, range or membership; each
error is a ``ConfigError`` naming the file, the key and the reason. Nothing is defaulted
silently: a missing key is an error unless the caller names its default. It knows no catalog
concepts (products, policy) and never touches the database.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from data.errors import ConfigError


class _File:
    """One parsed TOML file; every accessor raises ConfigError naming this file and the key."""

    def __init__(self, path: Path):
        self.path = path
        if not path.is_file():
            raise ConfigError(f"{path}: catalog file is missing (VEIL_CATALOG_DIR={path.parent})")
        self.raw = path.read_bytes()
        try:
            self.doc = tomllib.loads(self.raw.decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc

    def fail(self, key: str, reason: str) -> ConfigError:
        return ConfigError(f"{self.path}: key {key!r}: {reason}")

    def get(self, table: dict, key: str, where: str, kind: type | tuple[type, ...],
            default: Any = ...) -> Any:
        name = f"{where}.{key}" if where else key
        if key not in table:
            if default is ...:
                raise self.fail(name, "is required but missing")
            return default
        value = table[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and kind is not bool and bool not in _as_tuple(kind):
            raise self.fail(name, f"must be {_kind_name(kind)}, got {value!r}")
        if not isinstance(value, kind):
            raise self.fail(name, f"must be {_kind_name(kind)}, got {value!r}")
        return value

    def one_of(self, table: dict, key: str, where: str, allowed, default: Any = ...) -> str:
        value = self.get(table, key, where, str, default)
        if value not in allowed:
            raise self.fail(f"{where}.{key}", f"must be one of {sorted(allowed)}, got {value!r}")
        return value

    def str_list(self, table: dict, key: str, where: str, default: Any = ...) -> tuple[str, ...]:
        values = self.get(table, key, where, list, default)
        for item in values:
            if not isinstance(item, str):
                raise self.fail(f"{where}.{key}", f"must be a list of strings, got {item!r}")
        return tuple(values)

    def positive(self, table: dict, key: str, where: str, kind: type, minimum, default: Any = ...):
        value = self.get(table, key, where, kind, default)
        if value < minimum:
            raise self.fail(f"{where}.{key}", f"must be >= {minimum}, got {value!r}")
        return value


def _as_tuple(kind) -> tuple:
    return kind if isinstance(kind, tuple) else (kind,)


def _kind_name(kind) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
             list: "a list", dict: "a table"}
    return " or ".join(names.get(k, k.__name__) for k in _as_tuple(kind))


def _unique(f: _File, values: list[str], key: str) -> None:
    seen = set()
    for value in values:
        if value in seen:
            raise f.fail(key, f"duplicate value {value!r}")
        seen.add(value)
