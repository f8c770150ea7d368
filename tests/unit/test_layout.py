"""The package's import rules, read from the source: the tree shows the architecture only
while nothing imports across it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

PACKAGE = Path(__file__).resolve().parents[2] / "plugins" / "spancost"
ENTRY_POINTS = {"spancost.cli", "spancost.pipeline", "spancost.airflow_adapter"}
STAND_INS = ("spancost.local", "spancost.demo")
PRODUCT_AREAS = (
    "spancost.spans",
    "spancost.billing",
    "spancost.validation",
    "spancost.transform",
    "spancost.alerts",
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every spancost module a file imports, at module level or inside functions."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] == "spancost"}


MODULES = {module_name(path): imports(path) for path in sorted(PACKAGE.rglob("*.py"))}


def within(name: str, packages: tuple[str, ...] | set[str]) -> bool:
    return any(name == package or name.startswith(f"{package}.") for package in packages)


def test_the_layout_is_by_area() -> None:
    subpackages = {path.parent.name for path in PACKAGE.glob("*/__init__.py")}
    assert subpackages == {
        "spans",
        "billing",
        "validation",
        "transform",
        "alerts",
        "db",
        "local",
        "demo",
    }
    top = {path.stem for path in PACKAGE.glob("*.py")} - {"__init__"}
    assert top == {"settings", "errors", "cli", "pipeline", "airflow_adapter"}


def test_no_subpackage_imports_an_entry_point() -> None:
    upward = {
        module: sorted(name for name in names if within(name, ENTRY_POINTS))
        for module, names in MODULES.items()
        if module.count(".") >= 2 or module in {"spancost.db"}
    }
    assert {module: names for module, names in upward.items() if names} == {}


def test_product_code_never_imports_the_demo_or_the_stand_ins() -> None:
    product = [
        module for module in MODULES if not within(module, STAND_INS) and module != "spancost.cli"
    ]
    assert any(within(module, PRODUCT_AREAS) for module in product)
    crossing = {
        module: sorted(name for name in MODULES[module] if within(name, STAND_INS))
        for module in product
    }
    assert {module: names for module, names in crossing.items() if names} == {}
