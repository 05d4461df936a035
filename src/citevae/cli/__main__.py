"""``python -m citevae.cli``."""

from citevae.cli import app

app()
