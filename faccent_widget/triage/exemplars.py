"""Natural exemplars: for each mistake, the nearest *correctly classified* images of its predicted and
of its true class in the same dataset ("what this class looks like in your data").

The prediction stage stores, per item, the model's penultimate features (the input of the classifier:
:func:`feature_layer`, pooled over space or tokens by :func:`pool`) in float16 next to its
probabilities; the merge compares them by cosine similarity (:func:`nearest_exemplars`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..core.model import Model

__all__ = ["feature_layer", "nearest_exemplars", "pool"]


def feature_layer(model: Model) -> str | None:
    """The layer whose output feeds the classifier: timm's ``global_pool`` when there is one, else the
    top-level child called just before the last one (torchvision's ``avgpool``, a ViT's ``head_drop``);
    ``None`` for a model with fewer than two top-level children (the logits are then used)."""
    names = set(model.layer_names)
    if "global_pool" in names and hasattr(model.module, "get_classifier"):
        return "global_pool"
    children = [n for n, _ in model.module.named_children() if n in names]
    return children[-2] if len(children) >= 2 else None


def pool(features: torch.Tensor) -> torch.Tensor:
    """(N, D) from a layer's output: (N, C, H, W) averaged over space, (N, T, D) over tokens."""
    if features.dim() == 4:
        return features.mean(dim=(-2, -1))
    if features.dim() == 3:
        return features.mean(dim=1)
    return features.reshape(features.shape[0], -1)


def nearest_exemplars(
    rows: Sequence[Mapping[str, Any]], features: Mapping[str, np.ndarray], k: int
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """For each mistake among ``rows`` (prediction rows with ``id``, ``true``, ``predicted``), its ``k``
    nearest correctly classified items of the predicted class and of the true class, by cosine
    similarity of ``features[id]``: ``{id: {"predicted": [{"id", "key", "index", "similarity"}…],
    "true": […]}}``, most similar first (ties by dataset order). Mistakes without features are left out."""
    have = [r for r in rows if str(r["id"]) in features]
    correct = [r for r in have if r["predicted"] == r["true"]]
    mistakes = [r for r in have if r["predicted"] != r["true"]]
    if not mistakes:
        return {}

    def unit(ids: Sequence[str]) -> np.ndarray:
        m = np.stack([np.asarray(features[i], dtype=np.float32) for i in ids]) if ids else np.zeros((0, 1))
        return m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)

    by_class: dict[int, list[Mapping[str, Any]]] = {}
    for r in correct:
        by_class.setdefault(int(r["true"]), []).append(r)
    pools = {c: (rs, unit([str(r["id"]) for r in rs])) for c, rs in by_class.items()}
    queries = unit([str(r["id"]) for r in mistakes])
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for q, r in zip(queries, mistakes):
        entry: dict[str, list[dict[str, Any]]] = {}
        for target in ("predicted", "true"):
            rs, mat = pools.get(int(r[target]), ([], np.zeros((0, 1))))
            if not rs:
                entry[target] = []
                continue
            sims = mat @ q
            order = sorted(range(len(rs)), key=lambda j: (-float(sims[j]), int(rs[j]["index"])))[: max(0, k)]
            entry[target] = [
                {
                    "id": str(rs[j]["id"]),
                    "key": str(rs[j]["key"]),
                    "index": int(rs[j]["index"]),
                    "similarity": round(float(sims[j]), 5),
                }
                for j in order
            ]
        out[str(r["id"])] = entry
    return out
