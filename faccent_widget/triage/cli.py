"""``python -m faccent_widget triage DIR --out OUT [...]``: triage a labelled image folder from the shell.

Writes the resumable store and ``OUT/report.html`` and prints a short summary (accuracy, mistakes,
done, time). ``--demo`` builds a small labelled folder from the bundled sample images and triages it
with quick settings. Under ``torchrun --nproc_per_node N -m faccent_widget triage ...`` each process
takes a share and rank 0 writes the report. User errors print one line on stderr and exit with 2.
Progress goes to stderr (rank 0 only); the summary to stdout. Everything printed that comes from
files or the model (file names, labels, messages) has its control characters shown as ``\\xNN``
escapes, so a file name cannot move the cursor, retitle or clear the terminal.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..zoo import WeightsUnavailableError, load_model
from .data import TriageInputError
from .demo import build_demo_folder
from .distributed import RankError
from .labels import LABEL_ISSUE_METHODS
from .report import RANKINGS, TriageReport
from .run import triage
from .store import TriageStoreLocked

__all__ = ["USER_ERRORS", "main", "safe"]

#: What the command reports as one line with exit status 2 (anything else is a bug: its traceback shows).
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,  # TriageInputError, TriageImageError, TriageStoreError, TriageSettingsMismatch, bad settings
    OSError,  # unreadable folders, a read-only --out
    WeightsUnavailableError,
    TriageStoreLocked,
    RankError,
    ImportError,  # --label-issues cleanlab without cleanlab (the message names the install command)
)

#: Quick settings of ``--demo`` (about a minute on a 2-core CPU): the preview preset, shortened.
DEMO_SETTINGS: dict[str, Any] = {"preset": "preview", "steps": 12, "n_crops": 2, "canvas": 160, "input_size": 128}


#: C0 and C1 control characters, DEL, and the bidirectional overrides (they reorder what is shown).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def safe(value: Any) -> str:
    """``str(value)`` fit for a terminal: control characters and undecodable bytes as escapes."""
    text = str(value)
    try:
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate outside the escape range
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return _CONTROL.sub(
        lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 256 else f"\\u{ord(m.group()):04x}", text
    )


def _int_at_least(minimum: int, what: str) -> Callable[[str], int]:
    """An argparse type: an integer ≥ ``minimum`` (``what`` names it in the error)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


_count = _int_at_least(0, "an integer ≥ 0")
_positive = _int_at_least(1, "a positive integer")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m faccent_widget triage",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("folder", nargs="?", help="image folder in the ImageFolder layout (one subfolder per class)")
    p.add_argument(
        "--out", help="output folder (resumable store + report.html); default for --demo: faccent_triage_demo"
    )
    p.add_argument(
        "--model", default="efficientnet_lite0", help="model name for load_model (default efficientnet_lite0)"
    )
    p.add_argument("--limit", type=_positive, help="triage only N images, spread evenly over the folder")
    p.add_argument("--class-map", help="file mapping class folders to model labels (folder: label per line, or JSON)")
    p.add_argument("--demo", action="store_true", help="triage a small labelled folder built from the sample images")
    p.add_argument("--preset", help="engine preset: paper or preview (default: by device)")
    p.add_argument("--steps", type=_positive, help="optimisation steps per accentuation")
    p.add_argument("--crops", type=_positive, help="random crops per step (n_crops)")
    p.add_argument("--input-size", type=_positive, help="crop size fed to the model")
    p.add_argument("--canvas", type=_positive, help="shorter side of the accentuated image")
    p.add_argument("--lam", type=float, help="regularisation strength λ (balanced; default 1)")
    p.add_argument("--targets", default="predicted,true", help="comma-separated: predicted,true (default both)")
    p.add_argument("--batch-size", type=_positive, help="mistakes accentuated together (default 4 on CPU, 16 on GPU)")
    p.add_argument("--rank-by", default="margin", choices=list(RANKINGS), help="order of the report (default margin)")
    p.add_argument(
        "--label-issues",
        default="auto",
        choices=list(LABEL_ISSUE_METHODS),
        help="label-issue scores: cleanlab when installed (auto), cleanlab, self-confidence or off",
    )
    p.add_argument(
        "--exemplars",
        type=_count,
        default=3,
        help="nearest correctly classified images shown per class and mistake (default 3; 0: none)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed of the crops (default 0)")
    p.add_argument("--device", help="device, e.g. cpu or cuda:0 (default: the model's; torchrun: cuda:LOCAL_RANK)")
    p.add_argument("--html-items", type=_positive, help="put only the first N mistakes in report.html")
    p.add_argument(
        "--strict",
        action="store_true",
        help="stop at the first image or folder that cannot be read (default: skip it and list it in the summary)",
    )
    p.add_argument(
        "--no-cuda-graphs",
        action="store_true",
        help="run every step eagerly on a GPU (default: steps replayed as CUDA graphs there)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return p


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    settings: dict[str, Any] = dict(DEMO_SETTINGS) if args.demo else {}
    for key, value in (
        ("preset", args.preset),
        ("steps", args.steps),
        ("n_crops", args.crops),
        ("input_size", args.input_size),
        ("canvas", args.canvas),
        ("lam", args.lam),
    ):
        if value is not None:
            settings[key] = value
    if args.no_cuda_graphs:
        settings["cuda_graphs"] = False
    return settings


class _Progress:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.t0 = time.perf_counter()

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled or stage == "merge":
            return
        what = {"predict": "predicting", "accentuate": "accentuating mistakes"}.get(stage, stage)
        print(f"  {what}: {done}/{total}  ({time.perf_counter() - self.t0:.0f} s)", file=sys.stderr, flush=True)


def _summary(report: TriageReport, seconds: float, html_path: Path) -> str:
    s = report.summary
    run = report.runs[-1] if report.runs else {}
    lines = [
        f"model: {safe(report.settings['model']['name'])}   images: {s['items']}   "
        f"processes: {run.get('world_size', 1)}",
        f"accuracy: {100 * s['accuracy']:.1f}% ({s['correct']}/{s['items']})   mistakes: {s['mistakes']}   "
        f"accentuated: {s['accentuated']} ({run.get('accentuated', 0)} this run, {run.get('predicted', 0)} images "
        f"predicted this run)",
        f"time: {seconds:.1f} s   ({s['items'] / seconds:.2f} images/s)",
    ]
    if len(report):
        lines.append(f"top mistakes (ranked by {report.rank_by}):")
        for item in list(report)[:5]:
            lines.append(
                f"  {item.rank}. {safe(item.key)}: true {safe(item.true_label)} ({100 * item.p_true:.1f}%) -> "
                f"predicted {safe(item.predicted_label)} ({100 * item.p_predicted:.1f}%)"
                + ("   [likely label error]" if item.likely_label_error else "")
            )
    skipped = report.skipped
    if skipped:
        lines.append(f"skipped: {len(skipped)} file(s) or folder(s) that could not be read:")
        lines += [f"  {safe(r['key'])}: {safe(r['reason'])}" for r in skipped[:10]]
        if len(skipped) > 10:
            lines.append(f"  … and {len(skipped) - 10} more (listed in the report and in index.json)")
    lines.append(f"report: {safe(html_path.resolve())}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the triage command line; returns the exit status (2 on a user error)."""
    args = _parser().parse_args(argv)
    is_main = int(os.environ.get("RANK", "0")) == 0
    t0 = time.perf_counter()
    try:
        if args.demo and args.folder:
            raise ValueError("--demo builds its own image folder; drop the folder argument or --demo")
        if not args.demo and not args.folder:
            raise ValueError("give an image folder (ImageFolder layout), or --demo")
        if not args.demo and not args.out:
            raise ValueError("give an output folder with --out")
        out = Path(args.out or "faccent_triage_demo")
        targets = tuple(t.strip() for t in args.targets.split(",") if t.strip())
        with tempfile.TemporaryDirectory(prefix="faccent-triage-demo-") as tmp:
            folder = build_demo_folder(Path(tmp) / "images") if args.demo else Path(args.folder)
            if not folder.is_dir():
                raise TriageInputError(f"image folder not found: {folder}")
            model = load_model(args.model)
            report = triage(
                model,
                folder,
                out=out,
                limit=args.limit,
                class_map=args.class_map,
                targets=targets,
                batch_size=args.batch_size,
                rank_by=args.rank_by,
                label_issues=args.label_issues,
                exemplars=args.exemplars,
                seed=args.seed,
                device=args.device,
                progress=_Progress(is_main and not args.quiet),
                on_error="raise" if args.strict else "skip",
                **_settings(args),
            )
        if is_main:
            html_path = report.to_html(out / "report.html", max_items=args.html_items)
            print(_summary(report, time.perf_counter() - t0, html_path))
        return 0
    except USER_ERRORS as exc:
        print(f"error: {safe(_message(exc))}", file=sys.stderr)
        return 2


def _message(exc: BaseException) -> str:
    """One line for a user error (an OSError as "what: file", without its errno)."""
    if isinstance(exc, OSError) and exc.strerror and exc.filename:
        return f"{exc.strerror}: {exc.filename}"
    return " ".join(str(exc).split()) or type(exc).__name__
