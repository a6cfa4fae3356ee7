"""The stages of one triage process: predict its share, accentuate its share of the mistakes, merge.

:func:`~faccent_widget.triage.run.triage` checks the arguments, opens the store and builds a
:class:`TriageJob` (what every stage needs); then :func:`predict_all`, :func:`accentuate_all` and
:func:`merge` run in turn, with barriers between them under ``torchrun`` (see :mod:`.run` for the
whole picture and :mod:`.distributed` for the sharding).
"""

from __future__ import annotations

import time
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch

from ..accentuate import accentuate
from ..core.attribution import gradcam
from ..core.model import Model
from ..images import load_image, to_png_bytes
from . import distributed
from .data import TriageImageError, TriageSample
from .decode import UNREADABLE, jpeg_thumbnail, reason
from .exemplars import nearest_exemplars, pool
from .labels import CAVEAT, INSTALL_HINT, label_issues
from .report import build_index
from .store import TriageStore

__all__ = ["ProgressCallback", "TriageJob", "accentuate_all", "canvas_seed", "merge", "predict_all"]

T = TypeVar("T")
R = TypeVar("R")

#: ``progress(stage, done, total)``; ``stage`` is "predict", "accentuate" or "merge" (this process's share).
ProgressCallback = Callable[[str, int, int], None]

#: A prediction row (see :func:`_prediction_row`); the item rows add scores, Grad-CAM maps and files.
Row = dict[str, Any]


@dataclass
class TriageJob:
    """What the stages of one triage process share: the model, the store, this run and process, the
    loading threads, the resolved settings and how to report progress."""

    adapter: Model
    store: TriageStore
    run_id: str
    ctx: distributed.DistContext
    pool: ThreadPoolExecutor
    targets: tuple[str, ...]
    engine_kwargs: dict[str, Any]
    canvas: int
    gradcam_layer: str | None
    predict_batch: int
    accentuate_batch: int
    strict: bool
    progress: ProgressCallback | None = None
    feature_layer: str | None = None
    label_method: str = "auto"
    exemplars: int = 3
    #: whether the prediction pass feeds channels-last batches (None: not tried yet; see _predict_batch)
    channels_last: bool | None = None

    @property
    def rank(self) -> int:
        return self.ctx.rank

    def report(self, stage: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(stage, done, total)


def canvas_seed(image: torch.Tensor, canvas: int) -> torch.Tensor:
    """The seed a triage accentuates: shorter side resized to ``canvas``, longer side centre-cropped to
    a multiple of ``max(8, canvas // 8)`` pixels and at most ``2 · canvas`` (so seeds of similar aspect
    ratio share a shape and can be batched, with at most a sliver cropped)."""
    img = load_image(image, size=int(canvas))
    h, w = img.shape[-2:]
    q = max(8, int(canvas) // 8)
    th = h if h <= w else max(int(canvas), min(h // q * q, 2 * int(canvas)))
    tw = w if w <= h else max(int(canvas), min(w // q * q, 2 * int(canvas)))
    top, left = (h - th) // 2, (w - tw) // 2
    return img[:, top : top + th, left : left + tw].contiguous()


# --------------------------------------------------------------------------- loading


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


def _chunks(items: Sequence[T], n: int) -> Iterable[Sequence[T]]:
    for start in range(0, len(items), n):
        yield items[start : start + n]


def _prefetch(pool: ThreadPoolExecutor, fn: Callable[[T], R], items: Iterable[T], ahead: int) -> Iterator[R]:
    """``map(fn, items)`` in the pool's threads, in order, with at most ``ahead`` results pending
    (``Executor.map`` would submit everything at once and hold every loaded image in memory)."""
    pending: deque[Future[R]] = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) > ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _agreed(job: TriageJob, stage: Callable[[], tuple[int, list[dict[str, Any]]]]) -> tuple[int, list[dict[str, Any]]]:
    """Run ``stage``; under torchrun, an unreadable image on one process (strict mode) stops all of them."""
    error = None
    try:
        result = stage()
    except TriageImageError as exc:
        if not job.ctx.distributed:
            raise
        error, result = str(exc), (0, [])
    job.ctx.agree(error)
    return result


# --------------------------------------------------------------------------- predict


def _prediction_row(sample: TriageSample, probs: torch.Tensor, labels: Sequence[str]) -> Row:
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


def _predict_batch(job: TriageJob, batch: torch.Tensor, layers: list[str]) -> dict[str, torch.Tensor]:
    """One batch of the prediction pass, channels-last on the CPU (oneDNN's depthwise and 1×1 convolutions
    run about 1.9× faster that way on the default model; same logits to ~1e-5). A model that cannot take a
    channels-last input (a ``.view`` on it) falls back to the plain layout for the rest of the run."""
    with torch.no_grad():
        if job.channels_last is not False and job.adapter.device.type == "cpu":
            try:
                out = job.adapter.features(batch.contiguous(memory_format=torch.channels_last), layers, logits=True)
                job.channels_last = True
                return out
            except RuntimeError:
                if job.channels_last:  # it worked before: a real error, not the layout
                    raise
                job.channels_last = False
        return job.adapter.features(batch, layers, logits=True)


def _predict(job: TriageJob, samples: Sequence[TriageSample]) -> tuple[int, list[dict[str, Any]]]:
    """Predict ``samples`` in batches, each image resized to the model's input (``input_hw``) as
    ``Model.predict`` does; returns (images predicted, files that could not be read)."""
    hw = job.adapter.input_hw

    def load(s: TriageSample) -> torch.Tensor | str:
        return _load_or_reason(s, max(hw), lambda t: load_image(t, size=hw), job.strict)

    done = 0
    skipped: list[dict[str, Any]] = []
    chunks = list(_chunks(samples, job.predict_batch))
    pending = [job.pool.submit(load, s) for s in chunks[0]] if chunks else []
    for i, chunk in enumerate(chunks):
        loaded = [f.result() for f in pending]
        # the next chunk decodes in the loading threads while this one runs through the model
        pending = [job.pool.submit(load, s) for s in chunks[i + 1]] if i + 1 < len(chunks) else []
        good = [(s, img) for s, img in zip(chunk, loaded) if isinstance(img, torch.Tensor)]
        skipped += [_skipped(s, why) for s, why in zip(chunk, loaded) if isinstance(why, str)]
        if good:
            batch = torch.stack([img for _, img in good])
            layers = [job.feature_layer] if job.feature_layer else []
            out = _predict_batch(job, batch, layers)
            probs = out["logits"].float().softmax(-1).cpu()
            raw = out.get(job.feature_layer) if job.feature_layer else None
            feats = (pool(raw) if isinstance(raw, torch.Tensor) else out["logits"]).float().cpu()
            rows = [_prediction_row(s, probs[i], job.adapter.labels) for i, (s, _) in enumerate(good)]
            arrays = {"probs": probs.numpy(), "features": feats.numpy()}
            job.store.write_predictions(job.rank, job.run_id, rows, arrays)
        done += len(good)
        job.report("predict", done + len(skipped), len(samples))
    return done, skipped


def predict_all(job: TriageJob, selected: Sequence[TriageSample]) -> tuple[list[Row], list[dict[str, Any]], int]:
    """Predict this process's share of what the store does not hold yet; after a barrier, every
    prediction of ``selected`` at this run's positions (dataset order), the files no process could
    read, and how many images this process predicted."""
    ctx = job.ctx
    have = job.store.predictions()
    mine = [s for s in distributed.shard(selected, ctx.rank, ctx.world_size) if s.item_id not in have]
    predicted, skipped = _agreed(job, lambda: _predict(job, mine))
    skipped = [row for rows in ctx.gather(skipped) for row in rows]
    ctx.barrier()
    stored = job.store.predictions()
    unread = {int(r["index"]) for r in skipped}
    missing = [s.key for s in selected if s.item_id not in stored and s.index not in unread]
    if missing:
        raise RuntimeError(f"{len(missing)} item(s) have no prediction after the prediction pass, e.g. {missing[0]!r}")
    rows = [
        {**stored[s.item_id], "index": s.index, "key": s.key, "source": s.source}
        for s in selected
        if s.item_id in stored
    ]
    return rows, skipped, predicted


# --------------------------------------------------------------------------- accentuate


def _round_map(m: torch.Tensor) -> list[list[float]]:
    return [[float(f"{v:.6g}") for v in row] for row in m.tolist()]


def _accentuate_group(job: TriageJob, group: list[tuple[Row, torch.Tensor]]) -> int:
    """Accentuate a group of same-shaped seeds toward every target in one batched run; store each item."""
    t0 = time.perf_counter()
    targets, labels = job.targets, job.adapter.labels
    seeds = [seed for _, seed in group for _ in targets]
    classes = [int(row[t]) for row, _ in group for t in targets]
    results = accentuate(job.adapter, seeds, classes, **job.engine_kwargs)
    seconds = (time.perf_counter() - t0) / len(group)
    written = 0
    for g, (row, seed) in enumerate(group):
        files = {"seed.png": to_png_bytes(seed)}
        scores: dict[str, Any] = {}
        maps: dict[str, Any] = {}
        for k, t in enumerate(targets):
            res = results[g * len(targets) + k]
            files[f"{t}.png"] = to_png_bytes(res.image)
            # the seed's p is the prediction's (the full image, as the card's header shows it), not the
            # canvas crop's: one image, one number (see core.scoring); after = the accentuation's own
            seed_prob = float(row[f"p_{t}"]) if f"p_{t}" in row else res.seed_score.prob
            scores[t] = {
                "class": int(row[t]),
                "label": labels[int(row[t])],
                "seed_prob": seed_prob,
                "prob": res.score.prob,
                "p_fell": seed_prob is not None and res.score.prob is not None and res.score.prob < seed_prob,
                "seed_logit": res.seed_score.value,
                "logit": res.score.value,
                "distance": res.distance,
                "lam_effective": res.lam_effective,
            }
            cam = gradcam(job.adapter, [seed], int(row[t]), layer=job.gradcam_layer, upsample=False)[0]
            maps[t] = _round_map(cam)
        item = {
            **row,
            "targets": list(targets),
            "scores": scores,
            "gradcam": maps,
            "canvas": [int(seed.shape[-2]), int(seed.shape[-1])],
            "run_id": job.run_id,
            "rank": job.rank,
            "finished": time.time(),
            "seconds": seconds,
        }
        written += int(job.store.write_item(str(row["id"]), item, files))
    return written


def _accentuate(job: TriageJob, rows: Sequence[Row], samples: Mapping[str, TriageSample]) -> tuple[int, list[Row]]:
    """Accentuate ``rows`` (mistakes) in groups of equal seed shape; flush a group when it is full.
    Returns (mistakes accentuated, seeds that could not be read)."""
    buckets: dict[tuple[int, int], list[tuple[Row, torch.Tensor]]] = {}
    skipped: list[Row] = []
    done = 0

    def flush(shape: tuple[int, int]) -> None:
        nonlocal done
        group = buckets.pop(shape)
        _accentuate_group(job, group)
        done += len(group)
        job.report("accentuate", done, len(rows))

    def load(row: Row) -> tuple[Row, torch.Tensor | str]:
        fit = lambda t: canvas_seed(t, job.canvas)  # noqa: E731
        return row, _load_or_reason(samples[row["id"]], job.canvas, fit, job.strict)

    for row, seed in _prefetch(job.pool, load, rows, 2 * job.accentuate_batch):
        if isinstance(seed, str):
            skipped.append(_skipped(samples[row["id"]], seed))
            continue
        shape = (int(seed.shape[-2]), int(seed.shape[-1]))
        buckets.setdefault(shape, []).append((row, seed))
        if len(buckets[shape]) >= job.accentuate_batch:
            flush(shape)
    for shape in sorted(buckets):
        flush(shape)
    return done, skipped


def accentuate_all(job: TriageJob, rows: Sequence[Row], selected: Sequence[TriageSample]) -> tuple[int, list[Row]]:
    """Accentuate this process's share of the mistakes among ``rows`` that the store does not hold;
    returns (mistakes accentuated, seeds that could not be read)."""
    ctx = job.ctx
    mistakes = [r for r in rows if r["predicted"] != r["true"]]
    done = job.store.done()
    todo = [r for r in distributed.shard(mistakes, ctx.rank, ctx.world_size) if r["id"] not in done]
    by_id = {s.item_id: s for s in selected}
    return _agreed(job, lambda: _accentuate(job, todo, by_id))


# --------------------------------------------------------------------------- merge


def merge(
    job: TriageJob,
    rows: Sequence[Row],
    skipped: Sequence[dict[str, Any]],
    counts: Sequence[Mapping[str, int]],
    rank_by: str,
    fingerprint: Mapping[str, Any],
    seconds: float,
    selected: Sequence[TriageSample] = (),
) -> None:
    """Rank 0: write ``index.json`` (every prediction, the ranked finished mistakes, the skipped files,
    the collective normaliser, and this run appended to the store's history)."""
    job.report("merge", 0, 1)
    annotations, meta = _annotations(job, rows, selected)
    run = {
        "run_id": job.run_id,
        "seconds": seconds,
        "world_size": job.ctx.world_size,
        "predicted": sum(c["predicted"] for c in counts),
        "accentuated": sum(c["accentuated"] for c in counts),
        "skipped": len(skipped),
    }
    index = build_index(job.store, rows, skipped, rank_by, fingerprint, run, annotations=annotations, meta=meta)
    job.store.write_index(index)
    job.report("merge", 1, 1)


def _annotations(
    job: TriageJob, rows: Sequence[Row], selected: Sequence[TriageSample]
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Per item id: the label-issue score and flag (every prediction), the natural exemplars (every
    mistake); the exemplars' thumbnails are written to the store (once each). Returns them and what
    the index records about how they were made."""
    meta: dict[str, Any] = {"label_issues": None, "exemplars": {"k": job.exemplars, "layer": job.feature_layer}}
    notes: dict[str, dict[str, Any]] = {str(r["id"]): {} for r in rows}
    if job.label_method != "off":
        probs = job.store.prediction_arrays("probs")
        have = [r for r in rows if str(r["id"]) in probs]
        if have:
            result = label_issues(
                [int(r["true"]) for r in have], np.stack([probs[str(r["id"])] for r in have]), job.label_method
            )
            if result.note == INSTALL_HINT:  # a missing extra is worth a warning; one class is not
                warnings.warn(result.note, UserWarning, stacklevel=3)
            for r, score, flag in zip(have, result.scores, result.flags):
                notes[str(r["id"])].update(label_issue=round(score, 6), likely_label_error=flag)
            meta["label_issues"] = {"method": result.method, "note": result.note, "caveat": CAVEAT}
    if job.exemplars > 0:
        features = job.store.prediction_arrays("features")
        found = nearest_exemplars(rows, features, job.exemplars)
        by_id = {s.item_id: s for s in selected}
        wanted = {e["id"] for entry in found.values() for es in entry.values() for e in es}
        for item_id in sorted(wanted):
            if item_id in by_id and not job.store.exemplar_path(item_id).is_file():
                try:
                    job.store.write_exemplar_thumbnail(item_id, jpeg_thumbnail(by_id[item_id].load(112), 112))
                except UNREADABLE:
                    continue  # the file went away since it was predicted: shown without a thumbnail
        for item_id, entry in found.items():
            notes[item_id]["exemplars"] = entry
    return notes, meta
