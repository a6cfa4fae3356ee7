"""The front end: ``npm test`` in js/ (``tsc`` type-checks widget.js from its JSDoc, then node's test
runner + jsdom run the unit tests), and the JS types and fallbacks agree with the Python widget."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import anywidget
import pytest

from faccent_widget import FaccentWidget

JS = Path(__file__).resolve().parent.parent / "js"
WIDGET_JS = (JS / "widget.js").read_text(encoding="utf-8")


def _npm_dependencies_installed(npm: str) -> None:
    """Install js/'s locked dev dependencies (``npm ci``) when they are missing or older than the lock file,
    so that the README's test command needs no set-up step of its own; an up-to-date install is reused."""
    marker = JS / "node_modules" / ".package-lock.json"  # npm writes it at the end of every install
    lock = JS / "package-lock.json"
    if marker.is_file() and marker.stat().st_mtime >= lock.stat().st_mtime:
        return
    proc = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=JS,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, (
        f"`npm ci` in {JS} (the front-end tests' dependencies, from the npm registry) failed "
        f"(exit {proc.returncode}):\n{(proc.stdout + proc.stderr)[-4000:]}"
    )


def test_js_unit_tests() -> None:
    if shutil.which("node") is None:
        pytest.skip("node is not installed (the front-end tests need Node.js ≥ 18)")
    npm = shutil.which("npm")
    assert npm is not None, "node is installed but npm is not: install npm (the front-end tests run `npm ci` in js/)"
    _npm_dependencies_installed(npm)
    proc = subprocess.run(
        [npm, "test", "--silent"],
        cwd=JS,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, (
        f"`npm test` in js/ (type check, then unit tests) failed (exit {proc.returncode}):\n{output[-8000:]}"
    )
    assert "# fail 0" in output, output[-4000:]


def _jsdoc_typedef(name: str) -> str:
    match = re.search(r"/\*\*((?:(?!\*/).)*?@typedef \{object\} " + name + r"\b.*?)\*/", WIDGET_JS, re.S)
    assert match, f"no `@typedef {{object}} {name}` in js/widget.js"
    return match.group(1)


def test_js_traits_type_lists_the_python_widgets_synced_traits() -> None:
    """The JSDoc ``Traits`` typedef names exactly the traits FaccentWidget syncs (anywidget's own aside)."""
    js_traits = set(re.findall(r"@property \{[^}]*\} (\w+)", _jsdoc_typedef("Traits")))
    py_traits = set(FaccentWidget.class_traits(sync=True)) - set(anywidget.AnyWidget.class_traits(sync=True))
    only_js, only_py = sorted(js_traits - py_traits), sorted(py_traits - js_traits)
    assert js_traits == py_traits, f"only in js/widget.js: {only_js}; only in Python: {only_py}"


def test_js_lambda_fallbacks_are_the_python_defaults() -> None:
    """While ``lam_min`` / ``lam_max`` are unknown, the λ slider uses the Python traits' defaults."""
    for const, trait in (("LAM_MIN", "lam_min"), ("LAM_MAX", "lam_max")):
        match = re.search(rf"^const {const} = ([0-9.eE+-]+);$", WIDGET_JS, re.M)
        assert match, f"no `const {const} = <number>;` in js/widget.js"
        assert float(match.group(1)) == FaccentWidget.class_traits()[trait].default_value, const


def test_the_front_end_carries_the_python_packages_version():
    """js/package.json (and its lock file) say the version the Python package says: one release number."""
    import json

    import faccent_widget

    package = json.loads((JS / "package.json").read_text(encoding="utf-8"))
    lock = json.loads((JS / "package-lock.json").read_text(encoding="utf-8"))
    assert package["version"] == lock["version"] == lock["packages"][""]["version"] == faccent_widget.__version__
