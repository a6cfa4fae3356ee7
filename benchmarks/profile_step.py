"""Where the time of one engine step goes, part by part of the recipe, from ``torch.profiler``.

The parts of a step are marked from the outside (the engine itself carries no profiling code): while
profiling, the functions the step calls — ``sample_boxes``/``sample_noise``, the parameterization's
``image()``, the crops (``CropPlan``; ``crop_boxes``/``add_noise`` at older commits),
``Model.features`` (with grad: the candidate; without: the seed), the losses,
``torch.autograd.grad``/``Tensor.backward`` and the optimiser's ``step`` — are wrapped in
``record_function`` ranges. Backward work is charged to the forward part that created it (autograd
nodes carry the sequence number of the forward op that made them), so "backward: crops" is the crop
op's backward and "backward: model" the network's. The same script runs at any commit whose engine
calls these functions (for a before/after table, run it in a worktree of the older commit).

    python benchmarks/profile_step.py                       # preview and paper, Lite0 and GoogLeNet
    python benchmarks/profile_step.py --presets preview --steps 3

Read shares, not absolute times: these machines are noisy.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import torch
from _models import load_benchmark_model  # benchmarks/_models.py: GoogLeNet with trained-scale activations
from torch.profiler import ProfilerActivity, profile, record_function

import faccent_widget as fw
from faccent_widget.core import engine as engine_module

PREFIX = "part:"
FORWARD_PARTS = ["sampling", "image", "crops", "model forward", "seed forward", "losses", "optimiser"]
BACKWARD_PARTS = ["backward: model", "backward: crops", "backward: image", "backward: losses", "backward: other"]
PARTS = FORWARD_PARTS + BACKWARD_PARTS + ["other"]


def _ranged(name: str | Callable[[], str], fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with record_function(PREFIX + (name() if callable(name) else name)):
            return fn(*args, **kwargs)

    return wrapper


@contextlib.contextmanager
def marked(run: Any) -> Iterator[None]:
    """Wrap the functions one step calls in named ranges, and unwrap them afterwards."""
    names = ("sample_boxes", "sample_noise", "crop_boxes", "add_noise", "channel_distance")
    saved_module = {k: getattr(engine_module, k) for k in names if hasattr(engine_module, k)}
    plan = getattr(engine_module, "CropPlan", None)  # the crops since the CPU's sparse products
    saved_call = plan.__call__ if plan is not None else None
    saved_grad, saved_backward = torch.autograd.grad, torch.Tensor.backward
    try:
        for k in ("sample_boxes", "sample_noise"):
            setattr(engine_module, k, _ranged("sampling", saved_module[k]))
        for k in ("crop_boxes", "add_noise"):
            if k in saved_module:
                setattr(engine_module, k, _ranged("crops", saved_module[k]))
        if plan is not None:
            plan.__call__ = _ranged("crops", saved_call)
        engine_module.channel_distance = _ranged("losses", saved_module["channel_distance"])
        run.objective_values = _ranged("losses", run.objective_values)
        run.param.image = _ranged("image", run.param.image)
        features = run.model.features
        run.model.features = _ranged(lambda: "model forward" if torch.is_grad_enabled() else "seed forward", features)
        run.optimizer.step = _ranged("optimiser", run.optimizer.step)
        torch.autograd.grad = _ranged("backward", saved_grad)
        torch.Tensor.backward = _ranged("backward", saved_backward)  # type: ignore[method-assign]
        yield
    finally:
        for k, v in saved_module.items():
            setattr(engine_module, k, v)
        if plan is not None:
            plan.__call__ = saved_call
        torch.autograd.grad = saved_grad
        torch.Tensor.backward = saved_backward  # type: ignore[method-assign]
        for attr in ("objective_values",):
            run.__dict__.pop(attr, None)
        run.param.__dict__.pop("image", None)
        run.model.__dict__.pop("features", None)
        run.optimizer.__dict__.pop("step", None)


def _inside(evt: Any, ranges: list[Any]) -> Any:
    start, end = evt.time_range.start, evt.time_range.end
    for r in ranges:
        if r.thread == evt.thread and r.time_range.start <= start and end <= r.time_range.end:
            return r
    return None


def split(events: list[Any], steps: int) -> dict[str, float]:
    """ms per step for each part (see the module docstring)."""
    ranges = [e for e in events if e.name.startswith(PREFIX)]
    forward_ranges = [r for r in ranges if r.name != PREFIX + "backward"]
    step_ranges = [e for e in events if e.name == "step"]
    parts: dict[str, float] = defaultdict(float)
    for r in forward_ranges:
        if _inside(r, [o for o in forward_ranges if o is not r]) is None:  # outermost ranges only
            parts[r.name[len(PREFIX) :]] += r.cpu_time_total
    # which forward part created each autograd node
    creator: dict[int, str] = {}
    for e in events:
        if e.sequence_nr >= 0 and not e.name.startswith("autograd::") and not e.is_async:
            r = _inside(e, forward_ranges)
            if r is not None and e.sequence_nr not in creator:
                creator[e.sequence_nr] = r.name[len(PREFIX) :]
    for e in events:
        if e.name.startswith("autograd::engine::evaluate_function:") and e.sequence_nr >= 0:
            part = creator.get(e.sequence_nr, "other")
            part = {"model forward": "model", "seed forward": "model"}.get(part, part)
            key = f"backward: {part}" if f"backward: {part}" in BACKWARD_PARTS else "backward: other"
            parts[key] += e.cpu_time_total - sum(
                c.cpu_time_total for c in e.cpu_children if c.name.startswith("autograd::engine")
            )
    total = sum(r.cpu_time_total for r in step_ranges)
    parts["other"] = total - sum(parts.values())
    out = {k: v / 1000.0 / steps for k, v in parts.items()}
    out["total"] = total / 1000.0 / steps
    return out


def profile_one(model: fw.Model, image: torch.Tensor, preset: str, steps: int) -> dict[str, float]:
    target = model.predict(image, k=2)[1].index
    run = fw.start_run(model, image, target, preset=preset, steps=steps + 3, seed=0)
    run.step()
    run.step()  # warm-up, and past the balance step (step 1)
    with marked(run), profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            with record_function("step"):
                run.step()
    return split(list(prof.events()), steps)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=["preview", "paper"])
    p.add_argument("--models", nargs="+", default=["efficientnet_lite0", "googlenet"])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--markdown", action="store_true", help="print a markdown table (ms and share per part)")
    args = p.parse_args()
    image = fw.sample_image("chelsea")
    rows = []
    for name in args.models:
        model = load_benchmark_model(name)
        for preset in args.presets:
            parts = profile_one(model, image, preset, args.steps)
            rows.append((model.name.split(" ")[0], preset, parts))
            if not args.markdown:
                total = parts["total"]
                print(f"{model.name} {preset}: {total:.0f} ms/step (profiled)")
                for k in PARTS:
                    if parts.get(k, 0.0):
                        print(f"  {k:<18s} {parts[k]:8.1f} ms  {100 * parts[k] / total:5.1f} %")
    if args.markdown:
        print("| part | " + " | ".join(f"{m} {p}" for m, p, _ in rows) + " |")
        print("|---|" + "---:|" * len(rows))
        for k in PARTS + ["total"]:
            cells = [f"{p.get(k, 0.0):.0f} ms ({100 * p.get(k, 0.0) / p['total']:.0f} %)" for *_, p in rows]
            print(f"| {k} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
