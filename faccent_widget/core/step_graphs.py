"""A run's steps as CUDA graphs: capture one step of each kind once, then replay it.

On a GPU an engine step is launch-bound: EfficientNet-Lite0's forward and backward are hundreds of
small kernels, and the Python, dispatcher and launch overhead of issuing them is many times the GPU
work. A CUDA graph records the kernels of one whole step — crop boxes and noise drawn on the device
from the run's generator, the candidate and seed passes, the backward, fused Adam (``capturable``),
the history write into a preallocated device buffer — and replays them with one launch.

Steps of one kind are identical up to the values in device memory, so one graph per kind serves the
whole run. The kinds are ``(regularised, attribution sampled)``; step 0 (the regulariser is off, the
optimizer's state is made) and the balance step (step 1, which reads gradients apart) always run
eagerly. The first step of each kind is the warm-up: it runs eagerly on a side stream under a
host-sync probe (a model whose forward reads a tensor back to the host cannot be replayed: its
control flow would be frozen at capture), then the kind is captured; every later step of that kind is
a replay. When the probe or the capture fails the run goes on eagerly from the same step, with the
same random stream, and :attr:`StepGraphs.reason` says why in one line (also given as a warning).

Replays write into static buffers; the engine copies the step's image out after each replay, so a
:class:`~faccent_widget.core.engine.StepState` never changes under its holder. The graphs are a CUDA
matter (``EngineConfig.cuda_graphs``: None = on for CUDA, off elsewhere); :func:`emulated` swaps in a
backend that "captures" a step by keeping its Python function and "replays" it by calling it, so the
bookkeeping around the graphs (buffers, counters, the order of random draws, the fallback) is tested
on any device.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Protocol

import torch
from torch.utils._python_dispatch import TorchDispatchMode

if TYPE_CHECKING:
    from .engine import AccentuationRun

__all__ = ["StepGraphs", "HostSyncProbe", "graphs_wanted", "emulated"]

StepBody = Callable[[], torch.Tensor]


class CapturedStep(Protocol):
    """One captured step: ``replay()`` runs it again; ``output`` is its static output (the image)."""

    output: torch.Tensor

    def replay(self) -> None: ...


class Backend(Protocol):
    """How steps are warmed up and captured on a device."""

    def warm_up(self, device: torch.device) -> contextlib.AbstractContextManager[None]: ...

    def capture(self, body: StepBody, generator: torch.Generator) -> CapturedStep: ...


class HostSyncProbe(TorchDispatchMode):
    """Raises on the operations that make a step unreplayable: a scalar read back to the host
    (``.item()``, ``float()``/``bool()`` of a tensor, ``.tolist()``) and a tensor built from host data
    inside the step (``torch.tensor(...)``: a synchronising copy on CUDA). Thread-local."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        if func is torch.ops.aten._local_scalar_dense.default:
            raise RuntimeError("the step reads a tensor back to the host (.item(), float(), bool() or .tolist())")
        if func is torch.ops.aten.lift_fresh.default:
            raise RuntimeError("the step builds a tensor from host data (torch.tensor(...))")
        return func(*args, **(kwargs or {}))


class _CudaStep:
    def __init__(self, body: StepBody, generator: torch.Generator) -> None:
        self.graph = torch.cuda.CUDAGraph()
        self.graph.register_generator_state(generator)
        # thread_local: another thread of the user's (a frame encoder, say) may use CUDA meanwhile
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            self.output = body()

    def replay(self) -> None:
        self.graph.replay()


class _CudaBackend:
    @contextlib.contextmanager
    def warm_up(self, device: torch.device) -> Iterator[None]:
        # the warm-up before a capture runs on a side stream (torch.cuda.graphs' whole-network recipe)
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        try:
            with torch.cuda.stream(side), HostSyncProbe():
                yield
        finally:
            torch.cuda.current_stream(device).wait_stream(side)

    def capture(self, body: StepBody, generator: torch.Generator) -> CapturedStep:
        return _CudaStep(body, generator)


class _EmulatedStep:
    def __init__(self, body: StepBody) -> None:
        self.body = body
        # a real capture runs nothing: the step's output tensor exists, its values are not the step's yet
        self.output = torch.empty(0)

    def replay(self) -> None:
        self.output = self.body()


class _EmulatedBackend:
    @contextlib.contextmanager
    def warm_up(self, device: torch.device) -> Iterator[None]:
        with HostSyncProbe():
            yield

    def capture(self, body: StepBody, generator: torch.Generator) -> CapturedStep:
        return _EmulatedStep(body)


_override: Backend | None = None


@contextlib.contextmanager
def emulated() -> Iterator[None]:
    """Context: runs asking for graphs (``cuda_graphs=True``) use the emulating backend on any device
    (captures keep the step's function, replays call it). For tests of the graph bookkeeping."""
    global _override
    saved, _override = _override, _EmulatedBackend()
    try:
        yield
    finally:
        _override = saved


def graphs_wanted(setting: bool | None, device: torch.device) -> tuple[bool, str | None]:
    """Whether a run on ``device`` uses graphs under ``setting`` (``EngineConfig.cuda_graphs``), and,
    when they were asked for but cannot be used, why (one line)."""
    if _override is not None:
        return bool(setting), None
    if setting is None:
        return device.type == "cuda", None
    if setting and device.type != "cuda":
        return False, f"CUDA graphs need a CUDA device; this run is on {device.type}"
    return bool(setting), None


def _backend() -> Backend:
    return _override if _override is not None else _CudaBackend()


class StepGraphs:
    """The captured steps of one :class:`~faccent_widget.core.engine.AccentuationRun` (see the module
    docstring). ``step(regularise, weight)`` runs the run's next step through its graph, warming up
    and capturing on first use, or returns None when the engine should run it eagerly."""

    def __init__(self, run: AccentuationRun) -> None:
        self.run = run
        self.backend = _backend()
        #: why the run stopped using graphs (one line), or None while they are in use
        self.reason: str | None = None
        self.graphs: dict[tuple[bool, bool], CapturedStep] = {}
        #: the kinds captured during the run (kept after its last step, when the graphs are released)
        self.kinds: set[tuple[bool, bool]] = set()
        self.replays = 0
        device, b = run.device, run.b
        #: objective and distance of every step, written by the replays: (steps, 2, B)
        self.rows = torch.zeros(run.config.steps, 2, b, device=device)
        self._row = torch.zeros(1, dtype=torch.long, device=device)  # the next row, advanced in the graph
        self._row_in_step = False  # the device counter equals the run's step count
        self._weight = torch.zeros((), device=device)  # the attribution weight of a sampled step

    def step(self, regularise: bool, weight: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """(image, objective, distance) of the run's next step, or None: run it eagerly."""
        if self.reason is not None:
            return None
        run = self.run
        if run.generator.device.type != run.device.type:  # e.g. a CPU stream swapped in to compare devices
            where = f"the run's random generator is on {run.generator.device.type}, the model on {run.device.type}"
            self.fall_back(where)
            return None
        kind = (regularise, weight > 0)
        last = run.step_count + 1 >= run.config.steps
        graph = self.graphs.get(kind)
        if graph is None:
            if last:  # a graph captured now would never be replayed
                self.graphs.clear()
                return None
            return self._warm_up_and_capture(kind, weight)
        if not self._row_in_step:
            self._row.fill_(run.step_count)
            self._row_in_step = True
        if kind[1]:
            self._weight.fill_(weight)
        graph.replay()
        self.replays += 1
        i = run.step_count
        image = graph.output.clone()
        if last:  # the run's last step: its graphs' memory pools go back now
            self.graphs.clear()
        return image, self.rows[i, 0], self.rows[i, 1]

    def _warm_up_and_capture(
        self, kind: tuple[bool, bool], weight: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """This step runs eagerly as the kind's warm-up, under the host-sync probe; then the kind is captured
        (capturing runs nothing). None when the probe fired: the engine reruns the step eagerly, with the
        random stream rewound."""
        run = self.run
        self._row_in_step = False
        rewind = run.generator.get_state()
        try:
            with self.backend.warm_up(run.device):
                out = run.compute_step(kind[0], False, weight)
        except RuntimeError as error:
            run.generator.set_state(rewind)
            self.fall_back(str(error))
            return None
        rewind = run.generator.get_state()
        try:
            self.graphs[kind] = self.backend.capture(self._body(kind), run.generator)
            self.kinds.add(kind)
        except Exception as error:  # noqa: BLE001 - any capture failure: the run goes on eagerly
            if run.device.type == "cuda":
                torch.cuda.synchronize(run.device)
            run.generator.set_state(rewind)
            self.fall_back(f"capture failed: {error}")
        return out

    def _body(self, kind: tuple[bool, bool]) -> StepBody:
        weight: torch.Tensor | int = self._weight if kind[1] else 0

        def body() -> torch.Tensor:
            image, objective, distance = self.run.compute_step(kind[0], False, weight, cache_casts=False)
            self.rows.index_copy_(0, self._row, torch.stack([objective, distance])[None])
            self._row.add_(1)
            return image

        return body

    def fall_back(self, reason: str) -> None:
        """Stop using graphs for this run (the remaining steps run eagerly) and say why, once."""
        first_line = reason.strip().splitlines()[0] if reason.strip() else "unknown error"
        self.reason = first_line
        self.graphs.clear()
        message = f"CUDA graphs off for this run ({first_line}); its steps run eagerly"
        warnings.warn(message, RuntimeWarning, stacklevel=4)
