"""Shared pieces of the command line: the typer apps, consoles, one-line errors, h5ad I/O, threads.

Bad input (citevae errors, missing or unreadable files) ends with one red ``error: ...`` line on
stderr and exit status 1, without a traceback. Input files are only read, never written; every
output file is written under a temporary name and renamed, so it is complete or absent.
"""


import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.text import Text

app = typer.Typer(
    name="citevae",
    help="CITE-VAE: predict single-cell responses to unseen genetic perturbations, "
    "combinations and times.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
simulate_app = typer.Typer(help="Write a simulated data set with known ground truth (h5ad).",
                           no_args_is_help=True)
app.add_typer(simulate_app, name="simulate")

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


class CLIError(Exception):
    """A problem to report as one line, without a traceback."""


def _fail(message: str) -> None:
    line = " ".join(str(message).split()) or "unknown error"
    err_console.print(Text(f"error: {line}", style="bold red"), soft_wrap=True, highlight=False)
    raise typer.Exit(code=1)


def reports_errors(fn: F) -> F:
    """Turn bad-input exceptions of a command into one red line and exit status 1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except CLIError as err:
            _fail(str(err))
        except (ValueError, OSError, KeyError) as err:  # CiteVAEError is a ValueError
            detail = err.args[0] if isinstance(err, KeyError) and err.args else err
            _fail(f"{type(err).__name__}: {detail}" if not str(detail) else str(detail))

    return wrapper  # type: ignore[return-value]


def read_h5ad(path: Path):
    """Read an h5ad file fully into memory (the file is never written)."""
    import anndata as ad

    if not path.exists():
        raise CLIError(f"file not found: {path}")
    if not path.is_file():
        raise CLIError(f"not a file: {path}")
    try:
        return ad.read_h5ad(path)
    except Exception as err:  # h5py / anndata raise many types for corrupt files
        raise CLIError(f"cannot read {path} as h5ad: {type(err).__name__}: {err}") from None


def write_h5ad(adata, out: Path, inputs: tuple[Path, ...] = ()) -> None:
    """Write ``adata`` to ``out``, refusing to overwrite an input file."""
    for src in inputs:
        if src.exists() and out.exists() and out.resolve() == src.resolve():
            raise CLIError(f"--out {out} is an input file; choose another output path")
    from citevae._atomic import atomic_path

    try:
        with atomic_path(out) as temp:
            adata.write_h5ad(temp)
    except Exception as err:
        raise CLIError(f"cannot write {out}: {type(err).__name__}: {err}") from None


def use_threads(threads: int | None) -> None:
    from citevae._settings import set_num_threads

    set_num_threads(threads)


ThreadsOption = Annotated[
    int | None,
    typer.Option("--threads", min=1, help="torch intra-op threads (default 1, or $CITEVAE_NUM_THREADS)."),
]


