"""Triage inputs: a labelled image folder, a list of ``(image, label)`` pairs, or a ``Dataset``.

Everything becomes a :class:`TriageData`: a sequence of :class:`TriageSample` (a printable key, the
true class as an index into the model's labels, a way to load the image, and an ``item_id``: a digest
of the key, the label and the file's size and modification time, or of an in-memory image's pixels).
The on-disk store keeps predictions and accentuations by ``item_id``, so a rerun after files were
added, removed or repaired keeps everything stored for the files that did not change.

Folders use the torchvision ``ImageFolder`` layout (``root/<class>/<image>``). A class folder is
mapped to the model's labels by, in order: the ``class_map`` entry for it; its name as a label
(case-insensitive, ``_`` read as a space); an ImageNet WordNet id (``n01440764``) for 1000-class
ImageNet models. Folders that match nothing raise :class:`TriageInputError` listing all of them; a
folder name that matches two labels of the model (ImageNet has two "crane"s) must be mapped by index.
Folders that cannot be read, links that loop, and class folders that are links to the image folder
(or to a folder already scanned) are not scanned and are listed in :attr:`TriageData.problems`.
File names that are not valid UTF-8 are shown with ``\\xNN`` escapes.
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

from ..images import load_image
from .decode import open_bounded

__all__ = [
    "IMAGE_EXTENSIONS",
    "Skipped",
    "TriageData",
    "TriageImageError",
    "TriageInputError",
    "TriageSample",
    "as_triage_data",
    "check_limit",
    "load_class_map",
    "printable",
]

#: File extensions read as images (as torchvision's ``ImageFolder``), compared case-insensitively.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")


class TriageInputError(ValueError):
    """The triage input (folder, class map, pairs or dataset) cannot be used; the message says why."""


class TriageImageError(TriageInputError):
    """An image or folder cannot be read and ``on_error="raise"`` asked for that to be fatal."""


@dataclass(frozen=True)
class Skipped:
    """A file or folder a triage could not use, and why (listed in the summary, the report, the store)."""

    key: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"key": self.key, "reason": self.reason}


@dataclass(frozen=True)
class TriageSample:
    """One labelled image: ``key`` identifies it for people (relative path, or ``item-<i>``), ``label``
    is the true class as an index into the model's labels, ``item_id`` identifies its content for the
    store (see the module docstring)."""

    index: int
    key: str
    label: int
    loader: Callable[[], Any]
    item_id: str = ""
    #: the image file (absolute path) where the item is one, else None
    source: str | None = None

    def load(self, min_side: int | None = None) -> torch.Tensor:
        """The image as a (3, H, W) float tensor in [0, 1]; with ``min_side``, image files are decoded
        reduced (shorter side at least ``2 · min_side``, see :func:`.decode.open_bounded`)."""
        source = self.loader()
        if isinstance(source, (str, os.PathLike)):
            source = open_bounded(Path(source), min_side)
        return load_image(source)


def _item_id(raw_key: bytes, label: int, stamp: str) -> str:
    return hashlib.sha256(raw_key + f"\t{label}\t{stamp}".encode()).hexdigest()[:20]


def _file_stamp(path: Path) -> str:
    """Size and modification time of a file ("" when it cannot be read: the loader then says why)."""
    try:
        st = path.stat()
    except OSError:
        return ""
    return f"{st.st_size}:{st.st_mtime_ns}"


def printable(name: str) -> str:
    """``name`` with bytes that are not UTF-8 (undecodable file names) as ``\\xNN`` escapes."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


class TriageData(Sequence[TriageSample]):
    """Labelled images in a fixed order; ``labels`` are the model's class names; ``problems`` the
    folders (or entries) that could not be scanned, as :class:`Skipped`."""

    def __init__(
        self,
        samples: Sequence[TriageSample],
        labels: Sequence[str],
        source: str,
        problems: Sequence[Skipped] = (),
    ) -> None:
        self.samples = list(samples)
        self.labels = list(labels)
        self.source = source
        self.problems = list(problems)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> TriageSample:  # type: ignore[override]
        return self.samples[i]

    def __iter__(self) -> Iterator[TriageSample]:
        return iter(self.samples)

    def digest(self) -> str:
        """SHA-256 over every item id, in order (changes when any file, label or order changes)."""
        h = hashlib.sha256()
        for s in self.samples:
            h.update(f"{s.key}\t{s.label}\t{s.item_id}\n".encode())
        return h.hexdigest()

    def select(self, limit: int | None) -> list[TriageSample]:
        """``limit`` samples spread evenly over the dataset (all when ``None``), in dataset order.

        Sample ``floor(i · n / limit)`` for ``i < limit``: an ``ImageFolder`` is sorted by class, so
        this keeps every part of it represented rather than only the first classes.
        """
        check_limit(limit)
        n = len(self.samples)
        if limit is None or limit >= n:
            return list(self.samples)
        return [self.samples[i * n // limit] for i in range(limit)]


def check_limit(limit: Any) -> None:
    """Raise unless ``limit`` is a positive int or None (TypeError for other types, ValueError below 1)."""
    if limit is None:
        return
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise TypeError(f"limit must be a positive int or None, got {type(limit).__name__} {limit!r}")
    if limit < 1:
        raise TriageInputError(f"limit must be a positive int or None, got {limit!r}")


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


def _label_lookup(labels: Sequence[str]) -> dict[str, list[int]]:
    """Normalised label → every class index with that label (a model may repeat a label)."""
    lookup: dict[str, list[int]] = {}
    for i, lab in enumerate(labels):
        lookup.setdefault(_norm(lab), []).append(i)
    return lookup


def _unique(name: str, indices: list[int], what: str) -> int:
    if len(indices) > 1:
        listed = ", ".join(str(i) for i in indices)
        raise TriageInputError(
            f"{what}: {name!r} matches {len(indices)} model classes with that label (indices {listed}); "
            f"give the class index instead (class map: '{name}: {indices[0]}')"
        )
    return indices[0]


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
        lookup = _label_lookup(labels)
        key = _norm(text)
        if key in lookup:
            return _unique(text, lookup[key], what)
        wnid = _imagenet_wnids(labels).get(key)
        if wnid is not None:
            return wnid
        close = difflib.get_close_matches(key, list(lookup), n=3, cutoff=0.6)
        hint = f" (close: {', '.join(repr(labels[lookup[c][0]]) for c in close)})" if close else ""
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
        raise TriageInputError(f"image folder not found: {printable(str(root))}")
    if not root.is_dir():
        raise TriageInputError(
            f"not a folder: {printable(str(root))} (expected one subfolder per class, as torchvision's ImageFolder)"
        )
    try:
        folders = sorted(d.name for d in root.iterdir() if not d.name.startswith(".") and d.is_dir())
    except OSError as exc:
        raise TriageInputError(f"cannot read the image folder {printable(str(root))}: {exc.strerror}") from exc
    if not folders:
        raise TriageInputError(
            f"{printable(str(root))} has no class subfolders (expected root/<class>/<image>, as ImageFolder)"
        )
    cmap = dict(class_map or {})
    stray = sorted(set(cmap) - set(folders))
    if stray:
        raise TriageInputError(
            f"class map names folders that are not in {printable(str(root))}: "
            f"{', '.join(repr(printable(s)) for s in stray)}"
        )
    lookup = _label_lookup(labels)
    wnids = _imagenet_wnids(labels)
    mapping: dict[str, int] = {}
    unknown: list[str] = []
    for name in folders:
        shown = printable(name)
        if name in cmap:
            mapping[name] = _resolve_label(cmap[name], labels, f"class map entry {shown!r}")
        elif _norm(name) in lookup:
            mapping[name] = _unique(shown, lookup[_norm(name)], f"class folder {shown!r}")
        elif name.lower() in wnids:
            mapping[name] = wnids[name.lower()]
        else:
            unknown.append(shown)
    if unknown:
        raise TriageInputError(
            f"{len(unknown)} class folder(s) match no model label: {', '.join(repr(u) for u in unknown)}; "
            "rename them to the model's labels, or map them with a class map file (folder: label per line, "
            "or a JSON object; CLI --class-map)"
        )
    problems: list[Skipped] = []
    scanned: dict[str, str] = {}  # real path of every folder scanned → its key
    found: dict[str, list[Path]] = {}
    # real folders first, so that a class folder that links to another one is the one reported
    for name in sorted(folders, key=lambda n: ((root / n).is_symlink(), n)):
        found[name] = _scan_class(root, name, scanned, problems)
    samples: list[TriageSample] = []
    for name in folders:
        for f in sorted(found[name]):
            rel = f.relative_to(root).as_posix()
            raw = rel.encode("utf-8", "surrogateescape")
            item_id = _item_id(raw, mapping[name], _file_stamp(f))
            samples.append(
                TriageSample(len(samples), printable(rel), mapping[name], _path_loader(f), item_id, _source(f))
            )
    if not samples:
        detail = f"; not scanned: {problems[0].key} ({problems[0].reason})" if problems else ""
        raise TriageInputError(
            f"no images in {printable(str(root))} (looked for {', '.join(IMAGE_EXTENSIONS)} in the class "
            f"folders){detail}"
        )
    return TriageData(samples, labels, source=str(root), problems=sorted(problems, key=lambda p: p.key))


def _scan_class(root: Path, name: str, scanned: dict[str, str], problems: list[Skipped]) -> list[Path]:
    """Image files under ``root/name`` (links followed); unreadable folders, loops and folders reached a
    second time (a link to the root, or to a folder already scanned) are added to ``problems``."""
    root_real = os.path.realpath(root)
    files: list[Path] = []
    stack = [root / name]
    while stack:
        folder = stack.pop()
        key = printable(folder.relative_to(root).as_posix()) + "/"
        real = os.path.realpath(folder)
        if real == root_real or root_real.startswith(real.rstrip(os.sep) + os.sep):
            problems.append(
                Skipped(
                    key,
                    "a link to the image folder itself (or above it); not scanned, its images would be "
                    "counted again under this class",
                )
            )
            continue
        if real in scanned:
            problems.append(Skipped(key, f"a link to {scanned[real]}, which was already scanned; not scanned twice"))
            continue
        scanned[real] = key
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            problems.append(Skipped(key, f"folder not readable ({exc.strerror or exc}); its images are not triaged"))
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            try:
                if entry.is_dir():
                    stack.append(path)
                elif entry.is_file():
                    if path.suffix.lower() in IMAGE_EXTENSIONS:
                        files.append(path)
                elif entry.is_symlink() and path.suffix.lower() in IMAGE_EXTENSIONS:
                    problems.append(Skipped(printable(path.relative_to(root).as_posix()), "a broken or looping link"))
            except OSError as exc:
                problems.append(Skipped(printable(path.relative_to(root).as_posix()), f"cannot stat ({exc.strerror})"))
    return files


def _source(path: str | os.PathLike[str]) -> str | None:
    """The absolute path of an item's file, for the store's JSON; None when its name is not valid UTF-8."""
    text = str(Path(path).absolute())
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return text


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
        t = load_image(value)
    except Exception:  # noqa: BLE001 - the real error is raised when the item is loaded
        return None
    return hashlib.sha256((t * 255).round().to(torch.uint8).numpy().tobytes()).hexdigest()[:16]


def _from_pairs(pairs: Sequence[Any], labels: Sequence[str]) -> TriageData:
    samples = []
    for i, item in enumerate(pairs):
        image, label = _pair(item, i)
        idx = _resolve_label(label, labels, f"item {i}")
        if isinstance(image, (str, os.PathLike)):
            rel = Path(image).as_posix()
            key = printable(rel)
            item_id = _item_id(rel.encode("utf-8", "surrogateescape"), idx, _file_stamp(Path(image)))
        else:
            digest = _tensor_key(image)
            key = f"item-{i:06d}-{digest}"
            # the pixels identify an in-memory image (its position in the list does not)
            item_id = _item_id((digest or key).encode(), idx, "pixels")
        source = _source(image) if isinstance(image, (str, os.PathLike)) else None
        samples.append(TriageSample(i, key, idx, _value_loader(image), item_id, source))
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
        key = printable(str(path)) if path is not None else f"item-{i:06d}"
        stamp = _file_stamp(Path(path)) if isinstance(path, (str, os.PathLike)) else ""
        raw = str(path).encode("utf-8", "surrogateescape") if path is not None else key.encode()
        source = _source(path) if isinstance(path, (str, os.PathLike)) else None
        samples.append(TriageSample(i, key, idx, loader, _item_id(raw, idx, stamp), source))
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
