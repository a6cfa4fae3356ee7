"""The on-disk triage store: resumable, atomic, and tied to one set of settings.

Layout under the output folder::

    .lock                       held (``flock``) by the run writing the store; a second run is refused
    triage.json                 manifest: format version + the settings fingerprint
    predictions/r<rank>-<run id>-<n>.json   prediction rows, one file per prediction batch
    predictions/r<rank>-<run id>-<n>.npz    that batch's probabilities and penultimate features
                                (float16, one row per prediction row; written before the rows)
    exemplars/<item id>.jpg     thumbnails of the natural exemplars shown in the report
    items/<item id>/            one folder per finished mistake:
        row.json                labels, probabilities, scores, raw Grad-CAM maps, run id, time, files
        seed.png                the seed at the canvas size
        predicted.png, true.png the accentuations toward each target
    index.json                  the merged index (written last, by rank 0), with the skipped files

Predictions and items are stored by *item id* (a digest of the file's key, true label, size and
modification time, see :mod:`.data`), not by position: files added, removed or repaired between runs
change only their own entries, and a rerun keeps every result of the files that did not change.

Every file is written to a temporary name and renamed into place, and an item folder is filled under
a temporary name and renamed as a whole, so a killed run leaves only complete items behind (plus
temporaries that the next run removes). A rerun skips what is there (an item whose row or any of
its images is missing or unreadable is redone). A store made with other settings (model, weights,
preset, λ, targets, steps…) is refused with the differences listed: results are never mixed. A damaged
manifest or index raises :class:`TriageStoreError` naming the file.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import socket
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "FORMAT",
    "TriageSettingsMismatch",
    "TriageStore",
    "TriageStoreError",
    "TriageStoreLocked",
    "atomic_write_bytes",
    "atomic_write_json",
]

FORMAT = "faccent-widget/triage"
VERSION = 2


class TriageStoreError(ValueError):
    """The output folder holds a damaged or unknown triage store; the message names the file."""


class TriageSettingsMismatch(TriageStoreError):
    """The output folder holds a triage made with other settings; the message lists them."""


class TriageStoreLocked(RuntimeError):
    """Another triage is writing to the same output folder."""


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


def _read_store_json(path: Path, what: str) -> Any:
    """``path``'s JSON, or :class:`TriageStoreError` naming the file when it is damaged."""
    try:
        return _read_json(path)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TriageStoreError(
            f"the {what} {path} is damaged ({type(exc).__name__}: {exc}); use a new output folder, or delete "
            f"the folder to start over"
        ) from None


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
        self.exemplars_dir = self.root / "exemplars"
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
        self._check_usable()
        self.items_dir.mkdir(parents=True, exist_ok=True)
        self.predictions_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.manifest_path, {"format": FORMAT, "version": VERSION, "fingerprint": dict(fingerprint)})

    def _check_usable(self) -> None:
        """Raise ``FileExistsError`` unless the output path is missing, an empty folder or a triage store."""
        if self.root.exists() and not self.root.is_dir():
            raise FileExistsError(f"the output path {self.root} exists and is not a folder")
        if self.manifest_path.exists():
            return
        if self.root.exists() and any(p for p in self.root.iterdir() if not p.name.startswith(".")):
            raise FileExistsError(
                f"the output folder {self.root} is not empty and holds no triage store; pick a new or empty folder"
            )

    def manifest(self) -> dict[str, Any]:
        data = _read_store_json(self.manifest_path, "triage manifest")
        if not isinstance(data, dict) or data.get("format") != FORMAT:
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

    # ------------------------------------------------------------------ lock
    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the store's lock (``.lock``, an ``flock``) while the block runs; raise
        :class:`TriageStoreLocked` at once when another run holds it (the lock goes with its process)."""
        self._check_usable()  # before the lock file is made: another folder is left as it was
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / ".lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if not _try_lock(fd):
                holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
                raise TriageStoreLocked(
                    f"another triage is writing to {self.root} ({holder}); wait for it to finish, or use another "
                    "output folder"
                )
            os.ftruncate(fd, 0)
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {stamp}\n".encode(), 0)
            try:
                yield
            finally:
                os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    # ------------------------------------------------------------------ predictions
    def write_predictions(
        self, rank: int, run_id: str, rows: list[dict[str, Any]], arrays: Mapping[str, np.ndarray] | None = None
    ) -> None:
        """One prediction batch (rows with an ``id``), written atomically under a name of this run;
        ``arrays`` (name → (len(rows), D), e.g. ``probs`` and ``features``) go to an ``.npz`` of the
        same name as float16, written first (so rows on disk always have their arrays)."""
        if not rows:
            return
        stem = f"r{rank:03d}-{run_id}-{uuid.uuid4().hex[:8]}"
        if arrays:
            buf = io.BytesIO()
            np.savez(buf, **{k: np.asarray(v, dtype=np.float16) for k, v in arrays.items()})  # type: ignore[arg-type]
            atomic_write_bytes(self.predictions_dir / f"{stem}.npz", buf.getvalue())
        atomic_write_json(self.predictions_dir / f"{stem}.json", rows)

    def prediction_arrays(self, name: str) -> dict[str, np.ndarray]:
        """Item id → its row of the stored array ``name`` (``"probs"`` or ``"features"``, float16);
        items predicted without it (or whose ``.npz`` is damaged) are missing."""
        out: dict[str, np.ndarray] = {}
        if not self.predictions_dir.is_dir():
            return out
        for f in sorted(self.predictions_dir.glob("*.json")):
            npz = f.with_suffix(".npz")
            try:
                rows = _read_json(f)
                with np.load(npz) as data:
                    values = data[name] if name in data.files else None
            except (OSError, ValueError, KeyError):
                continue
            if values is None or not isinstance(rows, list) or len(values) != len(rows):
                continue
            for row, v in zip(rows, values):
                if isinstance(row, dict) and isinstance(row.get("id"), str):
                    out.setdefault(row["id"], v)
        return out

    def write_exemplar_thumbnail(self, item_id: str, jpeg: bytes) -> None:
        self.exemplars_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.exemplar_path(item_id), jpeg)

    def exemplar_path(self, item_id: str) -> Path:
        return self.exemplars_dir / f"{item_id}.jpg"

    def predictions(self) -> dict[str, dict[str, Any]]:
        """Every stored prediction row by item id (a damaged file is ignored: its items are predicted again)."""
        out: dict[str, dict[str, Any]] = {}
        if not self.predictions_dir.is_dir():
            return out
        for f in sorted(self.predictions_dir.glob("*.json")):
            try:
                rows = _read_json(f)
            except (OSError, ValueError):
                continue
            for row in rows if isinstance(rows, list) else []:
                if isinstance(row, dict) and isinstance(row.get("id"), str):
                    out.setdefault(row["id"], row)
        return out

    # ------------------------------------------------------------------ items
    def item_dir(self, item_id: str) -> Path:
        return self.items_dir / item_id

    def is_done(self, item_id: str) -> bool:
        """The item's row is readable and every file it lists is there."""
        d = self.item_dir(item_id)
        try:
            row = _read_json(d / "row.json")
        except (OSError, ValueError):
            return False
        files = row.get("files") if isinstance(row, dict) else None
        return isinstance(files, list) and all((d / str(f)).is_file() for f in files)

    def done(self) -> set[str]:
        """Ids of finished items."""
        if not self.items_dir.is_dir():
            return set()
        return {d.name for d in self.items_dir.iterdir() if not d.name.startswith(".") and self.is_done(d.name)}

    def write_item(self, item_id: str, row: Mapping[str, Any], files: Mapping[str, bytes]) -> bool:
        """Write one item folder atomically: fill a temporary folder, then rename it into place.

        Returns False (and discards the new files) if the item was already finished.
        """
        final = self.item_dir(item_id)
        tmp = self.items_dir / f".tmp-{item_id}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        try:
            for name, data in files.items():
                with open(tmp / name, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
            atomic_write_json(tmp / "row.json", {**row, "files": sorted(files)})
            if final.exists():
                if self.is_done(item_id):
                    return False
                shutil.rmtree(final)  # an incomplete folder (a file deleted or damaged): replace it
            os.rename(tmp, final)
            return True
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def item_row(self, item_id: str) -> dict[str, Any]:
        return _read_json(self.item_dir(item_id) / "row.json")

    def remove_temporaries(self) -> int:
        """Delete temporaries left by killed runs (call only under :meth:`locked`); returns the count."""
        count = 0
        for folder in (self.items_dir, self.predictions_dir, self.exemplars_dir, self.root):
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
        data = _read_store_json(self.index_path, "triage index")
        if not isinstance(data, dict):
            raise TriageStoreError(f"the triage index {self.index_path} is damaged (not a JSON object)")
        return data

    def rows(self, item_ids: Iterable[str]) -> list[dict[str, Any]]:
        return [self.item_row(i) for i in item_ids]


def _try_lock(fd: int) -> bool:
    """Take an exclusive, non-blocking lock on ``fd``; False when another process holds it."""
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
        except OSError:
            return False
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True
