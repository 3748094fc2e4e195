"""Validated experiment configurations, loaded from YAML or TOML files.

A configuration is a (possibly nested) dataclass whose fields carry their types and
defaults. :func:`from_dict` rejects unknown keys and values of the wrong type or
range with one clear message naming the key, e.g. ``speciation.n_pairs: must be an
integer >= 1, got 'ten'``.
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from pathlib import Path

import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class ConfigError(ValueError):
    """A configuration file or value that cannot be used."""


def load_file(path) -> dict:
    """Read a YAML (.yaml, .yml) or TOML (.toml) file into a dict."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        text = path.read_text()
        if path.suffix.lower() == ".toml":
            data = tomllib.loads(text)
        elif path.suffix.lower() in (".yaml", ".yml"):
            data = yaml.safe_load(text)
        else:
            raise ConfigError(f"config file {str(path)!r}: use a .yaml, .yml or .toml file")
    except (OSError, UnicodeDecodeError, yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"config file {str(path)!r} could not be parsed: {first}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of keys to values")
    return data


def _check_value(key: str, value, tp, meta):
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: must be a mapping, got {value!r}")
        return from_dict(tp, value, prefix=key + ".")
    if origin in (list, tuple):
        (inner, *_) = typing.get_args(tp) or (float,)
        if not isinstance(value, (list, tuple)) or len(value) == 0:
            raise ConfigError(f"{key}: must be a non-empty list, got {value!r}")
        return [_check_value(f"{key}[{i}]", v, inner, meta) for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: must be an integer, got {value!r}")
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: must be a number, got {value!r}")
        value = float(value)
        if value != value or value in (float("inf"), float("-inf")):
            raise ConfigError(f"{key}: must be finite, got {value!r}")
    elif tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: must be a string, got {value!r}")
        choices = meta.get("choices")
        if choices and value not in choices:
            raise ConfigError(f"{key}: must be one of {', '.join(choices)}, got {value!r}")
        return value
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and value < lo:
        raise ConfigError(f"{key}: must be >= {lo}, got {value!r}")
    if hi is not None and value > hi:
        raise ConfigError(f"{key}: must be <= {hi}, got {value!r}")
    return value


def from_dict(cls, data: dict, *, prefix: str = ""):
    """Build dataclass ``cls`` from ``data`` over its defaults, validating every key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: must be a mapping")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key {prefix}{unknown[0]} (valid keys: "
                          f"{', '.join(prefix + k for k in fields)})")
    base = cls()
    values = {}
    for name, f in fields.items():
        if name in data:
            values[name] = _check_value(prefix + name, data[name], hints[name], f.metadata)
        else:
            values[name] = getattr(base, name)
    obj = cls(**values)
    check = getattr(obj, "validate", None)
    if check is not None:
        check(prefix)
    return obj


def to_dict(cfg) -> dict:
    """Plain nested dict of a config dataclass."""
    return dataclasses.asdict(cfg)


def field(default, **meta):
    """A dataclass field with validation metadata (``min``, ``max``, ``choices``, ``help``)."""
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    if dataclasses.is_dataclass(default):
        return dataclasses.field(default_factory=lambda: dataclasses.replace(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def check_field(cls, name: str, value, *, key: str | None = None):
    """Validate one value for field ``name`` of config dataclass ``cls`` and return it
    converted (ints to floats where a float is expected): its type, range and choices,
    but not the cross-field checks of ``validate``. ``key`` names the value in error
    messages (default ``name``), e.g. ``grid.gamma[2]``."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if name not in fields:
        raise ConfigError(f"unknown key {key or name} (valid keys: {', '.join(fields)})")
    hints = typing.get_type_hints(cls)
    return _check_value(key or name, value, hints[name], fields[name].metadata)


def deep_update(base: dict, new: dict) -> dict:
    """``base`` with ``new`` merged in, nested mappings merged key by key (a config
    file overrides only the keys it names)."""
    out = dict(base)
    for key, val in new.items():
        if isinstance(val, dict) and isinstance(out.get(key), dict):
            out[key] = deep_update(out[key], val)
        else:
            out[key] = val
    return out


def build(cls, base, config_file=None, **overrides):
    """``cls`` from the defaults ``base`` (an instance), merged with a YAML/TOML file
    and then with the non-None ``overrides`` (e.g. a command line's ``--seed``),
    validated key by key."""
    data = to_dict(base)
    if config_file is not None:
        data = deep_update(data, load_file(config_file))
    data.update({k: v for k, v in overrides.items() if v is not None})
    return from_dict(cls, data)


def check_device(prefix: str, device: str) -> None:
    """ConfigError unless ``device`` names a torch device that is available here."""
    import torch

    try:
        torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"{prefix}device: {exc}") from None
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"{prefix}device: {device!r} asked for, but CUDA is not available")
