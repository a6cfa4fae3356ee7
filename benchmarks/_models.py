"""The models the speed benchmarks time: the offline default (pretrained EfficientNet-Lite0) and
GoogLeNet, the paper's model, whose pretrained weights cannot be downloaded here.

Random GoogLeNet as torchvision initialises it (truncated normal, std 0.01) shrinks activations layer
by layer: its image gradients are about 1e-17, Adam's second moments fall into denormal floats and the
optimiser alone runs 10–20× slower than on any trained network (measured: 8 ms instead of 0.7 ms per
step at 512 px). For timing, its BatchNorm statistics are therefore re-estimated on the sample images
(one pass in train mode, cumulative averages), which gives every layer a trained network's activation
scale. Its weights stay random: the benchmarks time the work, not the result.
"""

from __future__ import annotations

import torch

import faccent_widget as fw

__all__ = ["load_benchmark_model"]


def load_benchmark_model(name: str) -> fw.Model:
    """``efficientnet_lite0``: pretrained; anything else: random weights with re-estimated BN statistics."""
    if name == "efficientnet_lite0":
        return fw.load_model(name)
    model = fw.load_model(name, pretrained=False)
    module = model.module
    bns = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if bns:
        names = ("chelsea", "coffee", "astronaut", "rocket")
        images = torch.stack([fw.load_image(fw.sample_image(s), size=(224, 224)) for s in names])
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average over the passes
        module.train()
        with torch.no_grad():
            module(model.normalize(images))
        module.eval()
    return model
