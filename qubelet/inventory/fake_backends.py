"""The names iqm-client's fake backends package exports, read from its source without importing it.

Importing ``iqm.qiskit_iqm.fake_backends`` imports qiskit and iqm-client's provider: about 8 s of
CPU, tens of seconds of wall time on a loaded node. A ``fake`` health probe for a class the
package does not have (a typo in the inventory) can say so at once from the package's
``__init__.py``, without paying that import and without waiting behind another QPU's probe that
is paying it. A class the package does have is still imported and built by the probe.

The reading is conservative: every name the file could bind counts as exported (an
over-approximation only sends a probe on to the import), and where the file could bind names
that cannot be read from it (``import *``, a module ``__getattr__``, ``globals()``, ``setattr``)
or the source is not a readable file, the answer is None: the import decides.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
from pathlib import Path

MODULE = "iqm.qiskit_iqm.fake_backends"
_DYNAMIC_BINDERS = frozenset({"globals", "setattr", "vars", "exec", "eval"})


@functools.cache
def exported_names() -> frozenset[str] | None:
    """Every name ``iqm.qiskit_iqm.fake_backends`` may export, or None when its source cannot tell.

    Cached: the installed package does not change under a running daemon.
    """
    source = _init_source()
    if source is None:
        return None
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return None
    return _bound_names(tree)


def _init_source() -> str | None:
    """The text of the package's ``__init__.py``, found without executing any iqm code."""
    # "iqm" is a namespace package: finding it runs nothing, while finding the submodule
    # would import iqm.qiskit_iqm (and with it qiskit).
    try:
        spec = importlib.util.find_spec("iqm")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        init = Path(location) / "qiskit_iqm" / "fake_backends" / "__init__.py"
        if init.is_file():
            try:
                return init.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                return None
    return None


def _bound_names(tree: ast.Module) -> frozenset[str] | None:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            for alias in node.names:
                if alias.name == "*":
                    return None
                names.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            if node.name == "__getattr__":
                return None
            names.add(node.name)
        elif isinstance(node, ast.Name):
            if isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif node.id in _DYNAMIC_BINDERS:
                return None
    return frozenset(names)
