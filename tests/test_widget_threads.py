"""The browser's requests run on all the cores but one (faccent_widget/widget/threads.py): on a loaded
2-core machine two intra-op threads made a step 10-40× slower than one (docs/benchmarks/frontends_cpu.md);
on an idle one ("auto": the load average, this process's share taken out, below half a core) on all.

Driven like tests/test_widget.py: ``w._on_msg`` is what the comm calls for a browser message; ``w.send``
records. Real default model, real sample image, tiny runs.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
import torch

import faccent_widget as fw
from faccent_widget.widget import threads
from faccent_widget.widget.threads import IDLE_LOAD, auto_threads, available_cores, browser_threads, limited_threads

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


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch) -> dict[str, float | None]:
    """A 2-core machine (Colab's) whose load from everything but this process the test sets."""
    state: dict[str, float | None] = {"load": None}
    monkeypatch.setattr(threads, "available_cores", lambda: 2)
    monkeypatch.setattr(threads, "other_load", lambda: state["load"])
    return state


def test_browser_threads_leave_one_core() -> None:
    assert browser_threads(cores=2, current=2, load=None) == 1
    assert browser_threads(cores=1, current=1, load=None) == 1
    assert browser_threads(cores=8, current=4, load=None) == 4  # never more than torch's own setting
    assert browser_threads(cores=4, current=4, load=None) == 3
    assert browser_threads(cores=4, current=2, load=0.0) == 2
    assert 1 <= browser_threads() <= torch.get_num_threads()
    assert available_cores() >= 1


def test_auto_takes_every_core_only_while_the_rest_of_the_machine_is_idle() -> None:
    assert auto_threads(2, 0.0) == 2 and auto_threads(2, 0.3) == 2  # idle Colab: both cores
    assert auto_threads(2, IDLE_LOAD) == 1 and auto_threads(2, 1.0) == 1 and auto_threads(2, 12.0) == 1
    assert auto_threads(2, None) == 1  # no load average (Windows): all but one, as before
    assert auto_threads(2, float("nan")) == 1
    assert auto_threads(1, 5.0) == 1 and auto_threads(1, 0.0) == 1  # at least one
    assert auto_threads(16, 0.1) == 16 and auto_threads(16, 3.0) == 15


def test_other_load_takes_this_process_share_out() -> None:
    """A process busy on its own (a run) does not count as load from others: measured for real."""
    load = threads.other_load()
    if not hasattr(os, "getloadavg"):
        assert load is None
        return
    assert load is not None and 0.0 <= load <= os.getloadavg()[0]
    t0 = time.monotonic()
    busy = threads._OwnLoad()
    while time.monotonic() - t0 < 0.3:  # one thread busy: at most one core's worth, damped over 60 s
        sum(range(1000))
    share = busy()
    assert 0.0 < share <= 1.05 * (1 - math.exp(-(time.monotonic() - t0) / 60))


def test_auto_is_decided_per_run_and_restored_after_each_request(
    model: fw.Model, chelsea: torch.Tensor, two_threads: None, machine: dict[str, float | None]
) -> None:
    w = fw.FaccentWidget(model, chelsea, **FAST)
    sent: list[dict[str, Any]] = []
    w.send = lambda content, buffers=None: sent.append(content)  # type: ignore[method-assign]
    seen = _threads_per_step(w)
    machine["load"] = 0.1  # idle: both cores
    w._on_msg(w, {"type": "start"}, [])
    w._on_msg(w, {"type": "chunk", "budget_ms": 1}, [])
    assert sent[-1]["type"] == "frame" and seen[-1] == 2
    machine["load"] = 3.0  # busy now: the run keeps its count (its image does not depend on when)
    w._on_msg(w, {"type": "chunk", "budget_ms": 1}, [])
    assert seen[-1] == 2 and torch.get_num_threads() == 2
    w._on_msg(w, {"type": "start"}, [])  # a new run: decided afresh, on one thread
    w._on_msg(w, {"type": "chunk", "budget_ms": 1}, [])
    assert seen[-1] == 1
    machine["load"] = 0.0  # Stop and Continue go on with the run's count
    w._on_msg(w, {"type": "stop"}, [])
    w._on_msg(w, {"type": "continue"}, [])
    w._on_msg(w, {"type": "chunk", "budget_ms": 1}, [])
    assert sent[-1]["type"] == "frame" and sent[-1]["step"] == 2 and seen[-1] == 1
    assert torch.get_num_threads() == 2  # torch's own setting is back after the request


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
    assert sent[-1]["type"] == "frame" and seen[-1] == w._auto_threads
    assert 1 <= seen[-1] <= 2 and torch.get_num_threads() == 2  # the real load decided; torch's count back


def test_run_from_python_uses_the_panels_thread_count(
    model: fw.Model, chelsea: torch.Tensor, two_threads: None, machine: dict[str, float | None]
) -> None:
    """``w.run()`` runs on the same thread count as a run started in the browser (the count changes the
    round-off), so both give the same image; torch's own setting is back afterwards."""
    machine["load"] = 2.0  # a busy machine, the same for both runs
    w = fw.FaccentWidget(model, chelsea, **FAST)
    seen = _threads_per_step(w)
    scripted = w.run(2).image.clone()
    assert seen and set(seen) == {browser_threads(current=2)} == {1}
    assert "1 CPU thread:" in w.status  # the count a repeat needs
    assert torch.get_num_threads() == 2
    w.send = lambda content, buffers=None: None  # type: ignore[method-assign]
    w._on_msg(w, {"type": "start"}, [])
    while w.running:
        w._on_msg(w, {"type": "chunk", "budget_ms": 1000}, [])
    assert w.result is not None and torch.equal(w.result.image, scripted)
