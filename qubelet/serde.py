"""One JSON codec for the declared config and record dataclasses, driven by their type hints.

A dataclass is the one declaration of a config: its fields, their types and their defaults.
:func:`to_json` and :func:`from_json` read that declaration, so a field added to the dataclass is
written and read back without a hand-written ``to_json``/``from_json`` pair to keep in step, and
:func:`defaults` gives the CLI the same defaults instead of repeating them in argparse.

Conversions are the ones JSON needs: ``Path`` <-> string, tuples <-> lists, nested dataclasses
<-> objects, ints where a float is declared. Unknown keys are ignored (a file written by a newer
version still loads); a missing key takes the field's default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any, TypeVar

__all__ = ["defaults", "from_json", "to_json"]

T = TypeVar("T")


def to_json(value: Any) -> Any:
    """``value`` as JSON-ready data: dataclasses become dicts, paths strings, tuples lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, list | tuple):
        return [to_json(item) for item in value]
    if isinstance(value, Mapping):
        return {key: to_json(item) for key, item in value.items()}
    return value


def from_json(cls: type[T], data: Mapping[str, Any]) -> T:
    """An instance of dataclass ``cls`` from :func:`to_json` output (validation is ``cls``'s own).

    Raises:
        TypeError: ``data`` is not a mapping, or holds a value of the wrong shape.
    """
    if not isinstance(data, Mapping):
        raise TypeError(f"{cls.__name__}: expected an object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    kwargs = {key: _decode(hints[key], value) for key, value in data.items() if key in known}
    return cls(**kwargs)


def defaults(cls: type) -> dict[str, Any]:
    """Each field's declared default (``default_factory`` called), by name; no entry if required."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def _decode(tp: Any, value: Any) -> Any:
    if value is None:
        return None
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        return _decode(options[0], value) if len(options) == 1 else value
    if isinstance(tp, type) and issubclass(tp, PurePath):
        return Path(value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return from_json(tp, value)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode(args[0], item) for item in value)
        return tuple(_decode(a, item) for a, item in zip(args, value, strict=True)) if args else tuple(value)
    if origin is list:
        return [_decode(args[0], item) for item in value] if args else list(value)
    if origin is dict:
        return {key: _decode(args[1], item) for key, item in value.items()} if args else dict(value)
    return value
