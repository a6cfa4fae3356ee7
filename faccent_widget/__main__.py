"""``python -m faccent_widget``: the main job (see ``faccent_widget.cli``)."""

from .cli import main

raise SystemExit(main())
