"""How many CPU threads the work the browser asks for (steps, tiles, λ mark, exports) may use.

On a CPU, torch's intra-op pool takes every core by default. In a notebook the browser, the notebook
server (JupyterLab, marimo) and the kernel share the machine; when anything else keeps a core busy, each
of torch's parallel regions waits for the thread that cannot run. Measured on a 2-core machine at load
12 (torch 2.14, EfficientNet-Lite0, preview preset): one engine step took 0.5–0.9 s on one thread and
4–22 s on two, so the first frame came 30 s after the click (``docs/benchmarks/frontends_cpu.md``).
On an *idle* 2-core machine (Colab) the opposite holds: one thread instead of two makes a step 1.4×
slower.

So ``"auto"`` looks at the machine first (:func:`auto_threads`): when the 1-minute load average, this
process's own share taken out (:func:`other_load`), says the rest of the machine keeps less than
``IDLE_LOAD`` of a core busy, every core is idle for torch and the request uses all of them; otherwise
(or where there is no load average, e.g. Windows) all the cores but one (at least one thread), the one
left serving the browser and the server. torch's own setting is back as soon as the request is answered,
and never more threads than it has. The widget decides once per run and keeps that count for the run's
requests; ``run()`` from Python uses the same rule, so a panel run and a scripted one give the same
image (the thread count changes the round-off, and over a run the image; the status line names the
count). The setting is per thread (OpenMP), so marimo's app kernels, threads of one process, do not
disturb each other.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import torch

__all__ = ["IDLE_LOAD", "auto_threads", "available_cores", "browser_threads", "limited_threads", "other_load"]

#: The rest of the machine counts as idle below this load (in cores): then "auto" takes every core.
IDLE_LOAD = 0.5


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def auto_threads(cores: int, load: float | None) -> int:
    """The ``"auto"`` thread count for ``cores`` cores when everything but this process puts ``load`` on
    the machine (1-minute load average, in cores; None: unknown): all the cores when ``load`` leaves
    every core idle for torch (below :data:`IDLE_LOAD`), else all but one; at least one."""
    cores = max(1, int(cores))
    if load is not None and math.isfinite(load) and load < IDLE_LOAD:
        return cores
    return max(1, cores - 1)


class _OwnLoad:
    """This process's share of the 1-minute load average: its CPU use (all its threads), damped the way
    the kernel damps the load average (weight ``exp(-dt / 60 s)`` on the past)."""

    def __init__(self) -> None:
        self.wall = time.monotonic()
        self.cpu = time.process_time()
        self.value = 0.0

    def __call__(self) -> float:
        wall, cpu = time.monotonic(), time.process_time()
        dt = wall - self.wall
        if dt > 0:
            keep = math.exp(-dt / 60.0)
            self.value = self.value * keep + max(0.0, (cpu - self.cpu) / dt) * (1.0 - keep)
        self.wall, self.cpu = wall, cpu
        return self.value


_own_load = _OwnLoad()


def other_load() -> float | None:
    """The 1-minute load average less this process's own recent CPU use (a run that just kept torch's
    threads busy is no reason to take fewer), or None where the OS has no load average."""
    own = _own_load()
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # Windows; or unobtainable
        return None
    return max(0.0, load - own)


def browser_threads(
    cores: int | None = None, current: int | None = None, load: float | Literal["measure"] | None = "measure"
) -> int:
    """Threads for a browser request (``"auto"``): :func:`auto_threads` of the ``cores`` and the
    ``load`` of the rest of the machine, never more than torch's ``current`` setting (defaults: this
    machine's cores, :func:`other_load` measured now, ``torch.get_num_threads()``; ``load=None``:
    unknown, i.e. all cores but one)."""
    cores = available_cores() if cores is None else cores
    current = torch.get_num_threads() if current is None else current
    measured = other_load() if load == "measure" else load
    return max(1, min(current, auto_threads(cores, measured)))


@contextmanager
def limited_threads(threads: int | None) -> Iterator[None]:
    """Run the block on at most ``threads`` intra-op threads (None: torch's setting), then restore it."""
    before = torch.get_num_threads()
    if threads is None or threads >= before:
        yield
        return
    torch.set_num_threads(max(1, threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)
