"""Triage inputs: a labelled image folder, a list of ``(image, label)`` pairs, or a ``Dataset``.

Everything becomes a :class:`TriageData`: a sequence of :class:`TriageSample` (a stable key, the
true class as an index into the model's labels, and a way to load the image), plus a digest of the
keys and labels that the on-disk store uses to refuse mixing two different datasets.

Folders use the torchvision ``ImageFolder`` layout (``root/<class>/<image>``). A class folder is
mapped to the model's labels by, in order: the ``class_map`` entry for it; its name as a label
(case-insensitive, ``_`` read as a space); an ImageNet WordNet id (``n01440764``) for 1000-class
ImageNet models. Folders that match nothing raise :class:`TriageInputError` listing all of them.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "IMAGE_EXTENSIONS",
    "TriageData",
    "TriageInputError",
    "TriageSample",
    "as_triage_data",
    "load_class_map",
]

#: File extensions read as images (as torchvision's ``ImageFolder``), compared case-insensitively.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")


class TriageInputError(ValueError):
    """The triage input (folder, class map, pairs or dataset) cannot be used; the message says why."""


@dataclass(frozen=True)
class TriageSample:
    """One labelled image: ``key`` identifies it (relative path, or ``item-<i>``), ``label`` is the
    true class as an index into the model's labels."""

    index: int
    key: str
    label: int
    loader: Callable[[], Any]

    def load(self) -> torch.Tensor:
        """The image as a (3, H, W) float tensor in [0, 1]."""
        from . import _lib as fw

        return fw.load_image(self.loader())


class TriageData(Sequence[TriageSample]):
    """Labelled images in a fixed order; ``labels`` are the model's class names."""

    def __init__(self, samples: Sequence[TriageSample], labels: Sequence[str], source: str) -> None:
        self.samples = list(samples)
        self.labels = list(labels)
        self.source = source

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> TriageSample:  # type: ignore[override]
        return self.samples[i]

    def __iter__(self) -> Iterator[TriageSample]:
        return iter(self.samples)

    def digest(self) -> str:
        """SHA-256 over every key and true label, in order (identifies the dataset in the store)."""
        h = hashlib.sha256()
        for s in self.samples:
            h.update(f"{s.key}\t{s.label}\n".encode())
        return h.hexdigest()

    def select(self, limit: int | None) -> list[TriageSample]:
        """``limit`` samples spread evenly over the dataset (all when ``None``), in dataset order.

        Sample ``floor(i · n / limit)`` for ``i < limit``: an ``ImageFolder`` is sorted by class, so
        this keeps every part of it represented rather than only the first classes.
        """
        n = len(self.samples)
        if limit is None or limit >= n:
            return list(self.samples)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise TriageInputError(f"limit must be a positive int or None, got {limit!r}")
        return [self.samples[i * n // limit] for i in range(limit)]


# --------------------------------------------------------------------------- class names → labels


def _norm(name: str) -> str:
    return " ".join(str(name).replace("_", " ").split()).lower()


def _imagenet_wnids(labels: Sequence[str]) -> dict[str, int]:
    """WordNet id → class index, for a model whose labels are the 1000 ImageNet classes."""
    if len(labels) != 1000:
        return {}
    try:
        from timm.data import ImageNetInfo

        info = ImageNetInfo()
        wnids = list(info.label_names())
    except Exception:  # noqa: BLE001 - an older timm without the synset table: no WNID matching
        return {}
    return {w.lower(): i for i, w in enumerate(wnids)} if len(wnids) == 1000 else {}


def _resolve_label(value: Any, labels: Sequence[str], what: str) -> int:
    """A class index from an int, a digit string or a label name (case-insensitive, ``_`` = space)."""
    if isinstance(value, bool):
        raise TriageInputError(f"{what}: a class must be a label or an index, got {value!r}")
    if isinstance(value, int) or (hasattr(value, "__index__") and not isinstance(value, str)):
        idx = int(value)
        if not 0 <= idx < len(labels):
            raise TriageInputError(f"{what}: class index {idx} is out of range (0…{len(labels) - 1})")
        return idx
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return _resolve_label(int(text), labels, what)
        lookup = {_norm(lab): i for i, lab in enumerate(labels)}
        key = _norm(text)
        if key in lookup:
            return lookup[key]
        wnid = _imagenet_wnids(labels).get(key)
        if wnid is not None:
            return wnid
        close = difflib.get_close_matches(key, list(lookup), n=3, cutoff=0.6)
        hint = f" (close: {', '.join(repr(labels[lookup[c]]) for c in close)})" if close else ""
        raise TriageInputError(f"{what}: no model class named {value!r}{hint}")
    raise TriageInputError(f"{what}: a class must be a label string or an int index, got {type(value).__name__}")


def load_class_map(path: str | os.PathLike) -> dict[str, str | int]:
    """Read a class-map file: folder name → model label (or class index).

    Two formats: a JSON object (``{"rocket": "missile", "kitty": 281}``), or a text file with one
    ``folder: label`` (or ``folder<TAB>label``) per line; blank lines and lines starting with ``#``
    are skipped.
    """
    p = Path(path)
    if not p.is_file():
        raise TriageInputError(f"class map file not found: {p}")
    text = p.read_text(encoding="utf-8")
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TriageInputError(f"class map {p} is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise TriageInputError(f"class map {p} must be a JSON object of folder → label")
        return {str(k): v for k, v in data.items()}
    out: dict[str, str | int] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        sep = "\t" if "\t" in line else ":" if ":" in line else None
        if sep is None:
            raise TriageInputError(f"class map {p}, line {lineno}: expected 'folder: label', got {raw!r}")
        folder, label = (part.strip() for part in line.split(sep, 1))
        if not folder or not label:
            raise TriageInputError(f"class map {p}, line {lineno}: expected 'folder: label', got {raw!r}")
        out[folder] = label
    return out


# --------------------------------------------------------------------------- sources


def _from_folder(root: Path, labels: Sequence[str], class_map: Mapping[str, Any] | None) -> TriageData:
    if not root.exists():
        raise TriageInputError(f"image folder not found: {root}")
    if not root.is_dir():
        raise TriageInputError(f"not a folder: {root} (expected one subfolder per class, as torchvision's ImageFolder)")
    folders = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not folders:
        raise TriageInputError(f"{root} has no class subfolders (expected root/<class>/<image>, as ImageFolder)")
    cmap = dict(class_map or {})
    stray = sorted(set(cmap) - set(folders))
    if stray:
        raise TriageInputError(f"class map names folders that are not in {root}: {', '.join(repr(s) for s in stray)}")
    lookup = {_norm(lab): i for i, lab in enumerate(labels)}
    wnids = _imagenet_wnids(labels)
    mapping: dict[str, int] = {}
    unknown: list[str] = []
    for name in folders:
        if name in cmap:
            mapping[name] = _resolve_label(cmap[name], labels, f"class map entry {name!r}")
        elif _norm(name) in lookup:
            mapping[name] = lookup[_norm(name)]
        elif name.lower() in wnids:
            mapping[name] = wnids[name.lower()]
        else:
            unknown.append(name)
    if unknown:
        raise TriageInputError(
            f"{len(unknown)} class folder(s) match no model label: {', '.join(repr(u) for u in unknown)}; "
            "rename them to the model's labels, or map them with a class map file (folder: label per line, "
            "or a JSON object; CLI --class-map)"
        )
    samples: list[TriageSample] = []
    for name in folders:
        files = sorted(
            f
            for f in (root / name).rglob("*")
            if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS and not f.name.startswith(".")
        )
        for f in files:
            key = f.relative_to(root).as_posix()
            samples.append(TriageSample(len(samples), key, mapping[name], _path_loader(f)))
    if not samples:
        raise TriageInputError(f"no images in {root} (looked for {', '.join(IMAGE_EXTENSIONS)} in the class folders)")
    return TriageData(samples, labels, source=str(root))


def _path_loader(path: Path) -> Callable[[], Any]:
    return lambda: path


def _value_loader(value: Any) -> Callable[[], Any]:
    return lambda: value


def _pair(item: Any, i: int) -> tuple[Any, Any]:
    if not isinstance(item, (tuple, list)) or len(item) < 2:
        raise TriageInputError(f"item {i} is not an (image, label) pair: got {type(item).__name__}")
    return item[0], item[1]


def _tensor_key(value: Any) -> str | None:
    """A short content digest for in-memory images (so a changed list is not mistaken for the old one)."""
    if isinstance(value, (str, os.PathLike)):
        return None
    try:
        from . import _lib as fw

        t = fw.load_image(value)
    except Exception:  # noqa: BLE001 - the real error is raised when the item is loaded
        return None
    return hashlib.sha256((t * 255).round().to(torch.uint8).numpy().tobytes()).hexdigest()[:16]


def _from_pairs(pairs: Sequence[Any], labels: Sequence[str]) -> TriageData:
    samples = []
    for i, item in enumerate(pairs):
        image, label = _pair(item, i)
        idx = _resolve_label(label, labels, f"item {i}")
        if isinstance(image, (str, os.PathLike)):
            key = Path(image).as_posix()
        else:
            key = f"item-{i:06d}-{_tensor_key(image)}"
        samples.append(TriageSample(i, key, idx, _value_loader(image)))
    if not samples:
        raise TriageInputError("the list of (image, label) pairs is empty")
    return TriageData(samples, labels, source="pairs")


def _from_dataset(dataset: Any, labels: Sequence[str]) -> TriageData:
    """A map-style dataset returning ``(image, label)``; ``label`` indexes ``dataset.classes`` when the
    dataset has that attribute (torchvision style), else the model's labels directly."""
    n = len(dataset)
    classes = getattr(dataset, "classes", None)
    own = None
    if classes is not None:
        own = [_resolve_label(c, labels, f"dataset class {c!r}") for c in classes]
    targets = getattr(dataset, "targets", None)
    samples = []
    for i in range(n):
        if targets is not None and len(targets) == n:
            label = targets[i]
            loader = _dataset_loader(dataset, i)
        else:
            image, label = _pair(dataset[i], i)
            loader = _value_loader(image)
        if isinstance(label, torch.Tensor):
            label = int(label)
        idx = own[int(label)] if own is not None else _resolve_label(label, labels, f"dataset item {i}")
        path = None
        if isinstance(getattr(dataset, "samples", None), list):
            entry = dataset.samples[i]
            path = entry[0] if isinstance(entry, (tuple, list)) else None
        samples.append(TriageSample(i, str(path) if path is not None else f"item-{i:06d}", idx, loader))
    if not samples:
        raise TriageInputError("the dataset is empty")
    return TriageData(samples, labels, source=type(dataset).__name__)


def _dataset_loader(dataset: Any, i: int) -> Callable[[], Any]:
    return lambda: _pair(dataset[i], i)[0]


def as_triage_data(
    data: Any, labels: Sequence[str], class_map: Mapping[str, Any] | str | os.PathLike | None = None
) -> TriageData:
    """Turn ``data`` into :class:`TriageData` against the model's ``labels``.

    ``data``: a folder path (``ImageFolder`` layout), a list of ``(image, label)`` pairs (image: a
    path, PIL image, array or tensor; label: a model label or index), a ``torch.utils.data.Dataset``
    returning ``(image, label)`` (``label`` indexes ``dataset.classes`` when it has one), or a
    :class:`TriageData`. ``class_map`` (folders only): a mapping or a file for
    :func:`load_class_map`.
    """
    if isinstance(data, TriageData):
        return data
    if class_map is not None and not isinstance(class_map, Mapping):
        class_map = load_class_map(class_map)
    if isinstance(data, (str, os.PathLike)):
        return _from_folder(Path(data), labels, class_map)
    if class_map is not None:
        raise TriageInputError("class_map applies to image folders only; give labels directly for pairs and datasets")
    if isinstance(data, (list, tuple)):
        return _from_pairs(data, labels)
    if hasattr(data, "__getitem__") and hasattr(data, "__len__"):
        return _from_dataset(data, labels)
    raise TriageInputError(
        f"cannot triage a {type(data).__name__}: pass an ImageFolder-style folder path, a list of "
        "(image, label) pairs, or a Dataset returning (image, label)"
    )
