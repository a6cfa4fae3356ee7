"""What users and the browser hand the widget, checked: trait values, targets, seed images (the same
pixel cap on every path: the constructor, ``w.image = …`` and uploads)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..core.config import LAMBDA_MAX, check_int, check_lambda, check_real, check_setting
from ..core.model import LayerNotFoundError, Model
from ..core.objectives import Channel, Logit, Objective
from ..images import ImageInput
from .extras import MAX_UPLOAD_PIXELS
from .session import VIEWS

__all__ = ["check_image_size", "invalid_setting", "plain_error", "target_from_trait", "target_trait", "GALLERY_MODES"]

#: The gallery batches: the top-5, the 5 least likely classes, the predicted class next to the true one.
GALLERY_MODES = ("topk", "inhibited", "predicted_vs_true")


#: ``<_io.BytesIO object at 0x7f…>`` and the like: Python's reprs mean nothing to the people reading the panel
_REPR = re.compile(r"\s*<[\w.]+ object at 0x[0-9a-fA-F]+>")


def plain_error(exc: BaseException) -> str:
    """An exception as the panel shows it, once, in plain words: its message without Python object reprs;
    the exception's name only for the unexpected kinds (not for bad input: ``ValueError``, ``TypeError``,
    ``LookupError``)."""
    text = _REPR.sub("", str(exc)).strip()
    if isinstance(exc, LookupError) and len(exc.args) == 1:
        text = str(exc.args[0])  # a KeyError's str() is its repr
    if isinstance(exc, (ValueError, TypeError, LookupError)) and text:
        return text
    return f"{text} ({type(exc).__name__})" if text else f"unexpected {type(exc).__name__}"


def _pixels(src: Any) -> tuple[int, int] | None:
    """(height, width) of an image input without decoding it, or None when it cannot be told cheaply."""
    if isinstance(src, Image.Image):
        return src.height, src.width
    if isinstance(src, (np.ndarray, torch.Tensor)) and src.ndim >= 2:
        shape = tuple(int(n) for n in src.shape)
        if isinstance(src, np.ndarray):  # (H, W) or (H, W, C)
            return shape[0], shape[1]
        return shape[-2], shape[-1]  # (C, H, W) or (1, C, H, W)
    if isinstance(src, (str, os.PathLike)):
        try:
            with Image.open(Path(src)) as img:  # reads the header only
                return img.height, img.width
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
            return None  # load_image says what is wrong with it
    return None


def check_image_size(src: ImageInput | bytes) -> None:
    """A ``ValueError`` when a seed image has more than ``MAX_UPLOAD_PIXELS`` pixels (checked before
    decoding; the uploads' cap, so that ``w.image = …`` and the constructor take the same images)."""
    hw = _pixels(src)
    if hw is not None and hw[0] * hw[1] > MAX_UPLOAD_PIXELS:
        raise ValueError(
            f"the image is too large ({hw[1]}×{hw[0]} = {hw[0] * hw[1] / 1e6:.0f} Mpx; at most "
            f"{MAX_UPLOAD_PIXELS / 1e6:.0f} Mpx): downscale it first"
        )


def target_trait(objective: Objective, labels: Any) -> dict[str, Any]:
    """The ``target`` trait's value for ``objective``."""
    if isinstance(objective, Logit):
        return {"kind": "class", "index": objective.index, "label": labels[objective.index]}
    if isinstance(objective, Channel):
        return {"kind": "latent", "layer": objective.layer, "channel": objective.unit, "label": objective.description}
    return {"kind": "latent", "label": objective.description}


def target_from_trait(value: Any) -> int | str:
    """A ``target`` trait value → what :meth:`FaccentWidget.set_target` takes (class index or
    ``"layer:channel"``), or a clear error."""
    if not isinstance(value, dict):
        raise TypeError(f"target must be a dict like {{'kind': 'class', 'index': 3}}, got {type(value).__name__}")
    kind = value.get("kind")
    if kind == "class":
        return check_int(value.get("index"), "target index", 0)
    if kind == "latent" and "layer" in value:
        layer = value.get("layer")
        if not isinstance(layer, str):
            raise TypeError(f"target layer must be a layer name, got {layer!r}")
        return f"{layer}:{check_int(value.get('channel'), 'target channel', 0)}"
    raise ValueError("target must be {'kind': 'class', 'index': i} or {'kind': 'latent', 'layer': name, 'channel': c}")


def invalid_setting(name: str, value: Any, *, model: Model, current: dict[str, Any]) -> str:
    """'' if ``value`` is acceptable for trait ``name``, else the message saying why not (the engine
    settings are checked by :mod:`faccent_widget.core.config`, the regularisation layer by
    :meth:`Model.check_reg_layer`). ``current`` holds the other traits' values (``lam_min``, ``p1``, …)."""
    try:
        if name in ("lam", "lam_recommended"):
            if value is not None or name == "lam":
                check_lambda(value)
        elif name in ("lam_min", "lam_max"):
            lo, hi = (value, current["lam_max"]) if name == "lam_min" else (current["lam_min"], value)
            check_real(value, name, 0.0, LAMBDA_MAX, lo_open=True)  # a log-scale slider: > 0
            if not lo < hi:
                return f"the λ slider needs lam_min < lam_max, got lam_min={lo!r}, lam_max={hi!r}"
        elif name == "reg_layer":
            check_setting(name, value)
            try:
                if not value or model.check_reg_layer(value) != value:  # "" would mean "the default"
                    return f"reg_layer must name a layer, got {value!r}; pick one from the list"
            except LayerNotFoundError:
                return f"unknown regularisation layer {value!r}; pick one from the list"
        elif name in ("preset", "steps"):
            check_setting(name, value)
        elif name in ("p1", "p2"):
            check_real(value, name, 0.0, 100.0)
            p1, p2 = (value, current["p2"]) if name == "p1" else (current["p1"], value)
            if not p1 < p2:
                return f"mask percentiles need 0 ≤ p1 < p2 ≤ 100, got p1={p1}, p2={p2}"
        elif name == "view" and value not in VIEWS:
            return f"view must be one of {', '.join(VIEWS)}, got {value!r}"
    except (TypeError, ValueError) as exc:
        return str(exc)
    return ""
