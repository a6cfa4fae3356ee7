"""Command line: top-5 of an image on the default model (the engine extends this with accentuation)."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from .images import load_image, sample_image
from .models import load_model

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m faccent_widget", description=__doc__)
    parser.add_argument("image", nargs="?", help="image file (default: the sample image 'chelsea')")
    args = parser.parse_args(argv)
    model = load_model()
    image = load_image(args.image) if args.image else sample_image("chelsea")
    print(f"model: {model.name}; image: {args.image or 'sample chelsea'}")
    for rank, p in enumerate(model.predict(image, k=5), 1):
        print(f"  {rank}. {p.label:<30s} {p.prob:6.3f}  (class {p.index})")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
