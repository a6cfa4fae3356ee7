"""``triage``: predict a labelled dataset, accentuate every mistake toward its predicted and true class.

The run, per process (one process, or one per device under ``torchrun``):

1. **Predict** this process's share of the items (item ``i`` → rank ``i % world_size``) in batches:
   each image resized to the model's square input, as ``Model.predict`` does, so the numbers match
   what ``FaccentWidget`` shows for the same image. One JSON file per batch.
2. **Accentuate** the mistakes (predicted class ≠ true class). After a barrier every process reads all
   predictions; the mistakes, in dataset order, are dealt out the same way (mistake ``j`` → rank
   ``j % world_size``), so the work is balanced even when mistakes cluster. Each seed is resized so
   its shorter side is the canvas and centre-cropped so its longer side is a multiple of canvas/8
   (at most 2 × canvas); seeds of the same shape are accentuated together, toward the predicted and
   the true class, in ONE batched run of up to ``batch_size`` images (2 × ``batch_size`` items). Raw
   Grad-CAM maps (at the Grad-CAM layer's resolution) of both targets are stored with each item.
3. **Merge**: after a barrier, rank 0 fits one collective normaliser on all stored Grad-CAM maps (the
   masks are comparable across the whole report), ranks the mistakes and writes ``index.json``.

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
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch

from . import distributed
from .data import TriageImageError, TriageSample, as_triage_data, check_limit
from .decode import UNREADABLE, reason
from .report import RANKINGS, TriageReport, build_index
from .store import TriageSettingsMismatch, TriageStore, TriageStoreLocked

__all__ = ["ON_ERROR", "TARGETS", "ProgressCallback", "canvas_seed", "triage"]

#: The accentuation targets a triage can ask for, per mistake.
TARGETS = ("predicted", "true")

#: What a triage does with an unreadable image or folder: skip and list it, or stop.
ON_ERROR = ("skip", "raise")

#: ``progress(stage, done, total)``; ``stage`` is "predict", "accentuate" or "merge" (this process's share).
ProgressCallback = Callable[[str, int, int], None]

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
)


def canvas_seed(image: torch.Tensor, canvas: int) -> torch.Tensor:
    """The seed a triage accentuates: shorter side resized to ``canvas``, longer side centre-cropped to
    a multiple of ``max(8, canvas // 8)`` pixels and at most ``2 · canvas`` (so seeds of similar aspect
    ratio share a shape and can be batched, with at most a sliver cropped)."""
    from . import _lib as fw

    img = fw.load_image(image, size=int(canvas))
    h, w = img.shape[-2:]
    q = max(8, int(canvas) // 8)
    th = h if h <= w else max(int(canvas), min(h // q * q, 2 * int(canvas)))
    tw = w if w <= h else max(int(canvas), min(w // q * q, 2 * int(canvas)))
    top, left = (h - th) // 2, (w - tw) // 2
    return img[:, top : top + th, left : left + tw].contiguous()


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


def _adapter(model: Any, device: torch.device | None) -> Any:
    """A ``fw.Model`` on ``device`` (a private copy when the given model lives elsewhere; never moved)."""
    from . import _lib as fw

    if isinstance(model, str):
        return fw.load_model(model, device=device)
    if not isinstance(model, fw.Model):
        if not isinstance(model, torch.nn.Module):
            raise TypeError(
                f"model must be a faccent_widget.Model, an nn.Module or a model name, got {type(model).__name__}"
            )
        return fw.load_model(model, device=device)
    return fw.as_model(model, device=device)  # a private copy when the model lives elsewhere


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


def _resolved_settings(adapter: Any, preset: str | None, seed: int, settings: Mapping[str, Any]) -> dict[str, Any]:
    """The engine settings a run will use (resolved through ``fw.start_run`` on a tiny probe image)."""
    from . import _lib as fw

    probe = torch.full((3, 32, 32), 0.5)
    run = fw.start_run(adapter, probe, 0, preset=preset, seed=seed, **settings)
    cfg = run.config
    values = dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else dict(cfg)
    values.pop("snapshot_every", None)  # snapshots do not change the result
    values["reg_layer"] = run.reg_layer
    values["lam"] = float(settings["lam"]) if settings.get("lam") is not None else float(fw.DEFAULT_LAMBDA)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in values.items()}


def _fingerprint(
    adapter: Any, engine: Mapping[str, Any], targets: Sequence[str], gradcam_layer: str | None
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


def _chunks(items: Sequence[Any], n: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), n):
        yield items[start : start + n]


def _prediction_row(sample: TriageSample, probs: torch.Tensor, labels: Sequence[str]) -> dict[str, Any]:
    top_p, top_i = probs.topk(min(5, probs.numel()))
    pred = int(top_i[0])
    p_true = float(probs[sample.label])
    return {
        "id": sample.item_id,
        "index": sample.index,
        "key": sample.key,
        "true": sample.label,
        "true_label": labels[sample.label],
        "predicted": pred,
        "predicted_label": labels[pred],
        "p_true": p_true,
        "p_predicted": float(top_p[0]),
        "true_rank": int((probs > p_true).sum()) + 1,
        "top5": [[int(i), labels[int(i)], float(p)] for p, i in zip(top_p, top_i)],
    }


def _skipped(sample: TriageSample, why: str) -> dict[str, Any]:
    return {"index": sample.index, "key": sample.key, "reason": why}


def _load_or_reason(
    sample: TriageSample, min_side: int, fit: Callable[[torch.Tensor], torch.Tensor], strict: bool
) -> torch.Tensor | str:
    """``fit(sample.load(min_side))``, or the reason it could not be read (raised when ``strict``)."""
    try:
        return fit(sample.load(min_side))
    except UNREADABLE as exc:
        why = reason(exc)
        if strict:
            raise TriageImageError(f"cannot read image {sample.key!r}: {why}") from exc
        return why


def _predict(
    adapter: Any,
    samples: Sequence[TriageSample],
    store: TriageStore,
    rank: int,
    run_id: str,
    batch: int,
    pool: ThreadPoolExecutor,
    progress: ProgressCallback | None,
    strict: bool,
) -> tuple[int, list[dict[str, Any]]]:
    """Predict ``samples`` in batches; returns (images predicted, skipped files)."""
    from . import _lib as fw

    side = int(adapter.input_size)
    done = 0
    skipped: list[dict[str, Any]] = []
    for chunk in _chunks(samples, batch):
        loaded = list(
            pool.map(lambda s: _load_or_reason(s, side, lambda t: fw.load_image(t, size=(side, side)), strict), chunk)
        )
        good = [(s, img) for s, img in zip(chunk, loaded) if isinstance(img, torch.Tensor)]
        skipped += [_skipped(s, why) for s, why in zip(chunk, loaded) if isinstance(why, str)]
        if good:
            with torch.no_grad():
                probs = adapter.logits(torch.stack([img for _, img in good])).float().softmax(-1).cpu()
            rows = [_prediction_row(s, probs[i], adapter.labels) for i, (s, _) in enumerate(good)]
            store.write_predictions(rank, run_id, rows)
        done += len(good)
        if progress is not None:
            progress("predict", done + len(skipped), len(samples))
    return done, skipped


def _prefetch(pool: ThreadPoolExecutor, fn: Callable[[Any], Any], items: Iterable[Any], ahead: int) -> Iterator[Any]:
    """``map(fn, items)`` in the pool's threads, in order, with at most ``ahead`` results pending
    (``Executor.map`` would submit everything at once and hold every loaded image in memory)."""
    pending: deque[Future[Any]] = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) > ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _round_map(m: torch.Tensor) -> list[list[float]]:
    return [[float(f"{v:.6g}") for v in row] for row in m.tolist()]


def _accentuate_group(
    adapter: Any,
    group: list[tuple[dict[str, Any], torch.Tensor]],
    targets: Sequence[str],
    engine_kwargs: Mapping[str, Any],
    gradcam_layer: str | None,
    store: TriageStore,
    run_id: str,
    rank: int,
) -> int:
    from . import _lib as fw

    t0 = time.perf_counter()
    seeds = [seed for _, seed in group for _ in targets]
    classes = [int(row[t]) for row, _ in group for t in targets]
    results = fw.accentuate(adapter, seeds, classes, **engine_kwargs)
    seconds = (time.perf_counter() - t0) / len(group)
    written = 0
    for g, (row, seed) in enumerate(group):
        files = {"seed.png": fw.to_png_bytes(seed)}
        scores: dict[str, Any] = {}
        maps: dict[str, Any] = {}
        for k, t in enumerate(targets):
            res = results[g * len(targets) + k]
            files[f"{t}.png"] = fw.to_png_bytes(res.image)
            scores[t] = {
                "class": int(row[t]),
                "label": adapter.labels[int(row[t])],
                "seed_prob": res.seed_score.prob,
                "prob": res.score.prob,
                "seed_logit": res.seed_score.value,
                "logit": res.score.value,
                "distance": res.distance,
                "lam_effective": res.lam_effective,
            }
            cam = fw.gradcam(adapter, [seed], int(row[t]), layer=gradcam_layer, upsample=False)[0]
            maps[t] = _round_map(cam)
        item = {
            **row,
            "targets": list(targets),
            "scores": scores,
            "gradcam": maps,
            "canvas": [int(seed.shape[-2]), int(seed.shape[-1])],
            "run_id": run_id,
            "rank": rank,
            "finished": time.time(),
            "seconds": seconds,
        }
        written += int(store.write_item(str(row["id"]), item, files))
    return written


def _accentuate(
    adapter: Any,
    rows: Sequence[dict[str, Any]],
    samples: Mapping[str, TriageSample],
    targets: Sequence[str],
    engine_kwargs: Mapping[str, Any],
    canvas: int,
    batch: int,
    gradcam_layer: str | None,
    store: TriageStore,
    run_id: str,
    rank: int,
    pool: ThreadPoolExecutor,
    progress: ProgressCallback | None,
    strict: bool,
) -> tuple[int, list[dict[str, Any]]]:
    """Accentuate ``rows`` (mistakes) in groups of equal seed shape; flush a group when it is full.
    Returns (mistakes accentuated, seeds that could not be read)."""
    buckets: dict[tuple[int, int], list[tuple[dict[str, Any], torch.Tensor]]] = {}
    done = 0

    def flush(shape: tuple[int, int]) -> None:
        nonlocal done
        group = buckets.pop(shape)
        _accentuate_group(adapter, group, targets, engine_kwargs, gradcam_layer, store, run_id, rank)
        done += len(group)
        if progress is not None:
            progress("accentuate", done, len(rows))

    skipped: list[dict[str, Any]] = []

    def load(row: dict[str, Any]) -> tuple[dict[str, Any], torch.Tensor | str]:
        return row, _load_or_reason(samples[row["id"]], canvas, lambda t: canvas_seed(t, canvas), strict)

    for row, seed in _prefetch(pool, load, rows, 2 * batch):
        if isinstance(seed, str):
            skipped.append(_skipped(samples[row["id"]], seed))
            continue
        shape = (int(seed.shape[-2]), int(seed.shape[-1]))
        buckets.setdefault(shape, []).append((row, seed))
        if len(buckets[shape]) >= batch:
            flush(shape)
    for shape in sorted(buckets):
        flush(shape)
    return done, skipped


def triage(
    model: Any,
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
            ``param``, ``noise``, ``balance``, ``crop_range``, ``autocast``) as keyword arguments.
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
    strict = on_error == "raise"
    names = _check_targets(targets)
    check_limit(limit)
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
        data_ = as_triage_data(data, adapter.labels, class_map)
        if strict and data_.problems:
            p = data_.problems[0]
            raise TriageImageError(f"cannot read {p.key!r}: {p.reason}")
        selected = data_.select(limit)
        engine = _resolved_settings(adapter, preset, seed, settings)
        fingerprint = _fingerprint(adapter, engine, names, gradcam_layer)
        tmp = tempfile.TemporaryDirectory(prefix="faccent-triage-") if out is None else None
        store = TriageStore(tmp.name if tmp is not None else out)  # type: ignore[arg-type]  # out is set when tmp is None
        with contextlib.ExitStack() as held:
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
            report = _run_stages(
                adapter, store, selected, data_.problems, names, engine, settings, fingerprint, ctx, rank_by,
                seed, batch_size, predict_batch_size, gradcam_layer, workers, progress, strict, t_start,
            )  # fmt: skip
        report._tmp = tmp
        return report
    finally:
        ctx.close()


def _run_stages(
    adapter: Any,
    store: TriageStore,
    selected: Sequence[TriageSample],
    problems: Sequence[Any],
    names: Sequence[str],
    engine: Mapping[str, Any],
    settings: Mapping[str, Any],
    fingerprint: Mapping[str, Any],
    ctx: distributed.DistContext,
    rank_by: str,
    seed: int,
    batch_size: int | None,
    predict_batch_size: int | None,
    gradcam_layer: str | None,
    workers: int | None,
    progress: ProgressCallback | None,
    strict: bool,
    t_start: float,
) -> TriageReport:
    cuda = adapter.device.type == "cuda"
    pbs = predict_batch_size or (128 if cuda else 32)
    abs_ = batch_size or (16 if cuda else 4)
    run_id = uuid.uuid4().hex[:12]
    n_workers = workers or max(1, min(4, os.cpu_count() or 1))
    by_id = {s.item_id: s for s in selected}
    with ThreadPoolExecutor(max_workers=n_workers) as pool:
        have = store.predictions()
        mine = [s for s in distributed.shard(selected, ctx.rank, ctx.world_size) if s.item_id not in have]
        error = None
        try:
            predicted, skipped = _predict(adapter, mine, store, ctx.rank, run_id, pbs, pool, progress, strict)
        except TriageImageError as exc:
            if not ctx.distributed:
                raise
            error, predicted, skipped = str(exc), 0, []
        ctx.agree(error)
        skipped = [row for rows in ctx.gather(skipped) for row in rows]
        ctx.barrier()
        preds = store.predictions()
        unread = {int(r["index"]) for r in skipped}
        missing = [s.key for s in selected if s.item_id not in preds and s.index not in unread]
        if missing:
            raise RuntimeError(
                f"{len(missing)} item(s) have no prediction after the prediction pass, e.g. {missing[0]!r}"
            )
        rows = [
            {**preds[s.item_id], "index": s.index, "key": s.key} for s in selected if s.item_id in preds
        ]  # stored rows, at this run's positions
        mistakes = [r for r in rows if r["predicted"] != r["true"]]
        done = store.done()
        todo = [r for r in distributed.shard(mistakes, ctx.rank, ctx.world_size) if r["id"] not in done]
        engine_kwargs = {
            **settings,
            "preset": engine["preset"],
            "seed": seed,
            "lam": engine["lam"],
            "reg_layer": engine["reg_layer"],
        }
        try:
            accentuated, unseeded = _accentuate(
                adapter, todo, by_id, names, engine_kwargs, int(engine["canvas"]), abs_, gradcam_layer, store,
                run_id, ctx.rank, pool, progress, strict,
            )  # fmt: skip
            error = None
        except TriageImageError as exc:
            if not ctx.distributed:
                raise
            error, accentuated, unseeded = str(exc), 0, []
        ctx.agree(error)
    counts = ctx.gather({"predicted": predicted, "accentuated": accentuated, "skipped": unseeded})
    skipped += [row for c in counts for row in c["skipped"]]
    skipped = [*({"key": p.key, "reason": p.reason} for p in problems), *sorted(skipped, key=lambda r: r["index"])]
    ctx.barrier()
    if ctx.is_main:
        if progress is not None:
            progress("merge", 0, 1)
        run = {
            "run_id": run_id,
            "seconds": time.perf_counter() - t_start,
            "world_size": ctx.world_size,
            "predicted": sum(c["predicted"] for c in counts),
            "accentuated": sum(c["accentuated"] for c in counts),
            "skipped": len(skipped),
        }
        store.write_index(build_index(store, rows, skipped, rank_by, fingerprint, run))
        if progress is not None:
            progress("merge", 1, 1)
    ctx.barrier()
    return TriageReport.load(store.root, model=adapter)
