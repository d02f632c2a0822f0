"""Typed configs: dataclass defaults -> YAML file -> `key=value` command-line overrides.

Each stage declares one dataclass schema (nested dataclasses for sections). OmegaConf does the
merging and type checking; this module only turns its errors into messages that name the key,
the file it came from and the closest valid spelling. A schema's `RENAMED: ClassVar[dict]` maps old
key names to new ones, so an old name is refused with the new one in the message.

    cfg = load_config(Rig2ImgConfig, sys.argv[1:], default="configs/configs_rig2img.yaml")

`argv` is `[config.yaml] [key=value ...]`; nested keys use dots (`model.depth=4`).
"""
from __future__ import annotations

import dataclasses
import difflib
import sys
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

T = TypeVar("T")


class ConfigError(ValueError):
    """A config that cannot be loaded; the message says which key and what to do."""


def _schema_keys(schema: type, prefix: str = "") -> tuple[list[str], list[str]]:
    """(every valid dotted key, the keys of free-form dict fields whose sub-keys are not checked)."""
    hints = typing.get_type_hints(schema)
    keys, free = [], []
    for f in dataclasses.fields(schema):
        t = hints[f.name]
        keys.append(prefix + f.name)
        if dataclasses.is_dataclass(t):
            k, fr = _schema_keys(t, prefix + f.name + ".")
            keys += k
            free += fr
        elif typing.get_origin(t) is dict or t is dict:
            free.append(prefix + f.name)
    return keys, free


def _nested_keys(d: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in d.items():
        out.append(prefix + str(k))
        if isinstance(v, dict):
            out += _nested_keys(v, prefix + str(k) + ".")
    return out


def renamed_keys(schema: type, prefix: str = "") -> dict[str, str]:
    """Old dotted key -> new name (optionally followed by ' (a note)'), from each (nested) schema's
    `RENAMED` class attribute."""
    out = {prefix + old: prefix + new for old, new in getattr(schema, "RENAMED", {}).items()}
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        if dataclasses.is_dataclass(hints[f.name]):
            out.update(renamed_keys(hints[f.name], prefix + f.name + "."))
    return out


def _check_known(schema: type, keys: Sequence[str], source: str) -> None:
    """Raise for the first key that the schema lacks: a renamed key with its new name, any other with
    the closest valid spelling."""
    valid, free = _schema_keys(schema)
    renamed = renamed_keys(schema)
    for key in keys:
        if key in valid or any(key.startswith(f + ".") for f in free):
            continue
        if key in renamed:
            new, _, note = renamed[key].partition(" (")
            raise ConfigError(f"{source}: config key '{key}' is now called '{new}'; rename it"
                              + (f" ({note}" if note else ""))
        close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        top = ", ".join(k for k in valid if "." not in k)
        raise ConfigError(f"{source}: unknown config key '{key}'.{hint} Valid keys: {top}")


def _merge(base: DictConfig, other: DictConfig, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, other)
    except (ValidationError, ConfigKeyError, ConfigAttributeError) as e:
        key = getattr(e, "full_key", None) or "?"
        raise ConfigError(f"{source}: bad value for config key '{key}': {e.msg if hasattr(e, 'msg') else e}") from None


def read_yaml_mapping(path: str | Path, error: type[Exception] = ConfigError) -> dict:
    """A YAML file whose top level is a mapping; anything else raises `error` naming the file."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as e:
        raise error(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise error(f"{path}: top level must be a mapping of keys")
    return data


def parse_overrides(args: Sequence[str]) -> dict[str, Any]:
    """`['a.b=3', 'name=x']` -> nested dict, values parsed as YAML scalars/lists."""
    out: dict[str, Any] = {}
    for arg in args:
        if "=" not in arg:
            raise ConfigError(f"command-line override '{arg}' is not of the form key=value")
        key, raw = arg.split("=", 1)
        value = yaml.safe_load(raw) if raw != "" else ""
        node = out
        *parents, leaf = key.strip().split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def load_config(schema: type[T], argv: Sequence[str] = (), default: str | None = None) -> T:
    """Build a `schema` instance from defaults, an optional YAML file and `key=value` overrides.

    Args:
        schema: the stage's config dataclass.
        argv: `[path.yaml] [key=value ...]`; the YAML path may be omitted when `default` is given.
        default: YAML file used when `argv` names none (None: dataclass defaults only).
    Raises:
        ConfigError: unknown key, wrong type, unreadable file, or failed validation.
    """
    argv = list(argv)
    path = argv.pop(0) if argv and "=" not in argv[0] else default
    cfg = OmegaConf.structured(schema)
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file '{path}' does not exist; pass a YAML file from configs/")
        data = read_yaml_mapping(p)
        _check_known(schema, _nested_keys(data), str(path))
        cfg = _merge(cfg, OmegaConf.create(data), str(path))
    overrides = parse_overrides(argv)
    _check_known(schema, _nested_keys(overrides), "command line")
    cfg = _merge(cfg, OmegaConf.create(overrides), "command line")
    try:
        obj = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as e:
        raise ConfigError(f"config: {e}") from None
    except (ValueError, TypeError) as e:  # raised by a schema's __post_init__ validation
        raise ConfigError(f"config: {e}") from None
    return obj  # type: ignore[return-value]


def to_dict(cfg: Any) -> dict:
    """Plain nested dict of a config dataclass (for checkpoints and YAML)."""
    return dataclasses.asdict(cfg)


def save_config(cfg: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def cli(schema: type[T], default: str | None = None, argv: Sequence[str] | None = None) -> T:
    """`load_config` for entry scripts: a bad config prints one line and exits with status 2."""
    try:
        return load_config(schema, sys.argv[1:] if argv is None else argv, default)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> None:
    """For `__post_init__`: raise a ValueError naming the key when `value` is not allowed."""
    if value not in choices:
        close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ValueError(f"'{name}' must be one of {list(choices)}, got '{value}'.{hint}")
