"""How many CPU threads the work the browser asks for (steps, tiles, λ mark, exports) may use.

On a CPU, torch's intra-op pool takes every core by default. In a notebook the browser, the notebook
server (JupyterLab, marimo) and the kernel share the machine; when anything else keeps a core busy, each
of torch's parallel regions waits for the thread that cannot run. Measured on a 2-core machine at load
12 (torch 2.14, EfficientNet-Lite0, preview preset): one engine step took 0.5–0.9 s on one thread and
4–22 s on two, so the first frame came 30 s after the click (``docs/benchmarks/frontends_cpu.md``).

So the browser's requests run on all the cores but one (at least one thread), the one left serving the
browser and the server; torch's own setting is back as soon as the request is answered. ``run()`` from
Python uses the same count, so a panel run and a scripted one give the same image (the thread count
changes the round-off, and over a run the image). The setting is per thread (OpenMP), so marimo's app
kernels, threads of one process, do not disturb each other.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["available_cores", "browser_threads", "limited_threads"]


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def browser_threads(cores: int | None = None, current: int | None = None) -> int:
    """Threads for a browser request: all the ``cores`` but one, at least one, never more than torch's
    ``current`` setting (default: this machine's cores and ``torch.get_num_threads()``)."""
    cores = available_cores() if cores is None else cores
    current = torch.get_num_threads() if current is None else current
    return max(1, min(current, cores - 1))


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
