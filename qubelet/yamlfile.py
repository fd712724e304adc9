"""Reading a YAML config file into plain data, with one-line errors that name the file.

The inventory, the policy's admin config and scenario files are all hand-edited YAML: each wants
the same refusals (unreadable, not UTF-8, invalid YAML with line and column, a key given twice),
so they share this one reader and differ only in how they validate what it returns.
"""

from __future__ import annotations

import os
from typing import Any

import yaml

from qubelet.errors import ConfigError

__all__ = ["read_yaml_file"]


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping.

    PyYAML keeps the last of two equal keys silently, so a ``replicas`` written twice (or a
    ``health`` block pasted over another) would take effect without anyone noticing. YAML 1.2
    says keys are unique; the error names the line of the second key and of the first. Keys
    that come from a merge (``<<: *anchor``) may still be overridden, as YAML intends.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
            try:
                seen = first_line.get(key)
            except TypeError:
                continue  # an unhashable key: the base class reports it
            if seen is not None:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r} (first given on line {seen})",
                    key_node.start_mark,
                )
            first_line[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def read_yaml_file(path: str | os.PathLike[str]) -> Any:
    """The parsed document at ``path``; any problem raises a one-line :class:`ConfigError`."""
    source = os.fspath(path)
    try:
        with open(source, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: not UTF-8 text: {exc.reason}") from exc
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass: safe
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{source}: invalid YAML: {where}{problem}") from exc
