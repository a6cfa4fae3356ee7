# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # faccent-widget quickstart
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/faccent-widget/faccent-widget/blob/main/notebooks/quickstart.ipynb)
#
# *Feature accentuation* (Hamblin et al.) shows **what** a vision model sees in an image: it nudges the
# image itself toward a class (or a hidden feature) while keeping it close to the original in an early
# layer of the model, so the changes exaggerate exactly the details that drive that class.
#
# Three cells: install (only needed on Colab), the interactive widget, and the same run headless.

# %%
import sys

if "google.colab" in sys.modules:  # on Colab: install the package and allow third-party widgets
    # %pip install -q faccent-widget
    from google.colab import output

    output.enable_custom_widget_manager()

# %%
from faccent_widget import FaccentWidget, load_model, sample_image

# Pick a target class, press "Accentuate": seed | Grad-CAM | mask | live accentuation.
FaccentWidget(load_model(), sample_image("chelsea"))

# %%
import os

import matplotlib.pyplot as plt

from faccent_widget import accentuate, load_model, sample_image

FAST = os.environ.get("FACCENT_FAST") == "1"  # CI smoke test: tiny runs. Unset = the real settings.
# Real settings: {} = the preset picked by device ("gpu" on a CUDA GPU, "preview" on a CPU).
RUN = dict(steps=6, n_crops=2, canvas=128, input_size=128) if FAST else {}
SEED = 0  # fixed random seed of the crops: reruns give the same images

model, img = load_model(), sample_image("chelsea")
second = model.predict(img, k=2)[1]  # the second most likely class: more for the model to exaggerate
result = accentuate(model, img, second.label, seed=SEED, **RUN)

fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
for ax, im, title in zip(axes, [result.seed, result.image], ["seed", f"accentuated: {second.label}"]):
    ax.imshow(im.permute(1, 2, 0).numpy())
    ax.set_title(title)
    ax.axis("off")
plt.show()
print(
    f"{second.label}: p {result.seed_score.prob:.3f} -> {result.score.prob:.3f} "
    f"(regulariser distance {result.distance:.2f} at {result.reg_layer})"
)
