"""Validated experiment configurations, loaded from YAML or TOML files.

A configuration is a (possibly nested) dataclass whose fields carry their types and
defaults. :func:`from_dict` rejects unknown keys and values of the wrong type or
range with one clear message naming the key, e.g. ``speciation.n_pairs: must be an
integer >= 1, got 'ten'``.

What a file may ask for is bounded before anything is built from it: the file's
size (:data:`MAX_FILE_BYTES`), the number of values and the nesting depth after
YAML anchors are expanded (:data:`MAX_VALUES`, :data:`MAX_DEPTH`; a "billion
laughs" file is refused while it is being counted), every integer (:data:`INT_MAX`,
seeds :data:`SEED_MAX`: a field named ``seed`` or ``*_seed`` without its own
``max``), and values are shown in messages through :func:`show`, which never
formats more than a few dozen characters.
"""

from __future__ import annotations

import dataclasses
import reprlib
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


#: Largest config file read (bytes); real ones are a few hundred bytes.
MAX_FILE_BYTES = 1 << 20
#: Most values (scalars, lists and mappings, anchors expanded) a config may hold.
MAX_VALUES = 100_000
#: Deepest nesting of lists and mappings a config may hold.
MAX_DEPTH = 32
#: Largest integer any config value may hold (int64, what numpy and torch take).
INT_MAX = 2**63 - 1
#: Largest seed: what numpy's legacy seeding, torch and scikit-learn all accept.
SEED_MAX = 2**32 - 1
#: Largest dimension an experiment config may ask for (a d x d float64 matrix is
#: 128 MiB at 4096 and every step is O(d^3)).
DIM_MAX = 4096
#: Largest count (samples, trajectories, pairs, steps) an experiment config may ask for.
COUNT_MAX = 10**7

_SHOW = reprlib.Repr()
_SHOW.maxlevel, _SHOW.maxstring, _SHOW.maxother = 2, 40, 40
_SHOW.maxlist = _SHOW.maxtuple = _SHOW.maxdict = _SHOW.maxset = 4
_SHOW.maxlong = 40


def show(value) -> str:
    """A short text for ``value`` in a message: at most about 60 characters, however
    large or deeply nested ``value`` is (never the full repr of a user's value)."""
    try:
        text = _SHOW.repr(value)
    except Exception:  # noqa: BLE001 - e.g. an int beyond the str conversion limit
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 80 else text[:77] + "..."


def check_size(
    data, where: str, *, max_values: int = MAX_VALUES, max_depth: int = MAX_DEPTH
) -> None:
    """ConfigError unless ``data`` (lists and mappings, shared references counted
    each time they occur, as YAML anchors expand) holds at most ``max_values``
    values nested at most ``max_depth`` deep. Stops counting at the first excess,
    so a "billion laughs" costs a bounded amount of work."""
    budget = [max_values]
    stack = [(data, 0)]
    while stack:
        obj, depth = stack.pop()
        budget[0] -= 1
        if budget[0] < 0:
            raise ConfigError(
                f"{where}: more than {max_values} values (anchors and aliases "
                "expanded); a configuration holds a few dozen"
            )
        if isinstance(obj, (dict, list, tuple)):
            if depth >= max_depth:
                raise ConfigError(f"{where}: nested more than {max_depth} levels deep")
            items = obj.items() if isinstance(obj, dict) else enumerate(obj)
            for k, v in items:
                stack.append((v, depth + 1))
                if isinstance(obj, dict):
                    stack.append((k, depth + 1))


def load_file(path) -> dict:
    """Read a YAML (.yaml, .yml) or TOML (.toml) file into a dict, bounded in size
    (:func:`check_size`)."""
    path = Path(path)
    where = f"config file {show(str(path))}"
    if not path.is_file():
        raise ConfigError(f"{where} does not exist")
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".yaml", ".yml"):
        raise ConfigError(f"{where}: use a .yaml, .yml or .toml file")
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ConfigError(
                f"{where}: larger than {MAX_FILE_BYTES >> 20} MiB; a "
                "configuration is a few hundred bytes"
            )
        text = path.read_text()
        data = tomllib.loads(text) if suffix == ".toml" else yaml.safe_load(text)
    except (
        OSError,
        UnicodeDecodeError,
        yaml.YAMLError,
        tomllib.TOMLDecodeError,
        ValueError,
        RecursionError,
    ) as exc:
        if isinstance(exc, ConfigError):
            raise
        msg = str(exc).strip()
        first = msg.splitlines()[0][:200] if msg else type(exc).__name__
        if isinstance(exc, RecursionError):
            first = "nested too deeply"
        raise ConfigError(f"{where} could not be parsed: {first}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must hold a mapping of keys to values")
    check_size(data, where)
    return data


def _check_value(key: str, value, tp, meta):
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: must be a mapping, got {show(value)}")
        return from_dict(tp, value, prefix=key + ".")
    if origin in (list, tuple):
        (inner, *_) = typing.get_args(tp) or (float,)
        if not isinstance(value, (list, tuple)) or len(value) == 0:
            raise ConfigError(f"{key}: must be a non-empty list, got {show(value)}")
        most = meta.get("max_len", 10_000)
        if len(value) > most:
            raise ConfigError(f"{key}: must hold at most {most} values, got {len(value)}")
        return [_check_value(f"{key}[{i}]", v, inner, meta) for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: must be true or false, got {show(value)}")
        return value
    hi = meta.get("max")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: must be an integer, got {show(value)}")
        if hi is None:
            name = key.rsplit(".", 1)[-1].split("[")[0]
            hi = SEED_MAX if (name == "seed" or name.endswith("_seed")) else INT_MAX
        if value < -INT_MAX:
            raise ConfigError(f"{key}: must be >= {-INT_MAX}, got {show(value)}")
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: must be a number, got {show(value)}")
        try:
            value = float(value)
        except OverflowError:
            value = float("inf")
        if value != value or value in (float("inf"), float("-inf")):
            raise ConfigError(f"{key}: must be finite, got {show(value)}")
    elif tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: must be a string, got {show(value)}")
        choices = meta.get("choices")
        if choices and value not in choices:
            raise ConfigError(f"{key}: must be one of {', '.join(choices)}, got {show(value)}")
        return value
    lo = meta.get("min")
    if lo is not None and value < lo:
        raise ConfigError(f"{key}: must be >= {lo}, got {show(value)}")
    if hi is not None and value > hi:
        raise ConfigError(f"{key}: must be <= {hi}, got {show(value)}")
    return value


def from_dict(cls, data: dict, *, prefix: str = ""):
    """Build dataclass ``cls`` from ``data`` over its defaults, validating every key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: must be a mapping, got {show(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(
        (show(k) if not isinstance(k, str) else show(k)[1:-1]) for k in data if k not in fields
    )
    if unknown:
        raise ConfigError(
            f"unknown key {prefix}{unknown[0]} (valid keys: "
            f"{', '.join(prefix + k for k in fields)})"
        )
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
        return dataclasses.field(
            default_factory=lambda: dataclasses.replace(default), metadata=meta
        )
    return dataclasses.field(default=default, metadata=meta)


def check_field(cls, name: str, value, *, key: str | None = None):
    """Validate one value for field ``name`` of config dataclass ``cls`` and return it
    converted (ints to floats where a float is expected; a nested config as its
    complete mapping, defaults filled in): its type, range and choices,
    but not the cross-field checks of ``validate``. ``key`` names the value in error
    messages (default ``name``), e.g. ``grid.gamma[2]``."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if name not in fields:
        raise ConfigError(f"unknown key {key or show(name)} (valid keys: {', '.join(fields)})")
    hints = typing.get_type_hints(cls)
    out = _check_value(key or name, value, hints[name], fields[name].metadata)
    # a nested config comes back as its plain mapping, as a file or a sweep cell holds it
    return to_dict(out) if dataclasses.is_dataclass(out) else out


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


def physical_memory() -> int | None:
    """Bytes of physical memory of this machine, or None when unknown."""
    import os

    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return None


def check_memory(key: str, n_bytes: float, what: str) -> None:
    """ConfigError naming ``key`` when a setting asks for more memory (``n_bytes``,
    an estimate of the largest allocation: ``what``) than this machine has, checked
    before anything is allocated."""
    total = physical_memory()
    if total is not None and n_bytes > total:
        raise ConfigError(
            f"{key}: needs about {n_bytes / 2**30:.3g} GiB for {what}, more than "
            f"this machine's {total / 2**30:.3g} GiB of memory"
        )


def check_device(prefix: str, device: str) -> None:
    """ConfigError unless ``device`` names a torch device that is available here."""
    import torch

    try:
        torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"{prefix}device: {exc}") from None
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"{prefix}device: {show(device)} asked for, but CUDA is not available")
