"""Pure-PyTorch core: parameterizations, transforms, objectives, engine, attribution, metrics.

Nothing here imports the widget or model-registry layers; functions take any object that behaves
like :class:`faccent_widget.models.Model` (``features``, ``resolve_layer``, ``class_index``, …).
"""
