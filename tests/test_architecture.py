"""The house rules of docs/architecture.md, checked: import direction, one home per fixed name,
no citations of documents outside the repository, no machine-specific paths."""

from __future__ import annotations

import ast
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
COMPONENTS = ("qpu_device_plugin", "dra_driver", "node_agent", "admission_check", "policy", "pipeline")
PACKAGES = ("qubelet", *COMPONENTS)
FIXED_NAMES = ("quantum.example.com/qpu", "qpu.quantum.example.com", "fake:IQMFakeApollo")
#: qubelet modules that sit above every component on purpose: the verb dispatcher and the
#: generator of docs/metrics.md (it lists every component's metrics).
AGGREGATORS = ("qubelet/cli.py", "qubelet/metrics_doc.py")


def _sources() -> Iterator[Path]:
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            if not path.name.endswith(("_pb2.py", "_pb2_grpc.py")):
                yield path


def _imports(path: Path) -> set[str]:
    """Top-level module names ``path`` imports (anywhere in the file, lazy imports included)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def _roots(modules: set[str]) -> set[str]:
    return {m.split(".", 1)[0] for m in modules}


def test_qubelet_base_imports_no_component() -> None:
    for path in _sources():
        rel = path.relative_to(REPO)
        if rel.parts[0] == "qubelet" and str(rel) not in AGGREGATORS:
            assert not _roots(_imports(path)) & set(COMPONENTS), rel


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("dra_driver", "qpu_device_plugin"),
        ("qpu_device_plugin", "dra_driver"),
        ("policy", "pipeline"),
        ("policy", "dra_driver"),
        ("policy", "qpu_device_plugin"),
        ("pipeline", "dra_driver"),
        ("pipeline", "qpu_device_plugin"),
        ("pipeline", "node_agent"),
        ("policy", "node_agent"),
        ("dra_driver", "node_agent"),
        ("qpu_device_plugin", "node_agent"),
        ("admission_check", "dra_driver"),
        ("admission_check", "qpu_device_plugin"),
        ("admission_check", "node_agent"),
        ("admission_check", "pipeline"),
        ("dra_driver", "admission_check"),
        ("pipeline", "admission_check"),
    ],
)
def test_import_direction(package: str, forbidden: str) -> None:
    offenders = [
        str(p.relative_to(REPO))
        for p in _sources()
        if p.relative_to(REPO).parts[0] == package and forbidden in _roots(_imports(p))
    ]
    assert offenders == [], f"{package} must not import {forbidden}"


def _string_constants(path: Path) -> Iterator[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.value


def test_each_fixed_name_is_defined_once() -> None:
    where: Counter[tuple[str, str]] = Counter()
    for path in _sources():
        for text in _string_constants(path):
            if text in FIXED_NAMES:
                where[(text, str(path.relative_to(REPO)))] += 1
    for name in FIXED_NAMES:
        homes = {file: n for (text, file), n in where.items() if text == name}
        assert homes == {"qubelet/inventory/names.py": 1}, (name, homes)


def _tracked_text_files() -> list[Path]:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "ls-files"], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: cannot list the tracked files")
    skip = ("uv.lock", ".json", ".png", "_pb2.py", "_pb2.pyi", "_pb2_grpc.py")
    return [REPO / line for line in out.splitlines() if line and not line.endswith(skip)]


def test_no_outside_design_doc_and_no_machine_paths() -> None:
    offenders = []
    for path in _tracked_text_files():
        if path.resolve() == Path(__file__).resolve() or not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        # Spelled in pieces so that a plain `git grep` for them finds no hit in this file either.
        for needle in ("DESIGN" + ".md", "/wo" + "rk/", "/ro" + "ot/"):
            if needle in text:
                offenders.append(f"{path.relative_to(REPO)}: {needle}")
    assert offenders == []


@pytest.mark.parametrize("package", [*PACKAGES, "qubelet.inventory", "pipeline.backends", "pipeline.cluster"])
def test_every_package_declares_its_public_surface(package: str) -> None:
    import importlib

    module = importlib.import_module(package)
    public = getattr(module, "__all__", None)
    assert public, f"{package} has no __all__"
    for name in public:
        if not hasattr(module, name):
            importlib.import_module(f"{package}.{name}")  # a public submodule


def test_every_error_class_is_in_the_qubelet_tree() -> None:
    """Each exception the packages define derives from QubeletError (docs/architecture.md)."""
    import importlib

    from qubelet.errors import QubeletError

    outside = []
    for path in _sources():
        rel = path.relative_to(REPO)
        module_name = ".".join(rel.with_suffix("").parts)
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if not isinstance(node, ast.ClassDef) or node.name.startswith("_"):
                continue
            if not any(isinstance(b, ast.Name) and b.id.endswith(("Error", "Exception")) for b in node.bases):
                continue
            cls = getattr(importlib.import_module(module_name), node.name)
            if isinstance(cls, type) and issubclass(cls, BaseException) and not issubclass(cls, QubeletError):
                outside.append(f"{rel}: {node.name}")
    assert outside == []


def test_only_the_kube_module_sees_api_exception() -> None:
    """Kubernetes' ApiException is translated in qubelet/kube.py; callers catch NotFound/Conflict."""
    offenders = []
    for path in _sources():
        rel = path.relative_to(REPO)
        if str(rel) == "qubelet/kube.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = node.names if isinstance(node, ast.ImportFrom) else []
            if any(alias.name == "ApiException" for alias in names):
                offenders.append(str(rel))
    assert offenders == []
