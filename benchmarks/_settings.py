"""The engine settings the validation benchmarks share on their command line (one definition)."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_engine_arguments", "engine_settings"]


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """--preset, --steps, --n-crops, --input-size, --canvas, --seed and --fp32 (CPU-sized defaults)."""
    parser.add_argument("--preset", default="preview")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--n-crops", type=int, default=4)
    parser.add_argument("--input-size", type=int, default=None)
    parser.add_argument("--canvas", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0, help="engine seed (crops; random weights where used)")
    parser.add_argument(
        "--fp32", action="store_true", help="fp32 model passes (default: the device policy, bf16 on AMX CPUs)"
    )


def engine_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings ``accentuate``/``calibrate_lambda`` take, from the parsed arguments."""
    settings: dict[str, Any] = dict(
        preset=args.preset,
        steps=args.steps,
        n_crops=args.n_crops,
        input_size=args.input_size,
        canvas=args.canvas,
        seed=args.seed,
    )
    if args.fp32:
        settings["autocast"] = False
    return settings
