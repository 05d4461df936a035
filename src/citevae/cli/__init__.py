"""Command line: ``citevae demo | simulate | train | predict | benchmark`` (typer, rich output).

``_common`` holds the apps and what every command shares (one-line errors, h5ad I/O); importing
``commands`` and ``benchmark`` registers their commands on ``app``.
"""

from citevae.cli import benchmark, commands
from citevae.cli._common import app


@app.callback()
def main() -> None:
    """CITE-VAE: predict single-cell responses to unseen genetic perturbations, combinations, times."""


__all__ = ["app", "benchmark", "commands"]
