"""The on-disk triage store: resumable, atomic, and tied to one set of settings.

Layout under the output folder::

    triage.json                 manifest: format version + the settings fingerprint
    predictions/<rank>-<first>-<n>.json   prediction rows, one file per prediction batch
    items/<index>/              one folder per finished mistake:
        row.json                labels, probabilities, scores, raw Grad-CAM maps, run id, time
        seed.png                the seed at the canvas size
        predicted.png, true.png the accentuations toward each target
    index.json                  the merged index (written last, by rank 0)

Every file is written to a temporary name and renamed into place, and an item folder is filled under
a temporary name and renamed as a whole, so a killed run leaves only complete items behind (plus
temporaries that the next run removes). A rerun skips what is there. A store made with other
settings (model, weights, preset, λ, targets, steps, data…) is refused with the differences listed:
results are never mixed.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["FORMAT", "TriageSettingsMismatch", "TriageStore", "atomic_write_bytes", "atomic_write_json"]

FORMAT = "faccent-widget/triage"
VERSION = 1
_ITEM_FILES = ("row.json", "seed.png")


class TriageSettingsMismatch(ValueError):
    """The output folder holds a triage made with other settings; the message lists them."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, data: Any) -> None:
    """:func:`atomic_write_bytes` of ``data`` as indented UTF-8 JSON."""
    atomic_write_bytes(path, (json.dumps(data, indent=1, ensure_ascii=False) + "\n").encode("utf-8"))


def _read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _diff(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, "<missing>"), new.get(key, "<missing>")
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += _diff(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} → {b!r}")
    return out


class TriageStore:
    """One triage output folder (see the module docstring for the layout)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.items_dir = self.root / "items"
        self.predictions_dir = self.root / "predictions"
        self.manifest_path = self.root / "triage.json"
        self.index_path = self.root / "index.json"

    # ------------------------------------------------------------------ manifest
    def open(self, fingerprint: Mapping[str, Any], *, create: bool = True) -> None:
        """Create the store for ``fingerprint``, or check that an existing one was made with it.

        Raises :class:`TriageSettingsMismatch` listing every differing setting otherwise, and
        ``FileExistsError`` when the folder holds other files but no triage manifest.
        """
        if self.manifest_path.exists():
            self.check(fingerprint)
            return
        if not create:
            raise FileNotFoundError(f"no triage store in {self.root} (missing {self.manifest_path.name})")
        if self.root.exists() and not self.root.is_dir():
            raise FileExistsError(f"the output path {self.root} exists and is not a folder")
        if self.root.exists() and any(p for p in self.root.iterdir() if not p.name.startswith(".")):
            raise FileExistsError(
                f"the output folder {self.root} is not empty and holds no triage store; pick a new or empty folder"
            )
        self.items_dir.mkdir(parents=True, exist_ok=True)
        self.predictions_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.manifest_path, {"format": FORMAT, "version": VERSION, "fingerprint": dict(fingerprint)})

    def manifest(self) -> dict[str, Any]:
        data = _read_json(self.manifest_path)
        if data.get("format") != FORMAT:
            raise TriageSettingsMismatch(f"{self.manifest_path} is not a faccent-widget triage manifest")
        return data

    def check(self, fingerprint: Mapping[str, Any]) -> None:
        """Raise :class:`TriageSettingsMismatch` unless the store was made with ``fingerprint``."""
        data = self.manifest()
        if data.get("version") != VERSION:
            raise TriageSettingsMismatch(
                f"{self.root} holds a triage store of format version {data.get('version')}, this version "
                f"writes {VERSION}; use a new output folder"
            )
        old = data.get("fingerprint", {})
        new = json.loads(json.dumps(dict(fingerprint)))  # same JSON normal form as stored
        diffs = _diff(old, new)
        if diffs:
            raise TriageSettingsMismatch(
                f"{self.root} holds a triage made with other settings ({'; '.join(diffs)}); results are never "
                "mixed: use a new output folder, or rerun with the stored settings"
            )

    # ------------------------------------------------------------------ predictions
    def write_predictions(self, rank: int, rows: list[dict[str, Any]]) -> None:
        """One prediction batch (rows with an ``index``), written atomically."""
        if not rows:
            return
        name = f"r{rank:03d}-{rows[0]['index']:08d}-{len(rows):05d}.json"
        atomic_write_json(self.predictions_dir / name, rows)

    def predictions(self) -> dict[int, dict[str, Any]]:
        """Every stored prediction row by item index (a duplicate index keeps the first file's row)."""
        out: dict[int, dict[str, Any]] = {}
        if not self.predictions_dir.is_dir():
            return out
        for f in sorted(self.predictions_dir.glob("*.json")):
            for row in _read_json(f):
                out.setdefault(int(row["index"]), row)
        return out

    # ------------------------------------------------------------------ items
    def item_dir(self, index: int) -> Path:
        return self.items_dir / f"{index:08d}"

    def is_done(self, index: int) -> bool:
        d = self.item_dir(index)
        return all((d / f).is_file() for f in _ITEM_FILES)

    def done(self) -> set[int]:
        """Indices of finished items."""
        if not self.items_dir.is_dir():
            return set()
        return {int(d.name) for d in self.items_dir.iterdir() if d.name.isdigit() and self.is_done(int(d.name))}

    def write_item(self, index: int, row: Mapping[str, Any], files: Mapping[str, bytes]) -> bool:
        """Write one item folder atomically: fill a temporary folder, then rename it into place.

        Returns False (and discards the new files) if the item was already finished.
        """
        final = self.item_dir(index)
        tmp = self.items_dir / f".tmp-{index:08d}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        try:
            for name, data in files.items():
                with open(tmp / name, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
            atomic_write_json(tmp / "row.json", dict(row))
            if final.exists():
                if self.is_done(index):
                    return False
                shutil.rmtree(final)  # an incomplete folder from another writer: replace it
            os.rename(tmp, final)
            return True
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def item_row(self, index: int) -> dict[str, Any]:
        return _read_json(self.item_dir(index) / "row.json")

    def remove_temporaries(self) -> int:
        """Delete temporaries left by killed runs (call only when no other process writes); returns the count."""
        count = 0
        for folder in (self.items_dir, self.predictions_dir, self.root):
            if not folder.is_dir():
                continue
            for p in folder.iterdir():
                if p.name.startswith(".tmp-") or ".tmp-" in p.name:
                    shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
                    count += 1
        return count

    # ------------------------------------------------------------------ index
    def write_index(self, index: Mapping[str, Any]) -> None:
        atomic_write_json(self.index_path, dict(index))

    def read_index(self) -> dict[str, Any]:
        if not self.index_path.is_file():
            raise FileNotFoundError(f"no triage index in {self.root} (the run has not finished its merge)")
        return _read_json(self.index_path)

    def rows(self, indices: Iterable[int]) -> list[dict[str, Any]]:
        return [self.item_row(i) for i in indices]
