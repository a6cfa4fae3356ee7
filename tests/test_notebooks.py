"""The example notebooks: in sync with their jupytext scripts, stripped, and run headless (nbclient).

The source of each notebook is the percent script next to it (``notebooks/<name>.py``); the committed
``.ipynb`` must hold the same cells (``jupytext --to ipynb --update notebooks/<name>.py``).

``FACCENT_FAST=1`` makes each notebook cut steps, crops and image sizes; the notebooks' default
remains the real setting. The kernel is the interpreter running pytest: a temporary "python3"
kernelspec pointing at ``sys.executable`` is put first on ``JUPYTER_PATH``, so a stale user-level
kernelspec cannot send the notebooks to another environment. It starts in ``notebooks/``, as Jupyter
does, so the notebooks import ``notebooks/_helpers.py`` the way a user's kernel does.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path
from types import ModuleType
from types import SimpleNamespace as NS

import pytest
import torch

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
jupytext = pytest.importorskip("jupytext")
pytest.importorskip("ipykernel")

NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = ["quickstart.ipynb", "teaching.ipynb", "triage.ipynb"]
REGENERATE = "jupytext --to ipynb --update " + " ".join(f"notebooks/{Path(n).stem}.py" for n in NOTEBOOKS)
CELL_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A jupyter data dir whose "python3" kernelspec runs this very interpreter."""
    root = tmp_path_factory.mktemp("jupyter")
    spec_dir = root / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
        "metadata": {"debugger": False},
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")
    return root


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(name: str, kernel_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACCENT_FAST", "1")
    monkeypatch.setenv("JUPYTER_PATH", str(kernel_env))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    monkeypatch.delenv("FACCENT_FIGURES", raising=False)
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")  # no __pycache__ for _helpers in the source tree
    before = sorted(p.name for p in NOTEBOOKS_DIR.iterdir())
    nb = nbformat.read(NOTEBOOKS_DIR / name, as_version=4)
    # The kernel starts in notebooks/, as Jupyter's does, so `import _helpers` works the same way.
    client = nbclient.NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS_DIR)}},
    )
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError on the first failing cell
    elapsed = time.perf_counter() - start
    assert sorted(p.name for p in NOTEBOOKS_DIR.iterdir()) == before, "the notebook wrote into notebooks/"
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, errors
    text = "".join(
        o.get("text", "")
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.output_type == "stream"
    )
    assert "Traceback" not in text
    print(f"{name}: {elapsed:.1f} s (FACCENT_FAST=1)")


def _cells(nb: nbformat.NotebookNode) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source) for c in nb.cells]


def test_notebook_folder_holds_script_notebook_pairs() -> None:
    """Every notebook has its script and every script its notebook (only the helpers module is extra)."""
    assert sorted(p.name for p in NOTEBOOKS_DIR.glob("*.ipynb")) == sorted(NOTEBOOKS)
    assert sorted(p.name for p in NOTEBOOKS_DIR.glob("*.py")) == sorted(
        ["_helpers.py"] + [f"{Path(n).stem}.py" for n in NOTEBOOKS]
    )


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_matches_its_script_and_is_stripped(name: str) -> None:
    """The committed .ipynb has the cells of its jupytext percent script, and no outputs."""
    script = NOTEBOOKS_DIR / f"{Path(name).stem}.py"
    from_script = jupytext.read(script)
    assert from_script.metadata["jupytext"]["text_representation"]["format_name"] == "percent", script
    committed = nbformat.read(NOTEBOOKS_DIR / name, as_version=4)
    nbformat.validate(committed)
    assert _cells(committed) == _cells(from_script), f"{name} differs from {script.name}: run `{REGENERATE}`"
    assert committed.metadata.get("kernelspec") == from_script.metadata.get("kernelspec")
    assert committed.metadata.get("jupytext", {}).get("formats") == "ipynb,py:percent", "pairing lost"
    for cell in committed.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{name}: outputs not stripped"


# ----------------------------------------------------------------------------- notebooks/_helpers.py


@pytest.fixture(scope="module")
def helpers() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_helpers", NOTEBOOKS_DIR / "_helpers.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_helpers_measure_the_change(helpers: ModuleType) -> None:
    seed = torch.full((3, 32, 32), 0.5)
    flat = NS(seed=seed, image=seed + 0.1)  # a uniform shift: all energy at frequency 0
    yy, xx = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    checker = ((yy + xx) % 2).float().expand(3, -1, -1)  # all energy at the Nyquist frequency
    noisy = NS(seed=seed, image=seed + 0.2 * (checker - 0.5))
    assert helpers.pixel_change(flat) == pytest.approx(0.1)
    assert helpers.pixel_change(noisy) == pytest.approx(0.1)
    assert helpers.hf_share(flat) == pytest.approx(0.0, abs=1e-6)
    assert helpers.hf_share(noisy) == pytest.approx(1.0)
    scored = NS(seed_score=NS(prob=0.1234), score=NS(prob=0.9876))
    assert helpers.p(scored) == "p 0.123->0.988"


def test_helpers_show_saves_a_quantized_png_only_when_asked(
    helpers: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    import matplotlib.pyplot as plt
    from PIL import Image

    monkeypatch.setattr("matplotlib.pyplot.show", lambda *a, **k: None)
    grid = [[torch.rand(3, 16, 24), None], [torch.rand(16, 24)]]
    monkeypatch.delenv("FACCENT_FIGURES", raising=False)
    helpers.show(grid, titles=["image", "empty"], row_titles=["a", "b"], name="unsaved")
    assert not (tmp_path / "unsaved.png").exists()
    figures = tmp_path / "figures"
    monkeypatch.setenv("FACCENT_FIGURES", str(figures))
    helpers.show(grid, titles=[["image", "empty"], ["map"]], name="grid", suptitle="a grid")
    helpers.show(grid)  # no name: nothing saved
    assert [p.name for p in figures.iterdir()] == ["grid.png"]
    with Image.open(figures / "grid.png") as png:
        assert png.mode == "P"  # 256-colour palette, small enough for a README
    plt.close("all")
