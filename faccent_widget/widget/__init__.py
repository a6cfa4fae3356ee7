"""The Jupyter widget: :class:`FaccentWidget` (anywidget model) and its kernel-side session."""

from .panel import FaccentWidget

__all__ = ["FaccentWidget"]
