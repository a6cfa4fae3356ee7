"""``triage``: predict a labelled dataset, accentuate every mistake toward its predicted and true class.

The run, per process (one process, or one per device under ``torchrun``):

1. **Predict** this process's share of the items (item ``i`` → rank ``i % world_size``) in batches:
   each image resized to the model's square input, as ``Model.predict`` does, so the numbers match
   what ``FaccentWidget`` shows for the same image. One JSON file per batch, and next to it the
   batch's probabilities and penultimate features (same forward pass, float16).
2. **Accentuate** the mistakes (predicted class ≠ true class). After a barrier every process reads all
   predictions; the mistakes, in dataset order, are dealt out the same way (mistake ``j`` → rank
   ``j % world_size``), so the work is balanced even when mistakes cluster. Each seed is resized so
   its shorter side is the canvas and centre-cropped so its longer side is a multiple of canvas/8
   (at most 2 × canvas); seeds of the same shape are accentuated together, toward the predicted and
   the true class, in ONE batched run of up to ``batch_size`` images (2 × ``batch_size`` items). Raw
   Grad-CAM maps (at the Grad-CAM layer's resolution) of both targets are stored with each item.
3. **Merge**: after a barrier, rank 0 fits one collective normaliser on all stored Grad-CAM maps (the
   masks are comparable across the whole report), scores every label (:mod:`.labels`: "likely label
   error"), finds each mistake's natural exemplars (:mod:`.exemplars`), ranks the mistakes and writes
   ``index.json``.

Everything goes through the resumable store (:mod:`faccent_widget.triage.store`): a rerun after an
interruption predicts and accentuates only what is missing, and a rerun after files were added,
removed or repaired only what changed (results are stored by item id, see :mod:`.data`). The random
seed defaults to 0, so a rerun computes the same crops. The store's lock refuses a second run into the
same folder while one is writing.

An image that cannot be read (truncated, not an image, too large, no permission) is skipped and
listed with its reason in the summary, the report and ``index.json``, as are folders that cannot be
scanned; ``on_error="raise"`` makes either fatal (:class:`~.data.TriageImageError`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from torch import nn

from ..core.config import DEFAULT_LAMBDA, check_lambda, resolve_config, resolve_run_config
from ..core.model import Model, as_model
from ..zoo import load_model
from . import distributed
from .data import TriageImageError, as_triage_data, check_limit
from .exemplars import feature_layer
from .labels import LABEL_ISSUE_METHODS, require_cleanlab
from .report import RANKINGS, TriageReport
from .stages import ProgressCallback, TriageJob, accentuate_all, canvas_seed, merge, predict_all
from .store import TriageSettingsMismatch, TriageStore, TriageStoreLocked

__all__ = ["ON_ERROR", "TARGETS", "ProgressCallback", "canvas_seed", "triage"]

#: The accentuation targets a triage can ask for, per mistake.
TARGETS = ("predicted", "true")

#: What a triage does with an unreadable image or folder: skip and list it, or stop.
ON_ERROR = ("skip", "raise")

_SETTING_NAMES = (
    "lam",
    "reg_layer",
    "steps",
    "n_crops",
    "crop_range",
    "input_size",
    "canvas",
    "lr",
    "param",
    "noise",
    "balance",
    "autocast",
    "cuda_graphs",
)


def _check_targets(targets: Sequence[str] | str) -> tuple[str, ...]:
    names = (targets,) if isinstance(targets, str) else tuple(targets)
    bad = [t for t in names if t not in TARGETS]
    if not names or bad or len(set(names)) != len(names):
        raise ValueError(f"targets must be a non-empty subset of {TARGETS} without repeats, got {targets!r}")
    return tuple(t for t in TARGETS if t in names)


def _check_device(device: str | torch.device | None) -> torch.device | None:
    """``device`` as a ``torch.device`` this machine has, or a one-line ``ValueError`` saying why not."""
    if device is None:
        return None
    accepted = "cpu, cuda, cuda:N or mps"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {device!r}; use {accepted}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r}: CUDA is not available on this machine; use cpu")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ValueError(
                f"device {str(device)!r}: this machine has {count} CUDA device(s), cuda:0…cuda:{count - 1}"
            )
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"device {str(device)!r}: MPS is not available on this machine; use cpu")
    elif dev.type != "cpu":
        raise ValueError(f"device {str(device)!r} is not one triage runs on; use {accepted}")
    return dev


def _adapter(model: Model | nn.Module | str, device: torch.device | None) -> Model:
    """A :class:`Model` on ``device`` (a private copy when the given model lives elsewhere; never moved)."""
    if isinstance(model, str):
        return load_model(model, device=device)
    if isinstance(model, Model):
        return as_model(model, device=device)  # a private copy when the model lives elsewhere
    if isinstance(model, nn.Module):
        return load_model(model, device=device)
    raise TypeError(f"model must be a faccent_widget.Model, an nn.Module or a model name, got {type(model).__name__}")


def _weights_digest(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        h.update(name.encode())
        if isinstance(t, torch.Tensor):
            data = t.detach().to("cpu").contiguous()
            h.update(str(data.dtype).encode() + str(tuple(data.shape)).encode())
            if data.numel():
                h.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _resolved_settings(adapter: Model, preset: str | None, seed: int, settings: Mapping[str, Any]) -> dict[str, Any]:
    """The engine settings a run will use: the preset and overrides resolved for this model
    (``resolve_run_config``: crop size and reg layer), without building a run."""
    overrides = {k: v for k, v in settings.items() if k != "lam"}
    lam = check_lambda(settings["lam"]) if settings.get("lam") is not None else float(DEFAULT_LAMBDA)
    cfg = resolve_run_config(adapter, resolve_config(preset, adapter.device, seed=seed, **overrides))
    values = dataclasses.asdict(cfg)
    values.pop("snapshot_every", None)  # snapshots do not change the result
    values.pop("cuda_graphs", None)  # nor do CUDA graphs (the same steps, replayed): stores made before them resume
    values["lam"] = float(lam)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in values.items()}


def _fingerprint(
    adapter: Model, engine: Mapping[str, Any], targets: Sequence[str], gradcam_layer: str | None
) -> dict[str, Any]:
    """What the stored results depend on (the images are not part of it: they are stored by item id)."""
    return {
        "model": {
            "name": adapter.name,
            "weights_sha256": _weights_digest(adapter.module),
            "labels_sha256": hashlib.sha256("\n".join(adapter.labels).encode()).hexdigest(),
            "mean": list(adapter.mean),
            "std": list(adapter.std),
            "input_size": int(adapter.input_size),
        },
        "engine": dict(engine),
        "targets": list(targets),
        "gradcam_layer": gradcam_layer or "default",
    }


def _open_store(store: TriageStore, fingerprint: Mapping[str, Any], ctx: distributed.DistContext, held: Any) -> None:
    """Rank 0 takes the store's lock (kept by ``held``, an ``ExitStack``), creates or checks the store and
    removes temporaries of killed runs; a failure there stops every process (``RankError``)."""
    error = None
    if ctx.is_main:
        try:
            held.enter_context(store.locked())
            store.open(fingerprint)
            store.remove_temporaries()
        except (TriageSettingsMismatch, TriageStoreLocked, FileExistsError, PermissionError) as exc:
            if not ctx.distributed:
                raise
            error = f"{type(exc).__name__}: {exc}"
    ctx.agree(error)
    if not ctx.is_main:
        store.check(fingerprint)


def triage(
    model: Model | nn.Module | str,
    data: Any,
    *,
    out: str | os.PathLike | None = None,
    limit: int | None = None,
    targets: Sequence[str] | str = TARGETS,
    preset: str | None = None,
    batch_size: int | None = None,
    predict_batch_size: int | None = None,
    class_map: Mapping[str, Any] | str | os.PathLike | None = None,
    rank_by: str = "margin",
    gradcam_layer: str | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    workers: int | None = None,
    progress: ProgressCallback | None = None,
    on_error: str = "skip",
    label_issues: str = "auto",
    exemplars: int = 3,
    accentuate: bool = True,
    **settings: Any,
) -> TriageReport:
    """Find a model's mistakes in labelled images and accentuate each toward its predicted and true class.

    Args:
        model: a :class:`faccent_widget.Model`, a bare classifier ``nn.Module``, or a model name for
            ``load_model``. It is never modified (another device gets a private copy).
        data: an ``ImageFolder``-style folder (``root/<class>/<image>``; class folders mapped to the
            model's labels by name, ImageNet WordNet id, or ``class_map``), a list of
            ``(image, label)`` pairs, or a ``Dataset`` returning ``(image, label)``.
        out: the output folder (the resumable store; see :mod:`faccent_widget.triage.store`). A rerun
            with the same settings resumes; other settings are refused. ``None``: a temporary folder
            that lives as long as the report (single process only).
        limit: triage only this many items, spread evenly over the dataset (``None``: all).
        targets: which classes to accentuate each mistake toward: ``("predicted", "true")`` or one of them.
        preset: engine preset (a name from ``fw.PRESETS``; default by device); other engine settings
            (``lam``, ``steps``, ``n_crops``, ``input_size``, ``canvas``, ``reg_layer``, ``lr``,
            ``param``, ``noise``, ``balance``, ``crop_range``, ``autocast``, ``cuda_graphs``) as keyword arguments.
        batch_size: mistakes accentuated together (each toward every target, so 2 × as many batch
            items); default 4 on a CPU, 16 on a GPU.
        predict_batch_size: images per prediction batch (default 32 on a CPU, 128 on a GPU).
        class_map: folder name → model label/index (a mapping or a file), for folders only.
        rank_by: order of the report's mistakes: "margin" (default: p(predicted) − p(true), largest
            first), "confidence" (p(predicted), largest first), "true_rank" (rank of the true class
            among all classes, worst first) or "index" (dataset order); ties go by dataset order.
        gradcam_layer: layer for Grad-CAM (default: the model's last spatial layer).
        seed: random seed of the crops (fixed, so reruns and resumes are reproducible).
        device: run here (default: the model's device; under ``torchrun`` ``cuda:LOCAL_RANK`` or the CPU).
        workers: threads that load images (default ``min(4, cpu_count)``).
        progress: ``progress(stage, done, total)`` after every batch (stage "predict" or "accentuate").
        on_error: ``"skip"`` (default): an image that cannot be read (truncated, not an image, over
            the pixel cap, no permission) or a folder that cannot be scanned is skipped and listed
            with its reason in ``report.skipped``, the HTML report and the store; ``"raise"``: stop
            with :class:`~faccent_widget.triage.data.TriageImageError` naming it.
        label_issues: how each item's label-issue score and "likely label error" flag are computed
            from the stored probabilities (see :mod:`faccent_widget.triage.labels`): ``"auto"``
            (cleanlab's confident learning when installed, else the self-confidence fallback with a
            warning), ``"cleanlab"`` (``ImportError`` naming ``pip install 'faccent-widget[label-issues]'``
            when missing), ``"self-confidence"`` or ``"off"``. Out-of-sample probabilities assumed:
            meaningful for your own validation data, under-reported on the model's training images.
        exemplars: per mistake, this many nearest correctly classified images of the predicted and
            of the true class (cosine similarity of the model's penultimate features; 0: none).
        accentuate: ``False``: predict, score labels and find exemplars only (no accentuation; the
            report lists no cards, ``summary["missing"]`` counts the mistakes); a later run with
            ``True`` into the same folder adds the accentuations.

    Returns:
        A :class:`TriageReport` of the mistakes, ranked by ``rank_by`` (on every process under torchrun).
        The output folder is locked while the run writes it: a second run into it raises
        :class:`~faccent_widget.triage.store.TriageStoreLocked` at once.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) each process takes a deterministic share and rank 0 merges
    the index once all are done; ``out`` is then required and must be a folder all processes share.
    """
    if rank_by not in RANKINGS:
        raise ValueError(f"rank_by must be one of {', '.join(RANKINGS)}, got {rank_by!r}")
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {', '.join(map(repr, ON_ERROR))}, got {on_error!r}")
    names = _check_targets(targets)
    check_limit(limit)
    if label_issues not in LABEL_ISSUE_METHODS:
        raise ValueError(f"label_issues must be one of {', '.join(LABEL_ISSUE_METHODS)}, got {label_issues!r}")
    if label_issues == "cleanlab":
        require_cleanlab()
    if isinstance(exemplars, bool) or not isinstance(exemplars, int) or exemplars < 0:
        raise ValueError(f"exemplars must be an int ≥ 0, got {exemplars!r}")
    if not isinstance(accentuate, bool):
        raise ValueError(f"accentuate must be True or False, got {accentuate!r}")
    unknown = sorted(set(settings) - set(_SETTING_NAMES))
    if unknown:
        raise TypeError(
            f"unknown triage setting(s) {', '.join(unknown)}; engine settings are {', '.join(_SETTING_NAMES)}"
        )
    for what, value in (("batch_size", batch_size), ("predict_batch_size", predict_batch_size), ("workers", workers)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{what} must be a positive int or None, got {value!r}")
    t_start = time.perf_counter()
    ctx = distributed.context(_check_device(device))
    try:
        if ctx.distributed and out is None:
            raise ValueError("under torchrun, pass out= (a folder every process can reach)")
        adapter = _adapter(model, ctx.device)
        dataset = as_triage_data(data, adapter.labels, class_map)
        if on_error == "raise" and dataset.problems:
            first = dataset.problems[0]
            raise TriageImageError(f"cannot read {first.key!r}: {first.reason}")
        selected = dataset.select(limit)
        engine = _resolved_settings(adapter, preset, seed, settings)
        fingerprint = _fingerprint(adapter, engine, names, gradcam_layer)
        tmp = tempfile.TemporaryDirectory(prefix="faccent-triage-") if out is None else None
        store = TriageStore(tmp.name if tmp is not None else out)  # type: ignore[arg-type]  # out is set when tmp is None
        cuda = adapter.device.type == "cuda"
        with contextlib.ExitStack() as held:
            _open_store(store, fingerprint, ctx, held)
            pool = held.enter_context(ThreadPoolExecutor(max_workers=workers or max(1, min(4, os.cpu_count() or 1))))
            job = TriageJob(
                adapter=adapter,
                store=store,
                run_id=uuid.uuid4().hex[:12],
                ctx=ctx,
                pool=pool,
                targets=names,
                engine_kwargs={
                    **settings,
                    "preset": engine["preset"],
                    "seed": seed,
                    "lam": engine["lam"],
                    "reg_layer": engine["reg_layer"],
                },
                canvas=int(engine["canvas"]),
                gradcam_layer=gradcam_layer,
                predict_batch=predict_batch_size or (128 if cuda else 32),
                accentuate_batch=batch_size or (16 if cuda else 4),
                strict=on_error == "raise",
                progress=progress,
                feature_layer=feature_layer(adapter),
                label_method=label_issues,
                exemplars=exemplars,
            )
            rows, skipped, predicted = predict_all(job, selected)
            accentuated, unseeded = accentuate_all(job, rows, selected) if accentuate else (0, [])
            counts = ctx.gather({"predicted": predicted, "accentuated": accentuated, "skipped": unseeded})
            skipped += [row for c in counts for row in c["skipped"]]
            listed = [p.to_dict() for p in dataset.problems] + sorted(skipped, key=lambda r: r["index"])
            ctx.barrier()
            if ctx.is_main:
                merge(job, rows, listed, counts, rank_by, fingerprint, time.perf_counter() - t_start, selected)
            ctx.barrier()
        return TriageReport.load(store.root, model=adapter, keep_alive=tmp)
    finally:
        ctx.close()
