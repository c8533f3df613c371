"""Plain-dataclass configs: load from YAML, override with `section.key=value`, list every key.

Generic over any tree of dataclasses, so each module keeps its own config class (ModelConfig next
to the model, MaskingConfig next to the masking) and `recsys_jax.config` only assembles them.
"""

from __future__ import annotations

import dataclasses
import json
import reprlib
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
            raise _not_a_section(where, value)
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
    except (TypeError, ValueError, yaml.YAMLError):
        raise ConfigError(
            f"{where}: cannot read {value!r} as {getattr(tp, '__name__', tp)}"
        ) from None
    return value


def _not_a_section(where: str, value) -> ConfigError:
    return ConfigError(f"{where}: expected a mapping of its keys (a config section), got {value!r}")


def from_dict(cls, data: dict, where: str = "config"):
    types_ = _field_types(cls)
    unknown = set(data) - set(types_)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(types_)}")
    kwargs = {k: _coerce(v, types_[k], f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except ValueError as e:  # a section's own checks (__post_init__)
        raise ConfigError(f"{where}: {e}") from None


def to_dict(cfg) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


def _merge(base: dict, extra: dict, where: str = "config") -> dict:
    out = dict(base)
    for k, v in extra.items():
        old = out.get(k)
        if isinstance(v, dict) and old is not None and not isinstance(old, dict):
            # `train: 5` then `train.steps=3`: replacing the 5 would hide the mistake.
            raise _not_a_section(f"{where}.{k}", old)
        out[k] = (
            _merge(old, v, f"{where}.{k}") if isinstance(old, dict) and isinstance(v, dict) else v
        )
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
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {assignment!r}: cannot read the value ({e})") from None
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


def load(
    cls,
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    builtin: dict | None = None,
):
    """Defaults <- YAML file (which may `base: other.yaml`) <- key=value overrides.

    `builtin`: section values that stand in for the file when there is none, so an override of
    one key keeps the rest of a built-in section (sections left out of a YAML file take their
    class defaults instead)."""
    data: dict = dict(builtin or {}) if path is None else {}
    if path is not None:
        data = _read_yaml(Path(path))
    for assignment in overrides:
        data = apply_override(data, cls, assignment)
    cfg = from_dict(cls, data)
    validate = getattr(cfg, "validate", None)
    if validate:
        validate()
    return cfg


def _read_yaml(path: Path, chain: tuple[Path, ...] = ()) -> dict:
    """One YAML file merged over its `base:` files; `chain`: the files that named this one."""
    if path.resolve() in [p.resolve() for p in chain]:
        cycle = " -> ".join(str(p) for p in (*chain, path))
        raise ConfigError(f"{path}: the base: chain loops ({cycle}); remove one of the bases")
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder; give a YAML config file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file; give a YAML config file") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML ({e})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: expected a mapping of config sections (model:, data:, train:, ...) at "
            f"the top level, got {reprlib.repr(data)}"
        )
    base = data.pop("base", None)
    if base:
        if not isinstance(base, str):
            raise ConfigError(f"{path}: base: must name one YAML file, got {base!r}")
        data = _merge(_read_yaml(path.parent / base, (*chain, path)), data)
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
