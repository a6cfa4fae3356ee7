"""Fixed-size models with a non-square input (issue 25, deliver 2): a timm ViT built with
``img_size=(160, 256)`` and a Hugging Face ViT with ``image_size=(64, 96)`` run in the model view,
accentuation, Grad-CAM, masks, the widget session, path similarity and triage, at their own (h, w) taken
from the metadata; a forced other size is an error naming the (h, w) accepted. Crops of such a model are
resized to (h, w), on the CPU's sparse-product path as ``roi_align`` does.

Random weights, 2 blocks, 2–3 steps of 2 crops: fast on a 2-core CPU.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.ops import roi_align

import faccent_widget as fw
from faccent_widget.core.attribution import default_gradcam_layer, gradcam
from faccent_widget.core.config import resolve_config
from faccent_widget.core.model import Model
from faccent_widget.core.objectives import resolve_objective
from faccent_widget.core.transforms import CropPlan, _crop_roi_align, crop_boxes, sample_boxes, sample_noise
from faccent_widget.widget.session import Session

HW = (160, 256)
RUN = dict(steps=3, n_crops=2, canvas=96, seed=0)


def _state(module: nn.Module) -> tuple:
    """Everything a run must leave as it was: modes, requires_grad, devices, hooks, weights."""
    return (
        [m.training for m in module.modules()],
        [p.requires_grad for p in module.parameters()],
        {p.device for p in module.parameters()},
        sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules()),
        [p.detach().clone() for p in module.parameters()],
    )


def _same(a: tuple, b: tuple) -> bool:
    return a[:4] == b[:4] and all(torch.equal(x, y) for x, y in zip(a[4], b[4]))


@pytest.fixture(scope="module")
def vit() -> Model:
    import timm

    torch.manual_seed(0)
    return Model(timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=HW, depth=2))


def test_the_size_comes_from_the_metadata_and_the_model_view_is_h_by_w(vit, chelsea, coffee):
    assert vit.input_hw == HW and not vit.accepts_any_size
    assert vit.input_size == 256  # the longer side; crop_size accepts it
    assert vit.crop_size(None, 0.7) == 256 and vit.crop_hw(vit.crop_size()) == HW
    assert "input_size=(160, 256) (fixed)" in repr(vit)
    x = vit.to_input([chelsea, coffee])
    assert x.shape == (2, 3, *HW) and vit.to_input(torch.rand(3, 3, 50, 70)).shape == (3, 3, *HW)
    assert vit.prepare(chelsea).shape == (1, 3, *HW)
    layout = vit.layout(vit.default_reg_layer)
    assert layout.kind == "tokens" and layout.grid == (10, 16) and layout.positions == 1 + 160
    assert len(vit.predict(chelsea, k=3)) == 3


def test_a_forced_other_size_names_the_h_w_accepted(vit, chelsea):
    named = r"fixed input size of 160×256 \(timm patch_embed.img_size\); not input_size=224"
    with pytest.raises(ValueError, match=named):
        Model(vit.module, input_size=224)
    with pytest.raises(ValueError, match=r"input_size=\(160, 256\)"):
        Model(vit.module, input_size=(256, 160))
    with pytest.raises(ValueError, match=r"only accepts 160×256 inputs.*input_size=224"):
        fw.start_run(vit, chelsea, 3, input_size=224, **RUN)
    assert Model(vit.module, input_size=HW).input_hw == HW  # the pair itself is accepted


def test_accentuate_raises_the_objective_and_leaves_the_model_untouched(vit, chelsea):
    module = vit.module
    module.train()  # a user's model in train mode stays there
    before = _state(module)
    result = fw.accentuate(vit, chelsea, 3, lam=0.0, **RUN)
    assert _same(_state(module), before)
    module.eval()
    assert result.config.input_size == 256
    assert np.isfinite(result.history["objective"]).all()
    assert result.score.value > result.seed_score.value  # the full-image objective rose
    assert result.image.shape == result.seed.shape and result.seed.shape[-2] == 96  # the canvas, aspect kept
    assert float((result.image - result.seed).abs().max()) > 0
    run = fw.start_run(vit, chelsea, 3, **RUN)
    assert run.crop_hw == HW
    seen: list[tuple[int, ...]] = []
    handle = module.patch_embed.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape)))
    try:
        run.step()
    finally:
        handle.remove()
    assert seen and all(s[-2:] == HW for s in seen)  # the crops fed to the model are (160, 256)


def test_gradcam_and_masks_have_the_model_view_shape(vit, chelsea, coffee):
    x = vit.to_input([chelsea, coffee])
    assert default_gradcam_layer(vit, 3) == "blocks.1.norm1"
    cam = gradcam(vit, x, 3)
    assert cam.shape == (2, *HW) and torch.isfinite(cam).all() and cam.abs().amax() > 0
    norm = fw.CollectiveNormalizer().fit_images(vit, [chelsea, coffee], 3)
    mask = norm(cam)
    assert mask.shape == (2, *HW) and 0 <= float(mask.min()) <= float(mask.max()) <= 1


def test_the_widget_session_runs_two_frames(vit, chelsea, coffee):
    session = Session(vit, chelsea, reference=[chelsea, coffee], mask_size=64)
    objective = resolve_objective(vit, 3)
    heat, session.mask = session.heat_and_mask(objective, 50, 98)
    assert heat.shape[-2:] == session.mask.shape == session.display_seed.shape[-2:]
    session.start([objective], lam=0.5, config=resolve_config("preview", vit.device, steps=2, n_crops=2, canvas=64))
    first = session.next_frame(0.0, "masked", None)
    second = session.next_frame(0.0, "masked", None)
    assert first is not None and second is not None
    assert (first.step, second.step, second.done) == (1, 2, True)
    assert second.image.shape[0] == 3 and np.isfinite(second.objective_history).all()
    assert session.result is not None and session.result.config.input_size == 256


def test_path_similarity_and_triage(vit, chelsea, coffee):
    sim = fw.path_similarity(vit, [chelsea, coffee], layers=["blocks.0", "logits"])
    assert sim.layers == ["blocks.0", "logits"] and all(np.isfinite(v) for v in sim.per_layer.values())
    pairs = [(chelsea, "tabby"), (coffee, "espresso")]
    report = fw.triage(vit, pairs, targets="predicted", steps=2, n_crops=2, canvas=64)
    summary = report.summary
    assert summary["items"] == 2 and summary["skipped"] == 0 and summary["accentuated"] == summary["mistakes"]
    assert all(set(item.accentuations) == {"predicted"} for item in report)


def test_a_hugging_face_vit_with_a_non_square_image_size(chelsea):
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(
        image_size=(64, 96),
        patch_size=16,
        num_hidden_layers=2,
        hidden_size=32,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=10,
    )
    torch.manual_seed(0)
    model = Model(transformers.ViTForImageClassification(config).eval())
    assert model.input_hw == (64, 96) and not model.accepts_any_size
    assert model.layout(model.default_reg_layer).grid == (4, 6)
    before = _state(model.module)
    result = fw.accentuate(model, chelsea, 1, steps=2, n_crops=2, canvas=64, seed=0)
    assert np.isfinite(result.history["objective"]).all() and _same(_state(model.module), before)
    assert gradcam(model, model.to_input(chelsea), 1).shape == (1, 64, 96)
    with pytest.raises(ValueError, match=r"fixed input size of 64×96 \(Hugging Face config.image_size\)"):
        Model(model.module, input_size=64)


@pytest.mark.parametrize("canvas", [(50, 70), (70, 50)])
@pytest.mark.parametrize("out", [(16, 24), (24, 16)])
def test_non_square_crops_match_roi_align(canvas, out):
    """The CPU's sparse-product crops equal ``roi_align`` with an (h, w) output, forward and backward."""
    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, *canvas, generator=g, requires_grad=True)
    boxes = sample_boxes(3, *canvas, (0.2, 1.0), g)
    ours = crop_boxes(images, boxes, out)
    rois = torch.cat([torch.arange(2.0).repeat_interleave(3)[:, None], boxes.repeat(2, 1)], 1)
    ref = roi_align(images, rois, output_size=out, spatial_scale=1.0, sampling_ratio=-1, aligned=True)
    assert ours.shape == (6, 3, *out)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(_crop_roi_align(images, boxes, out), ref)  # the GPU's path, run here
    w = torch.rand(ref.shape, generator=g)
    (ga,) = torch.autograd.grad((ours * w).sum(), images)
    (gb,) = torch.autograd.grad((ref * w).sum(), images)
    torch.testing.assert_close(ga, gb, rtol=1e-5, atol=1e-6)
    noise = sample_noise(3, out, 0.1, g)
    assert noise is not None and noise.shape == (3, 3, *out)
    assert CropPlan(boxes, out, *canvas)(images.detach(), noise).shape == (6, 3, *out)
