"""Runs the front end's unit tests (``npm test`` in js/: node's test runner + jsdom)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

JS = Path(__file__).resolve().parent.parent / "js"


def test_js_unit_tests() -> None:
    if shutil.which("node") is None:
        pytest.skip("node is not installed (the front-end tests need Node.js ≥ 18)")
    npm = shutil.which("npm")
    assert npm is not None, "node is installed but npm is not: install npm, then run `npm ci` in js/"
    assert (JS / "node_modules").is_dir(), (
        f"{JS / 'node_modules'} is missing: run `npm ci` in js/ (cd js && npm ci) before the tests"
    )
    proc = subprocess.run(
        [npm, "test", "--silent"], cwd=JS, capture_output=True, text=True, timeout=300,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"`npm test` in js/ failed (exit {proc.returncode}):\n{output[-8000:]}"
    assert "# fail 0" in output, output[-4000:]
