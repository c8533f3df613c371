"""Plain-dataclass configs: load from YAML, override with `section.key=value`, list every key.

Generic over any tree of dataclasses, so each module keeps its own config class (ModelConfig next
to the model, MaskingConfig next to the masking) and `recsys_jax.config` only assembles them.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    pass


def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _strip_optional(tp):
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _coerce(value: Any, tp, where: str):
    tp, optional = _strip_optional(tp)
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null")):
        if optional or value is None:
            return None
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    origin = typing.get_origin(tp)
    if tp in (int, float) and isinstance(value, bool):
        # int(True) == 1: `train.steps=true` would silently train one step.
        raise ConfigError(f"{where}: expected a number, got {value!r}; write a number")
    try:
        if tp is bool:
            if isinstance(value, str):
                if value.lower() in ("true", "1", "yes", "on"):
                    return True
                if value.lower() in ("false", "0", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if tp in (int, float, str):
            if tp is int and isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return tp(value)
        if origin in (tuple, list):
            if isinstance(value, str):
                value = yaml.safe_load(value) if value.strip().startswith("[") else value.split(",")
            args = typing.get_args(tp)
            elem = args[0] if args else Any
            items = [v if elem is Any else _coerce(v, elem, where) for v in value]
            return tuple(items) if origin is tuple else items
        if origin is dict:
            if isinstance(value, str):
                value = yaml.safe_load(value)
            if not isinstance(value, dict):
                raise ValueError(value)
            return dict(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{where}: cannot read {value!r} as {getattr(tp, '__name__', tp)}"
        ) from None
    return value


def from_dict(cls, data: dict, where: str = "config"):
    types_ = _field_types(cls)
    unknown = set(data) - set(types_)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(types_)}")
    kwargs = {k: _coerce(v, types_[k], f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def to_dict(cfg) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def apply_override(data: dict, cls, assignment: str) -> dict:
    """`train.steps=100` -> nested dict update, checked against the dataclass tree."""
    if "=" not in assignment:
        raise ConfigError(f"override {assignment!r} must look like section.key=value")
    dotted, raw = assignment.split("=", 1)
    keys = dotted.strip().split(".")
    node_cls = cls
    for k in keys:
        if not dataclasses.is_dataclass(node_cls):
            raise ConfigError(f"override {dotted!r}: {k!r} is not a config section")
        types_ = _field_types(node_cls)
        if k not in types_:
            raise ConfigError(f"unknown config key {dotted!r}; run with --help to list keys")
        node_cls = _strip_optional(types_[k])[0]
    value = yaml.safe_load(raw) if raw.strip() else ""
    nested: Any = value
    for k in reversed(keys):
        nested = {k: nested}
    merged = _merge(data, nested)
    if isinstance(value, dict):  # `key={...}` replaces a dict option whole; YAML `base:` merges
        leaf = merged
        for k in keys[:-1]:
            leaf = leaf[k]
        leaf[keys[-1]] = value
    return merged


def load(cls, path: str | Path | None = None, overrides: Sequence[str] = ()):
    """Defaults <- YAML file (which may `base: other.yaml`) <- key=value overrides."""
    data: dict = {}
    if path is not None:
        data = _read_yaml(Path(path))
    for assignment in overrides:
        data = apply_override(data, cls, assignment)
    cfg = from_dict(cls, data)
    validate = getattr(cfg, "validate", None)
    if validate:
        validate()
    return cfg


def _read_yaml(path: Path) -> dict:
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML ({e})") from None
    base = data.pop("base", None)
    if base:
        data = _merge(_read_yaml(path.parent / base), data)
    return data


def iter_keys(cls, prefix: str = "") -> Iterator[tuple[str, str, Any]]:
    """(dotted key, type name, default) for every leaf of the config tree."""
    for f in dataclasses.fields(cls):
        tp = _strip_optional(_field_types(cls)[f.name])[0]
        key = prefix + f.name
        if dataclasses.is_dataclass(tp):
            yield from iter_keys(tp, key + ".")
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            default = "(required)"
        yield key, getattr(tp, "__name__", str(tp)), default


def help_text(cls) -> str:
    rows = list(iter_keys(cls))
    width = max(len(k) for k, _, _ in rows)
    return "\n".join(f"  {k:<{width}}  {t:<6} default: {d!r}" for k, t, d in rows)
