"""Pure-PyTorch core: the ``Model`` adapter, parameterizations, transforms, objectives, the engine,
attribution, masks and compositing.

Everything here is typed on :class:`faccent_widget.core.model.Model`. Core imports only torch,
numpy/PIL/matplotlib and :mod:`faccent_widget.images`: never the model zoo (timm, torchvision
weights, the weights package), the widget, validation or the CLI.
"""
