"""Typed settings from environment variables: how one is declared, read and checked, and the
markdown table that documents them. The settings themselves are in sections.py.

A section is a frozen dataclass whose fields are declared with `setting`; a container of
sections (app.config.Settings) is read with `read`, which parses every value by its field's
type and reports every bad one in a single ConfigError.

Plain dataclasses rather than pydantic-settings: this is all the parsing the settings need
(comma-separated lists, 1/0 flags, choices), and pydantic costs every worker about 0.2 s of
boot and 25 MB of memory.
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import Field, field, fields
from typing import Any, Literal

TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off", "")


class ConfigError(ValueError):
    """Settings that cannot be read; the message names every variable at fault."""


def setting(
    env: str,
    default: Any,
    doc: str,
    *,
    key: str | None = None,
    convert: Callable[[Any], Any] | None = None,
) -> Any:
    """A setting read from the variable `env`, documented by `doc` (one line). `key` is its
    Flask config key when that is not `env`; `convert` maps a value once parsed."""
    meta = {"env": env, "key": key or env, "doc": doc, "convert": convert}
    return field(default=default, metadata=meta)


def parse(kind: Any, raw: Any) -> Any:
    """`raw` as a value of `kind`: text from the environment, or a Python value (a flat
    override given to create_app)."""
    if isinstance(kind, types.UnionType):  # `str | None`: unset or empty is None
        if raw is None or raw == "":
            return None
        (kind,) = (arg for arg in typing.get_args(kind) if arg is not type(None))
    origin = typing.get_origin(kind)
    if origin is Literal:
        for choice in typing.get_args(kind):
            if isinstance(raw, str) and raw.strip().casefold() == choice.casefold():
                return choice
        raise ValueError(f"not one of {', '.join(typing.get_args(kind))}")
    if origin is tuple:  # tuple[str, ...]: comma-separated in the environment
        items = raw.split(",") if isinstance(raw, str) else raw
        if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
            raise ValueError("not a comma-separated list")
        return tuple(item.strip() for item in items if item.strip())
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().casefold()
        if text not in TRUE + FALSE:
            raise ValueError("not a flag (1 or 0, true or false, yes or no, on or off)")
        return text in TRUE
    if kind is int or kind is float:
        return _number(kind, raw)
    if kind is str and isinstance(raw, str):
        return raw
    raise ValueError(f"not {_type_name(kind)}")


def _number(kind: type, raw: Any) -> int | float:
    what = "an integer" if kind is int else "a number"
    # bool is an int to Python, and a float given for an integer would be truncated.
    accepted = (str, int) if kind is int else (str, int, float)
    if isinstance(raw, bool) or not isinstance(raw, accepted):
        raise ValueError(f"not {what}")
    try:
        value = kind(raw)
    except ValueError:
        raise ValueError(f"not {what}") from None
    # Every number here is a count, size, rate or duration.
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"not {what} of 0 or more")
    return value


def sections_of(container: type) -> Iterator[tuple[str, type]]:
    """The (attribute, section class) pairs of a container of sections."""
    hints = typing.get_type_hints(container)
    for part in fields(container):
        yield part.name, hints[part.name]


def read(container: type, environ: Mapping[str, str], overrides: Mapping[str, Any]) -> Any:
    """Every setting of `container`'s sections: an override (by Flask key) wins over the
    environment (by variable), which wins over the default."""
    errors: list[str] = []
    parts = {
        name: _read_section(cls, environ, overrides, errors) for name, cls in sections_of(container)
    }
    if errors:
        raise ConfigError("bad configuration:\n  " + "\n  ".join(errors))
    return container(**parts)


def _read_section(cls: type, environ, overrides, errors: list[str]) -> Any:
    hints = typing.get_type_hints(cls)
    values = {}
    for item in fields(cls):
        env, key, convert = item.metadata["env"], item.metadata["key"], item.metadata["convert"]
        if key in overrides:
            name, raw = key, overrides[key]
        elif env in environ:
            name, raw = env, environ[env]
        else:
            continue
        try:
            value = parse(hints[item.name], raw)
        except ValueError as exc:
            errors.append(f"{name}={raw!r}: {exc}")
            continue
        values[item.name] = convert(value) if convert and value is not None else value
    try:
        return cls(**values)
    except ConfigError as exc:  # a check across the section's settings (its __post_init__)
        errors.append(str(exc))
        return None


def flat(settings: Any) -> dict[str, Any]:
    """A container's settings under their Flask keys, lists as lists (what consumers had)."""
    config = {}
    for name, cls in sections_of(type(settings)):
        section = getattr(settings, name)
        for item in fields(cls):
            value = getattr(section, item.name)
            config[item.metadata["key"]] = list(value) if isinstance(value, tuple) else value
    return config


def keys(container: type) -> set[str]:
    return {item.metadata["key"] for _, cls in sections_of(container) for item in fields(cls)}


def markdown_table(section_classes: list[type]) -> str:
    """One row per setting under a bold row per section, in declaration order."""
    lines = ["| variable | type | default | meaning |", "|---|---|---|---|"]
    for cls in section_classes:
        lines.append(f"| **{cls.__doc__.strip().rstrip('.')}** | | | |")
        hints = typing.get_type_hints(cls)
        for item in fields(cls):
            cells = (
                f"`{item.metadata['env']}`",
                _type_name(hints[item.name]),
                show_default(item),
                item.metadata["doc"],
            )
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def show_default(item: Field) -> str:
    value = item.default
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "on" if value else "off"
    if value in ("", ()):
        return "empty"
    return f"`{value}`" if isinstance(value, str) else str(value)


def _type_name(kind: Any) -> str:
    if isinstance(kind, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(kind) if a is not type(None))
    if typing.get_origin(kind) is Literal:
        return " or ".join(f"`{choice}`" for choice in typing.get_args(kind))
    if typing.get_origin(kind) is tuple:
        return "list"
    return {int: "integer", float: "number", bool: "flag", str: "text"}[kind]
