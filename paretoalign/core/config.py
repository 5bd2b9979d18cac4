"""One dataclass <-> YAML <-> flags parser for every command (as TRL's ``TrlParser``).

``--config run.yaml --lr 1e-5`` reads the YAML file, then applies the flags the user actually typed. Field
names, defaults, types and help texts all come from the dataclass, so a command never keeps a hand-written
flag list. A field's ``metadata`` may carry ``help`` and ``choices``.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from .errors import ConfigError
from .files import existing_file

T = TypeVar("T")

_KIND_NAMES = {int: "an integer", float: "a number", str: "text"}


def setting(default: Any, help: str, **metadata: Any) -> Any:
    """A config dataclass field with its ``--help`` text (and optional ``choices``, extra flag ``aliases``); list
    defaults are copied."""
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata={"help": help, **metadata})
    return dataclasses.field(default=default, metadata={"help": help, **metadata})


def field_names(cls: type) -> list[str]:
    return [item.name for item in dataclasses.fields(cls)]


def load_config(cls: type[T], path: str | Path | None = None, **overrides: Any) -> T:
    """A ``cls`` from a YAML file (optional) with ``overrides`` on top; unknown keys and wrong types raise
    ConfigError naming the key."""
    values: dict[str, Any] = {}
    if path is not None:
        values.update(read_yaml(path))
    values.update(overrides)
    return build_config(cls, values)


def build_config(cls: type[T], values: Mapping[str, Any]) -> T:
    """``cls(**values)`` with every value coerced to its field's type; ConfigError for unknown keys."""
    names = field_names(cls)
    unknown = [key for key in values if key not in names]
    if unknown:
        raise ConfigError(f"unknown setting {unknown[0]!r} for {cls.__name__}; its settings are: {', '.join(names)}")
    try:
        return cls(**{key: coerce(cls, key, value) for key, value in values.items()})
    except TypeError as exc:
        raise ConfigError(f"invalid {cls.__name__}: {exc}") from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML config file (dashes in keys become underscores)."""
    import yaml

    text = existing_file(path, "config file").read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of key: value")
    return {str(key).replace("-", "_"): value for key, value in data.items()}


def _field_type(cls: type, name: str) -> Any:
    return typing.get_type_hints(cls)[name]


def _base_type(annotation: Any) -> tuple[Any, bool]:
    """``(element type, is_list)`` with ``None`` stripped from an optional annotation."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        annotation = next(arg for arg in typing.get_args(annotation) if arg is not type(None))
    if typing.get_origin(annotation) in (list, tuple):
        return typing.get_args(annotation)[0], True
    return annotation, False


def coerce(cls: type, name: str, value: Any) -> Any:
    """``value`` converted to the field's type (and checked against its ``choices``), or ConfigError."""
    element, is_list = _base_type(_field_type(cls, name))
    if value is None:
        return None
    if is_list:
        items = value if isinstance(value, (list, tuple)) else [value]
        converted: Any = [_scalar(name, element, item) for item in items]
        if typing.get_origin(_field_type(cls, name)) is tuple:
            converted = tuple(converted)
    else:
        converted = _scalar(name, element, value)
    choices = _choices(cls, name)
    for item in converted if is_list else [converted]:
        if choices and item not in choices:
            raise ConfigError(f"{name} {item!r} is not one of {', '.join(map(str, choices))}")
    return converted


def _choices(cls: type, name: str) -> tuple[Any, ...]:
    return tuple(next(f for f in dataclasses.fields(cls) if f.name == name).metadata.get("choices", ()))


def _scalar(name: str, kind: type, value: Any) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "yes", "1", "on"):
            return True
        if str(value).lower() in ("false", "no", "0", "off"):
            return False
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    if kind is Any:
        return value
    if kind is int and isinstance(value, float) and not value.is_integer():
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be {_KIND_NAMES.get(kind, kind.__name__)}, got {value!r}") from None


def add_config_arguments(
    parser: argparse.ArgumentParser, cls: type, *, exclude: Iterable[str] = (), with_file: bool = True,
    presets: Mapping[str, Mapping[str, Any]] | None = None,
) -> None:
    """Add ``--config`` and one ``--flag`` per dataclass field (defaults and help from the dataclass, with each
    preset's value where it differs); only the flags a user types are set, so YAML values survive."""
    if with_file:
        parser.add_argument("--config", default=None, metavar="FILE", help="YAML file of settings; flags override it")
    group = parser.add_argument_group(f"{cls.__name__} settings")
    skipped = set(exclude)
    for item in dataclasses.fields(cls):
        if item.name in skipped:
            continue
        element, is_list = _base_type(_field_type(cls, item.name))
        flags = ["--" + item.name.replace("_", "-"), *item.metadata.get("aliases", ())]
        help_text = _help(item, presets or {})
        if element is bool and not is_list:
            group.add_argument(*flags, dest=item.name, action=argparse.BooleanOptionalAction,
                               default=argparse.SUPPRESS, help=help_text)
        else:
            group.add_argument(*flags, dest=item.name, nargs="+" if is_list else None, default=argparse.SUPPRESS,
                               metavar=item.name.upper(), help=help_text)


def _help(item: dataclasses.Field, presets: Mapping[str, Mapping[str, Any]]) -> str:
    """The field's help text with its default and the presets' values (argparse's %(default)s is SUPPRESS)."""
    default = item.default if item.default is not dataclasses.MISSING else (
        item.default_factory() if item.default_factory is not dataclasses.MISSING else None)
    text = item.metadata.get("help", "")
    choices = item.metadata.get("choices")
    if choices:
        text += f" ({' | '.join(map(str, choices))})"
    shown = [f"default: {default}"] + [f"{name}: {values[item.name]}" for name, values in presets.items()
                                       if item.name in values and values[item.name] != default]
    return f"{text} ({'; '.join(shown)})".replace("%", "%%")


def overrides_from_namespace(cls: type, args: argparse.Namespace) -> dict[str, Any]:
    """The fields of ``cls`` that the user set on the command line."""
    names = set(field_names(cls))
    return {key: value for key, value in vars(args).items() if key in names}


def config_from_namespace(cls: type[T], args: argparse.Namespace, **defaults: Any) -> T:
    """The config from ``defaults``, then ``--config`` YAML, then every flag present in ``args``."""
    values = dict(defaults)
    path = getattr(args, "config", None)
    if path is not None:
        values.update(read_yaml(path))
    values.update(overrides_from_namespace(cls, args))
    return build_config(cls, values)


def parse_config(cls: type[T], argv: Sequence[str] | None = None, prog: str | None = None) -> T:
    """Parse ``argv`` (``--config run.yaml --lr 1e-5``) into a ``cls``; argparse errors exit as usual."""
    parser = argparse.ArgumentParser(prog=prog, description=cls.__doc__)
    add_config_arguments(parser, cls)
    return config_from_namespace(cls, parser.parse_args(argv))


def first_difference(saved: Mapping[str, Any], current: Mapping[str, Any], ignore: Iterable[str] = (),
                     prefix: str = "") -> str | None:
    """The dotted name of the first field whose value differs between two settings mappings (nested mappings
    are compared field by field), ignoring ``ignore``; None when they agree."""
    skipped = set(ignore)
    for key in sorted(set(saved) | set(current), key=str):
        if key in skipped:
            continue
        before, after = saved.get(key), current.get(key)
        if isinstance(before, Mapping) and isinstance(after, Mapping):
            nested = first_difference(before, after, (), f"{prefix}{key}.")
            if nested:
                return nested
        elif _plain(before) != _plain(after):
            return f"{prefix}{key}"
    return None


def _plain(value: Any) -> Any:
    """Lists and tuples compare equal (a manifest read back from JSON has lists)."""
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value
