"""Plain-language notes on a finished accentuation (``Accentuation.notes``), for people to read.

One note so far: the image could not move at this λ. The balance (``EngineConfig.balance``) makes the
objective and the regulariser pull equally at λ = 1 at step 1; for some images (issue 25: a white
image with black bars) the regulariser then holds the image at the seed for the whole run, and a user
who gets an unchanged image should be told so, with what to try.
"""

from __future__ import annotations

__all__ = ["FROZEN_PIXEL_CHANGE", "FROZEN_MIN_TRAVEL", "run_notes"]

#: A regularised run is reported as frozen when its largest pixel change stays below this, or when the
#: target's score did not rise, although the optimiser had room to move (``steps · lr >=
#: FROZEN_MIN_TRAVEL``: 10 steps at the default learning rate; shorter runs are simply short).
FROZEN_PIXEL_CHANGE = 0.05
FROZEN_MIN_TRAVEL = 0.5


def run_notes(change: float, gain: float, lam: float, lam_effective: float, steps: int, lr: float) -> list[str]:
    """Notes for one item: ``change`` = largest |final − seed| pixel change, ``gain`` = final − seed
    score of the target, ``lam`` as given, ``lam_effective`` = λ · balance."""
    if lam <= 0 or steps * lr < FROZEN_MIN_TRAVEL:
        return []
    if change < FROZEN_PIXEL_CHANGE:
        what = f"the image barely changed (largest pixel change {change:.3f} in {steps} steps)"
    elif gain <= 0:
        what = f"the target's score did not rise ({gain:+.3g} in {steps} steps)"
    else:
        return []
    return [
        f"{what}: at λ = {lam:g} (balanced: {lam_effective:.3g}) the regulariser outweighs the objective for "
        f"this image. Try a smaller λ (e.g. {lam / 10:g}), or λ = 0 to see what the objective alone does."
    ]
