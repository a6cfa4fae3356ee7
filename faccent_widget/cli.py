"""The main job: ``python -m faccent_widget [IMAGE] [--target …] [--lam …] [--preset …] [--out FILE]``.

``--suppress`` drives the image away from the target; ``--caricature LAYER`` amplifies the image's own
pattern at a layer instead of a target.

``python -m faccent_widget triage DIR --out OUT …`` triages a labelled folder instead (see
``faccent_widget.triage.cli``).

Prints the default model's top-5 for the image (default: the sample ``chelsea``), accentuates the
2nd most likely class (or ``--target``), prints the target probability before → after and the time
taken, and writes a PNG panel: seed | accentuation | amplified difference.

User errors (a bad setting, an unknown class or layer, an unreadable image, an unwritable ``--out``)
print one line on stderr and exit with status 2, before any long work where they can be checked first.
Anything else is a bug and shows its traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from .accentuate import accentuate
from .core.compositing import difference_image, labelled_strip
from .core.config import PRESETS, check_lambda, check_setting
from .core.derived_objectives import caricature, suppress
from .core.model import LayerNotFoundError, Model
from .core.objectives import Objective, resolve_objective
from .images import load_image, sample_image, sample_image_names
from .zoo import WeightsUnavailableError, available_models, load_model

__all__ = ["main", "USER_ERRORS"]

#: Exceptions that mean "the input was wrong" (reported in one line, exit status 2), not a bug: the
#: library's bad-value and file errors and the project's own user errors. A ``KeyError`` or
#: ``TypeError`` from elsewhere is a bug and keeps its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, LayerNotFoundError, WeightsUnavailableError)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m faccent_widget", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "image", nargs="?", help=f"image file or sample name ({', '.join(sample_image_names())}); default: chelsea"
    )
    p.add_argument("--target", help="class label, class index or layer:unit (default: the 2nd most likely class)")
    p.add_argument("--suppress", action="store_true", help="drive the image away from the target instead of toward it")
    p.add_argument(
        "--caricature",
        metavar="LAYER",
        help="amplify the image's own activation pattern at LAYER (no class needed; replaces --target)",
    )
    p.add_argument("--lam", type=float, default=None, help="regularisation strength λ (balanced; default 1)")
    p.add_argument(
        "--preset", choices=list(PRESETS), default=None, help="settings preset (default: gpu on CUDA, preview on CPU)"
    )
    p.add_argument("--steps", type=int, default=None, help="override the preset's step count")
    p.add_argument("--model", default="efficientnet_lite0", help=f"one of {', '.join(available_models())}")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--out", default="faccent_panel.png", help="output PNG panel (default faccent_panel.png)")
    return p


def check_out(path: str) -> Path:
    """The ``--out`` path, checked before the run: an image extension PIL can write, an existing,
    writable folder, and not a folder itself. ``ValueError`` / ``FileNotFoundError`` otherwise."""
    out = Path(path)
    if out.is_dir():
        raise ValueError(f"--out {path!r} is a folder; give a file name such as {out / 'panel.png'}")
    ext = out.suffix.lower()
    if ext not in Image.registered_extensions():
        raise ValueError(f"--out {path!r}: unknown image extension {ext or '(none)'!r}; use e.g. panel.png")
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(f"--out {path!r}: the folder {str(folder)!r} does not exist")
    if not os.access(folder, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise PermissionError(f"--out {path!r}: not writable")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Run the main job; returns the exit status (0, or 2 after a user error printed on stderr)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "triage" and not Path("triage").is_file():
        from .triage.cli import main as triage_main

        return triage_main(argv[1:])
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except USER_ERRORS as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"python -m faccent_widget: error: {message}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    out = check_out(args.out)
    if args.lam is not None:
        check_lambda(args.lam)  # e.g. --lam nan: refused before the model loads
    for name in ("steps", "seed"):
        if getattr(args, name) is not None:
            check_setting(name, getattr(args, name))
    model = load_model(args.model)
    name = args.image or "chelsea"
    image = sample_image(name) if name in sample_image_names() and not Path(name).exists() else load_image(name)
    top = model.predict(image, k=5)
    print(f"model: {model.name}   image: {name}   device: {model.device}")
    for rank, p in enumerate(top, 1):
        print(f"  {rank}. {p.label:<28s} p={p.prob:.3f}  (class {p.index})")
    if args.caricature is not None:
        if args.target is not None or args.suppress:
            raise ValueError("--caricature LAYER replaces --target and --suppress; give one of them")
        target: Objective = caricature(model.resolve_layer(args.caricature))
    else:
        target = _target(model, args.target if args.target is not None else top[1].index)
        if args.suppress:
            target = suppress(target)
    t0 = time.perf_counter()
    result = accentuate(model, image, target, lam=args.lam, preset=args.preset, steps=args.steps, seed=args.seed)
    elapsed = time.perf_counter() - t0
    cfg = result.config
    print(
        f"accentuating {result.target}: preset {cfg.preset}, {cfg.steps} steps, {cfg.n_crops} crops of "
        f"{cfg.input_size} px, λ={result.lam:g}, reg layer {result.reg_layer}"
    )
    if result.seed_score.prob is not None and result.score.prob is not None:
        print(
            f"target probability: {result.seed_score.prob:.3f} -> {result.score.prob:.3f}   "
            f"(logit {result.seed_score.value:.2f} -> {result.score.value:.2f})"
        )
    else:
        print(f"target activation: {result.seed_score.value:.3f} -> {result.score.value:.3f}")
    print(f"time: {elapsed:.1f} s ({1000 * elapsed / cfg.steps:.0f} ms/step)")
    strip = labelled_strip(
        [result.seed, result.image, difference_image(result.seed, result.image, gain=4.0)],
        ["seed", f"accentuation: {result.target}", "difference x4"],
    )
    strip.save(out)
    print(f"panel written to {out.resolve()}")
    return 0


def _target(model: Model, given: int | str) -> Objective:
    """``--target`` as an objective; a class index or channel that is not there is a user error."""
    if isinstance(given, str) and given.isdigit():
        given = int(given)
    try:
        return resolve_objective(model, given)
    except IndexError as exc:  # e.g. "channel 999 is out of range for blocks.4: it has channels 0…79"
        raise ValueError(f"--target {given!r}: {exc}") from exc


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
