"""One typed configuration tree: dataclasses <- YAML / JSON <- ``a.b=c`` overrides.

Every config class is a plain dataclass whose ``__post_init__`` validates its own fields.
This module turns nested dictionaries (from YAML, JSON or the command line) into those
dataclasses with type checks and messages that name the offending key, and back.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from smoltolk.errors import ConfigError, SmolTolkError
from smoltolk.files import read_text

T = TypeVar("T")


def check_ranges(obj: Any, prefix: str, **ranges: tuple[float | None, float | None]) -> None:
    """Raise a ConfigError naming ``prefix.field`` when a numeric field is outside its ``(low, high)``
    (inclusive; None = unbounded; a None value is allowed, meaning "not set")."""
    for name, (lo, hi) in ranges.items():
        value = getattr(obj, name)
        if value is None:
            continue
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            want = (f">= {lo}" if hi is None else f"<= {hi}" if lo is None else f"in [{lo}, {hi}]")
            raise ConfigError(f"{prefix}.{name} must be {want}, got {value}")


def to_dict(cfg: Any) -> dict[str, Any]:
    """A dataclass tree as plain nested dicts (JSON/YAML serialisable)."""
    return dataclasses.asdict(cfg)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check (and gently coerce: int -> float, list -> tuple) ``value`` against annotation ``tp``."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{where}: expected one of {list(allowed)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "5e5" as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    return value


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Build dataclass ``cls`` from a nested dict; unknown keys and wrong types are errors."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    upgrade = getattr(cls, "upgrade", None)  # a class may read the keys of its earlier releases
    if callable(upgrade):
        data = upgrade(data)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {unknown}; {cls.__name__} takes {sorted(fields)}"
        )
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:  # a required field is missing
        raise ConfigError(f"{where}: {e}") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"a.b=c"`` -> (["a", "b"], value), the value parsed as YAML (so 3 -> int, true -> bool)."""
    import yaml

    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected the form key.subkey=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=c`` overrides to a nested dict (a copy is returned)."""
    out = json.loads(json.dumps(data))
    for text in overrides:
        keys, value = parse_override(text)
        node = out
        for k in keys[:-1]:
            if not isinstance(node.get(k, {}), dict):
                raise ConfigError(f"override {text!r}: {k!r} is not a section")
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    return out


def read_mapping(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON file holding one mapping; errors name the file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        text = read_text(path)
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except SmolTolkError as e:  # not UTF-8
        raise ConfigError(str(e)) from None
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        detail = str(e).replace('"<unicode string>"', str(path)).replace("<unicode string>", str(path))
        raise ConfigError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {detail}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``, recursively for mappings (lists and scalars are replaced whole)."""
    out = dict(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_recipe(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A YAML/JSON mapping; a top-level ``base: other.yaml`` (relative to this file) is read first
    and this file's keys are merged over it."""
    path = Path(path).resolve()
    if path in _seen:
        raise ConfigError(f"{path}: 'base' chain loops back to itself")
    data = read_mapping(path)
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{path}: 'base' must be a file name, got {base!r}")
    return _merge(read_recipe(path.parent / base, (*_seen, path)), data)


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None,
                settings: dict[str, Any] | None = None, where: str = "config") -> T:
    """The one way every config is built: a file (optional; YAML or JSON, with ``base:`` inheritance)
    <- ``a.b=c`` overrides <- ``settings`` given directly (dotted keys; None values are skipped, so a
    command-line flag left unset changes nothing) -> validated ``cls``. Errors name the file or override."""
    data = read_recipe(path) if path is not None else {}
    data = apply_overrides(data, overrides or [])
    for key, value in (settings or {}).items():
        if value is None:
            continue
        node = data
        *parents, last = key.split(".")
        for k in parents:
            node = node.setdefault(k, {})
        node[last] = value
    try:
        return from_dict(cls, data, where=str(path) if path is not None else where)
    except ConfigError as e:
        if path is None or not overrides:
            raise
        raise ConfigError(f"{path} (with overrides {overrides}): {e}") from None
