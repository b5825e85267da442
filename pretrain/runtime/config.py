"""Typed configs: dataclasses that print as YAML, load back from YAML, and take `a.b=value` overrides.

Every component owns a small dataclass; a recipe nests them. Unknown keys and values of the wrong type
are `ConfigError`s naming the key and what was expected, so a typo never silently trains the wrong thing.
A config with a `kind` field may name, in a `KIND_PATHS` class variable, the path fields each kind reads; a path
the file or overrides set that the chosen kind does not read is a `ConfigError` too (`check_kind_paths`).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from pretrain.runtime.errors import ConfigError

T = TypeVar("T")


YAML_TRUE, YAML_FALSE = ("on", "yes", "true", "y"), ("off", "no", "false", "n")


def to_dict(cfg: Any) -> dict[str, Any]:
    """A nested plain dict of a dataclass config (tuples become lists so YAML stays readable)."""
    return {f.name: _plain(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}


def _plain(value: Any) -> Any:
    """Dataclasses as dicts, tuples as lists, inside lists too (e.g. `run.evals` entries)."""
    if dataclasses.is_dataclass(value):
        return to_dict(value)
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


def to_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=False)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`, converting YAML forms (list -> tuple, int -> float)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"config key '{key}': expected {_type_name(tp)}, got {value!r}")
    if origin is typing.Literal:
        if isinstance(value, bool) and value not in args:  # YAML 1.1 reads a bare off/on/no/yes as a boolean
            value = next((w for w in (YAML_TRUE if value else YAML_FALSE) if w in args), value)
        if value not in args:
            raise ConfigError(f"config key '{key}': expected one of {list(args)}, got {value!r}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}': expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"config key '{key}': expected {len(args)} values, got {value!r}")
            return tuple(_coerce(v, a, key) for v, a in zip(value, args))
        inner = args[0] if args else Any
        items = [_coerce(v, inner, key) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping, got {value!r}")
        return dict(value)
    if tp in (float, int) and isinstance(value, str):
        value = _number_from_string(value, key, tp)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}': expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise ConfigError(f"config key '{key}': expected an integer, got {value!r}")
        return int(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}': expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"config key '{key}': expected a string, got {value!r}")
        return str(value)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping of {tp.__name__} fields, got {value!r}")
        return from_dict(tp, value, prefix=f"{key}.")
    return value


def _number_from_string(value: str, key: str, tp: type) -> float | int:
    """YAML 1.1 reads `5e-4` as a string; accept such numbers for numeric fields."""
    try:
        return float(value)
    except ValueError:
        raise ConfigError(
            f"config key '{key}': expected {'an integer' if tp is int else 'a number'}, got {value!r}"
        ) from None


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass `cls` from a nested dict; unknown keys and wrong types are one-line `ConfigError`s."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown config key '{prefix}{unknown[0]}' (known keys: {', '.join(sorted(names))})")
    kwargs = {name: _coerce(value, hints[name], prefix + name) for name, value in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config {prefix.rstrip('.') or cls.__name__}: {exc}") from None


def merge(cfg: T, data: dict[str, Any]) -> T:
    """`cfg` with the (possibly partial, nested) values of `data` laid over it."""
    base = to_dict(cfg)

    def lay(dst: dict[str, Any], src: dict[str, Any], prefix: str, cls: type) -> None:
        hints = typing.get_type_hints(cls)
        for key, value in src.items():
            if key not in dst:
                raise ConfigError(f"unknown config key '{prefix}{key}' (known keys: {', '.join(sorted(dst))})")
            sub = hints.get(key)
            if dataclasses.is_dataclass(sub) and isinstance(dst[key], dict) and isinstance(value, dict):
                lay(dst[key], value, f"{prefix}{key}.", sub)  # type: ignore[arg-type]
            else:  # a plain value, list or free-form mapping (e.g. optim.lr_scales) is replaced whole
                dst[key] = value

    lay(base, data, "", type(cfg))
    return from_dict(type(cfg), base)


def parse_override(item: str) -> dict[str, Any]:
    """`a.b=1e-3` -> {'a': {'b': 0.001}}; values are parsed as YAML scalars/lists."""
    if "=" not in item:
        raise ConfigError(f"override '{item}' is not of the form key=value")
    key, raw = item.split("=", 1)
    if not key:
        raise ConfigError(f"override '{item}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    out: dict[str, Any] = {}
    node = out
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def check_kind_paths(cfg: Any, base: Any, prefix: str = "") -> None:
    """Refuse a path field that differs from `base` (the recipe) but is not read by the config's `kind`.

    `KIND_PATHS` maps a field to the kinds that read it: `data.karpathy=FILE` on a recipe with `data.kind:
    synthetic` would otherwise train on synthetic data and exit 0. Setting the kind with the path keeps working.
    """
    if not (dataclasses.is_dataclass(cfg) and dataclasses.is_dataclass(base) and type(cfg) is type(base)):
        return
    for f in dataclasses.fields(cfg):
        check_kind_paths(getattr(cfg, f.name), getattr(base, f.name), f"{prefix}{f.name}.")
    kind = getattr(cfg, "kind", None)
    for name, kinds in getattr(type(cfg), "KIND_PATHS", {}).items():
        value = getattr(cfg, name)
        if value != getattr(base, name) and kind not in kinds:
            wanted = " or ".join(f"{prefix}kind={k}" for k in kinds)
            raise ConfigError(
                f"{prefix}{name}: set to {value!r}, but {prefix}kind {kind!r} does not read it (expected {wanted})"
            )


def resolve(base: T, config_file: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """A recipe with an optional YAML file and then `key=value` overrides applied, in that order."""
    cfg = base
    if config_file is not None:
        cfg = merge(cfg, load_yaml(config_file))
    for item in overrides or []:
        cfg = merge(cfg, parse_override(item))
    check_kind_paths(cfg, base)
    return cfg
