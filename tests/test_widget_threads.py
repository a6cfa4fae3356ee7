"""The browser's requests run on all the cores but one (faccent_widget/widget/threads.py): on a loaded
2-core machine two intra-op threads made a step 10-40× slower than one (docs/benchmarks/frontends_cpu.md).

Driven like tests/test_widget.py: ``w._on_msg`` is what the comm calls for a browser message; ``w.send``
records. Real default model, real sample image, tiny runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch

import faccent_widget as fw
from faccent_widget.widget.threads import available_cores, browser_threads, limited_threads

FAST = dict(n_crops=2, input_size=96, canvas=96, steps=3)


@pytest.fixture
def two_threads() -> Iterator[None]:
    """torch on two intra-op threads for the test (as on a 2-core machine), then as it was."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def test_browser_threads_leave_one_core() -> None:
    assert browser_threads(cores=2, current=2) == 1
    assert browser_threads(cores=1, current=1) == 1
    assert browser_threads(cores=8, current=4) == 4  # never more than torch's own setting
    assert browser_threads(cores=4, current=4) == 3
    assert 1 <= browser_threads() <= torch.get_num_threads()
    assert available_cores() >= 1


def test_limited_threads_restores_after_an_error(two_threads: None) -> None:
    with limited_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    with pytest.raises(RuntimeError, match="boom"), limited_threads(1):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == 2
    with limited_threads(None):
        assert torch.get_num_threads() == 2
    with limited_threads(8):  # never raises the count
        assert torch.get_num_threads() == 2


def _threads_per_step(w: fw.FaccentWidget) -> list[int]:
    """torch's thread count seen at each step change (the observer runs inside the request)."""
    seen: list[int] = []
    w.observe(lambda _c: seen.append(torch.get_num_threads()), names=["step"])
    return seen


def test_chunks_from_the_browser_run_on_fewer_threads(
    model: fw.Model, chelsea: torch.Tensor, two_threads: None
) -> None:
    w = fw.FaccentWidget(model, chelsea, **FAST)
    sent: list[dict[str, Any]] = []
    w.send = lambda content, buffers=None: sent.append(content)  # type: ignore[method-assign]
    seen = _threads_per_step(w)
    w.browser_threads = 1
    w._on_msg(w, {"type": "ready"}, [])
    w._on_msg(w, {"type": "start"}, [])
    w._on_msg(w, {"type": "chunk", "budget_ms": 1}, [])
    assert [m["type"] for m in sent] == ["frame"] and sent[0]["step"] == 1
    assert seen[-1] == 1  # the step ran on one thread
    assert torch.get_num_threads() == 2  # and torch's setting is back after the request

    w.browser_threads = None  # torch's own setting
    w._on_msg(w, {"type": "chunk", "budget_ms": 1}, [])
    assert seen[-1] == 2 and sent[-1]["step"] == 2

    w.browser_threads = "all"  # refused with one line, the widget keeps working
    w._on_msg(w, {"type": "chunk", "budget_ms": 1}, [])
    assert sent[-1]["type"] == "error" and "browser_threads must be 'auto'" in sent[-1]["message"]
    assert torch.get_num_threads() == 2 and not w.running
    w.browser_threads = "auto"
    w._on_msg(w, {"type": "start"}, [])
    w._on_msg(w, {"type": "chunk", "budget_ms": 1}, [])
    assert sent[-1]["type"] == "frame" and seen[-1] == browser_threads(current=2)
    assert torch.get_num_threads() == 2


def test_run_from_python_uses_the_panels_thread_count(
    model: fw.Model, chelsea: torch.Tensor, two_threads: None
) -> None:
    """``w.run()`` runs on the same thread count as a run started in the browser (the count changes the
    round-off), so both give the same image; torch's own setting is back afterwards."""
    w = fw.FaccentWidget(model, chelsea, **FAST)
    seen = _threads_per_step(w)
    scripted = w.run(2).image.clone()
    assert seen and set(seen) == {browser_threads(current=2)}
    assert torch.get_num_threads() == 2
    w.send = lambda content, buffers=None: None  # type: ignore[method-assign]
    w._on_msg(w, {"type": "start"}, [])
    while w.running:
        w._on_msg(w, {"type": "chunk", "budget_ms": 1000}, [])
    assert w.result is not None and torch.equal(w.result.image, scripted)
