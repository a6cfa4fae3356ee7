"""What a model's own metadata says about its input: :class:`ModelMeta`.

A timm ``pretrained_cfg``/``default_cfg`` and ``patch_embed``, a torchvision model class or
``Weights`` entry, or a Hugging Face ``config`` each tell some of: the input normalisation, the size
the model was built for and whether that size is fixed, the class names and the token facts
(prefix tokens, patch grid). :meth:`ModelMeta.of` reads them all (as timm's ``resolve_data_config``
resolves a data config from ``default_cfg``, outside the model class); ``Model`` takes its defaults
from the result. A field is None where no metadata says anything.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from .anatomy import as_hw

__all__ = ["ModelMeta", "IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Scale of the smallest preset crop (``preview``): the size the wrap-time probe tries.
PROBE_SCALE = 0.7
#: Names of the parameters that hold prefix tokens (timm, torchvision, Hugging Face).
_PREFIX_TOKEN_PARAMS = ("cls_token", "class_token", "dist_token", "distillation_token", "reg_token", "register_tokens")


@dataclass(frozen=True)
class ModelMeta:
    """What a model's metadata says (None: nothing says it).

    Attributes:
        mean, std: per-channel normalisation of [0, 1] images.
        input_size: (height, width) the model was built for.
        fixed_size: True when the model runs only at ``input_size`` (timm strict patch embedding or
            ``fixed_input_size``, torchvision ``VisionTransformer``, Hugging Face absolute position
            embeddings), False when the metadata says any size works, None when it does not say.
        size_source: where ``input_size`` comes from, for messages.
        labels: class names.
        prefix_tokens: leading tokens that are not image patches (class, distillation, register).
        patch_grid: (h, w) of the patch tokens at ``input_size``.
    """

    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    input_size: tuple[int, int] | None = None
    fixed_size: bool | None = None
    size_source: str = ""
    labels: tuple[str, ...] | None = None
    prefix_tokens: int | None = None
    patch_grid: tuple[int, int] | None = None

    def merged(self, other: ModelMeta) -> ModelMeta:
        """This metadata with every field ``other`` knows taken from ``other`` (its size source follows its size)."""
        known = {
            f.name: getattr(other, f.name) for f in dataclasses.fields(other) if getattr(other, f.name) is not None
        }
        if other.input_size is None:
            known.pop("size_source", None)
        return dataclasses.replace(self, **known)

    def normalisation(
        self, mean: Sequence[float] | None, std: Sequence[float] | None, input_range: tuple[float, float] | None
    ) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The (mean, std) to use: the given ones, or those of ``input_range`` (e.g. ``(0, 255)``), else
        this metadata's, else ImageNet's. ``ValueError`` for conflicting or invalid values."""
        if input_range is not None:
            if mean is not None or std is not None:
                raise ValueError("pass either input_range or mean/std, not both")
            lo, hi = float(input_range[0]), float(input_range[1])
            if not hi > lo:
                raise ValueError(f"input_range must be (low, high) with high > low, got {input_range}")
            mean, std = (-lo / (hi - lo),) * 3, (1.0 / (hi - lo),) * 3
        m = _floats(mean if mean is not None else self.mean or IMAGENET_MEAN)
        s = _floats(std if std is not None else self.std or IMAGENET_STD)
        if len(m) != 3 or len(s) != 3 or min(s) <= 0:
            raise ValueError(f"mean and std need 3 values with std > 0, got mean={m} std={s}")
        return m, s

    def resolve_size(
        self,
        requested: int | tuple[int, int] | None,
        accepts_any_size: bool | None,
        name: str,
        runs_at: Callable[[tuple[int, int]], bool],
    ) -> tuple[tuple[int, int], bool | None]:
        """The input (h, w) and whether it is fixed (None: the model fails at every size tried).

        From the arguments, else this metadata, else a cheap check: ``runs_at((h, w))`` (one blank
        forward pass) at ``PROBE_SCALE`` × the native size (square), or at the ``requested`` size when
        that differs: a model that raises there but runs at its native size is fixed-size at that size.
        A fixed size may be non-square ((h, w) from the metadata); a model that runs at any size gets a
        square input (the metadata's width when it names a non-square size) unless a pair is requested.

        Raises:
            ValueError: a fixed-size model asked for another size (naming the (h, w) it accepts).
        """
        fixed = self.fixed_size if accepts_any_size is None else not accepts_any_size
        source = self.size_source or "its metadata"
        want = None if requested is None else as_hw(requested)
        native = self.input_size or want or (224, 224)
        square = (native[1], native[1])  # a model that runs at any size: a square input at its width
        accepted = f"input_size={native[0] if native[0] == native[1] else native}"
        hint = f"leave input_size unset (or pass {accepted}), or pass accepts_any_size=True if the model really runs at other sizes"  # noqa: E501
        if fixed:
            if want is not None and want != native and accepts_any_size is None:
                raise ValueError(
                    f"{name} has a fixed input size of {native[0]}×{native[1]} ({source}); "
                    f"not input_size={requested!r}: {hint}"
                )
            return want or native, True
        if fixed is False:
            return want or square, False
        side = max(16, 8 * round(PROBE_SCALE * square[0] / 8))
        if runs_at(want if want is not None and want != native else (side, side)):
            return want or square, False
        if not runs_at(native):
            return want or native, None
        if want is not None and want != native:
            raise ValueError(
                f"{name} has a fixed input size of {native[0]}×{native[1]} ({source}; it fails at "
                f"{want[0]}×{want[1]}): {hint}"
            )
        return native, True

    @classmethod
    def of(cls, module: nn.Module, weights: Any = None) -> ModelMeta:
        """Everything the metadata of ``module`` (and of torchvision ``weights``, which win) says."""
        meta = cls.from_timm(module).merged(cls.from_torchvision(module)).merged(cls.from_huggingface(module))
        if meta.prefix_tokens is None:
            count = sum(
                int(p.shape[1])
                for n, p in module.named_parameters()
                if n.rpartition(".")[2] in _PREFIX_TOKEN_PARAMS and p.dim() == 3
            )
            if count:
                meta = dataclasses.replace(meta, prefix_tokens=count)
        if weights is not None:
            meta = meta.merged(cls.from_weights(weights))
        return meta

    @classmethod
    def from_timm(cls, module: nn.Module) -> ModelMeta:
        """A timm model's ``pretrained_cfg`` (or ``default_cfg``), ``patch_embed`` and ``num_prefix_tokens``."""
        fields: dict[str, Any] = {}
        cfg = getattr(module, "pretrained_cfg", None) or getattr(module, "default_cfg", None)
        if isinstance(cfg, Mapping):
            if "mean" in cfg and "std" in cfg:
                fields["mean"], fields["std"] = _floats(cfg["mean"]), _floats(cfg["std"])
            size = _hw(cfg.get("input_size"))
            if size is not None:
                fields["input_size"], fields["size_source"] = size, "timm pretrained_cfg"
            if "fixed_input_size" in cfg:
                fields["fixed_size"] = bool(cfg["fixed_input_size"])
        patch_embed = getattr(module, "patch_embed", None)
        img_size = _hw(getattr(patch_embed, "img_size", None))
        if img_size is not None:  # the patch embedding knows the size the model was built for
            fields["input_size"], fields["size_source"] = img_size, "timm patch_embed.img_size"
            dynamic = bool(getattr(module, "dynamic_img_size", False) or getattr(patch_embed, "dynamic_img_pad", False))
            fields["fixed_size"] = bool(getattr(patch_embed, "strict_img_size", False)) and not dynamic
            grid = _hw(getattr(patch_embed, "grid_size", None))
            if grid is not None:
                fields["patch_grid"] = grid
        prefix = getattr(module, "num_prefix_tokens", None)
        if isinstance(prefix, int) and not isinstance(prefix, bool):
            fields["prefix_tokens"] = prefix
        return cls(**fields)

    @classmethod
    def from_torchvision(cls, module: nn.Module) -> ModelMeta:
        """What a torchvision model class fixes: ``VisionTransformer.image_size`` (strict), ``Inception3``'s 299 px."""
        if not type(module).__module__.startswith("torchvision."):
            return cls()
        from torchvision.models import Inception3, VisionTransformer

        if isinstance(module, VisionTransformer):  # forward() asserts the size
            side, grid = int(module.image_size), int(module.image_size) // int(module.patch_size)
            return cls(
                input_size=(side, side),
                fixed_size=True,
                size_source="torchvision VisionTransformer.image_size",
                patch_grid=(grid, grid),
                prefix_tokens=1,
            )
        if isinstance(module, Inception3):
            return cls(input_size=(299, 299), size_source="torchvision Inception3 (299 px)")
        return cls()

    @classmethod
    def from_weights(cls, weights: Any) -> ModelMeta:
        """A torchvision ``Weights`` entry: its transforms' mean, std and crop size (h, w), its categories."""
        transforms = weights.transforms()
        crop = transforms.crop_size  # [side] or [h, w]
        categories = weights.meta.get("categories")
        return cls(
            mean=_floats(transforms.mean),
            std=_floats(transforms.std),
            input_size=_hw([int(v) for v in crop] if isinstance(crop, (list, tuple)) else int(crop)),
            size_source="torchvision weights",
            labels=tuple(categories) if categories else None,
        )

    @classmethod
    def from_huggingface(cls, module: nn.Module) -> ModelMeta:
        """A Hugging Face model's ``config``: ``image_size``, ``patch_size``, ``id2label``; absolute
        position embeddings make the size fixed. Windowed and convolutional models (Swin, ConvNeXt,
        ResNet) leave ``fixed_size`` unknown: some run at other sizes, some do not (``Model`` tries)."""
        config = getattr(module, "config", None)
        if config is None or not type(config).__module__.startswith("transformers."):
            return cls()
        fields: dict[str, Any] = {}
        size = _hw(getattr(config, "image_size", None))
        patch = _hw(getattr(config, "patch_size", None))
        if size is not None:
            fields["input_size"], fields["size_source"] = size, "Hugging Face config.image_size"
            if any(
                n.rpartition(".")[2] == "position_embeddings" and p.dim() == 3 for n, p in module.named_parameters()
            ):
                fields["fixed_size"] = True
            if patch is not None:
                fields["patch_grid"] = (size[0] // patch[0], size[1] // patch[1])
        id2label = getattr(config, "id2label", None)
        if isinstance(id2label, Mapping) and id2label:
            labels = tuple(str(id2label.get(i, id2label.get(str(i), f"class {i}"))) for i in range(len(id2label)))
            if not all(lab == f"LABEL_{i}" for i, lab in enumerate(labels)):
                fields["labels"] = labels
        return cls(**fields)


def _hw(value: Any) -> tuple[int, int] | None:
    """(h, w) from an int side or an (…, H, W) sequence of ints; None otherwise."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    if isinstance(value, (tuple, list)) and value and all(isinstance(v, int) for v in value):
        return (int(value[-2]), int(value[-1])) if len(value) >= 2 else (int(value[0]), int(value[0]))
    return None


def _floats(values: Any) -> tuple[float, ...]:
    return tuple(float(v) for v in values)
