"""The synced traits of :class:`~faccent_widget.FaccentWidget` (``docs/widget-protocol.md`` lists them with
their meaning; ``js/widget.js``'s ``Traits`` typedef restates them)."""

from __future__ import annotations

from typing import Any

import anywidget
import traitlets

from ..core.config import DEFAULT_LAMBDA, LAMBDA_SLIDER, PRESETS
from ..core.masks import DEFAULT_P1, DEFAULT_P2

__all__ = ["PanelTraits"]


class PanelTraits(anywidget.AnyWidget):
    """The state the browser sees: settings (``lam``, ``steps``, …), tiles, progress and messages."""

    top: traitlets.List[Any] = traitlets.List([]).tag(sync=True)
    inhibited: traitlets.List[Any] = traitlets.List([]).tag(sync=True)
    target = traitlets.Dict({}).tag(sync=True)
    lam = traitlets.Float(DEFAULT_LAMBDA).tag(sync=True)
    lam_min = traitlets.Float(LAMBDA_SLIDER[0]).tag(sync=True)
    lam_max = traitlets.Float(LAMBDA_SLIDER[1]).tag(sync=True)
    lam_recommended = traitlets.Float(None, allow_none=True).tag(sync=True)
    reg_layer = traitlets.Unicode("").tag(sync=True)
    reg_layers: traitlets.List[Any] = traitlets.List([]).tag(sync=True)
    default_reg_layer = traitlets.Unicode("").tag(sync=True)
    latent_layers: traitlets.List[Any] = traitlets.List([]).tag(sync=True)
    preset = traitlets.Unicode("preview").tag(sync=True)
    presets = traitlets.List(list(PRESETS)).tag(sync=True)
    steps = traitlets.Int(40).tag(sync=True)
    p1 = traitlets.Float(DEFAULT_P1).tag(sync=True)
    p2 = traitlets.Float(DEFAULT_P2).tag(sync=True)
    view = traitlets.Unicode("masked").tag(sync=True)
    #: True: drive the image *away* from the target (``fw.suppress``): what fades is what argued for it
    away = traitlets.Bool(False).tag(sync=True)
    seed_png = traitlets.Bytes(b"").tag(sync=True)
    gradcam_png = traitlets.Bytes(b"").tag(sync=True)
    mask_png = traitlets.Bytes(b"").tag(sync=True)
    accent_png = traitlets.Bytes(b"").tag(sync=True)
    running = traitlets.Bool(False).tag(sync=True)
    step = traitlets.Int(0).tag(sync=True)
    seed_prob = traitlets.Float(None, allow_none=True).tag(sync=True)
    prob = traitlets.Float(None, allow_none=True).tag(sync=True)
    status = traitlets.Unicode("").tag(sync=True)
    error = traitlets.Unicode("").tag(sync=True)
    #: "predicted X (0.41) — true Y (0.12)" when a true label is known and the model gets it wrong, else ""
    predicted_vs_true = traitlets.Unicode("").tag(sync=True)
    device = traitlets.Unicode("cpu").tag(sync=True)
    snapshot_steps: traitlets.List[Any] = traitlets.List([]).tag(sync=True)
    #: plain-words captions naming the class, a Grad-CAM colour bar and a mask key (for teaching); on in a fresh panel
    explain = traitlets.Bool(True).tag(sync=True)
    #: a large photo | accentuation comparison with a swipe slider and larger text (for a projector)
    presentation = traitlets.Bool(False).tag(sync=True)
    #: the numbers of the accentuation as shown, all at the shown step (``Session.numbers``): set at the
    #: end of a run, at Stop and when scrubbing; ``{}`` while a run is followed live (its frames say them);
    #: a gallery batch puts back the single run's when it is done or stopped
    shown: traitlets.Dict[str, Any] = traitlets.Dict({}).tag(sync=True)
    #: True after a Stop while the stopped run can go on (same settings): the Continue button
    resumable = traitlets.Bool(False).tag(sync=True)
    #: "settings changed since the last run — press Accentuate" when they did, else ""
    rerun_hint = traitlets.Unicode("").tag(sync=True)
    #: the judge model's p(target) of the seed and of the shown image (``judge=``): ``name``, ``seed_prob``,
    #: ``prob`` (None until there is an accentuation); ``{}`` without a judge
    judge: traitlets.Dict[str, Any] = traitlets.Dict({}).tag(sync=True)
