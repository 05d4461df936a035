"""Atomic writes: a file or folder citevae writes is either complete or absent, never half-written.

Everything is first written under a temporary name in the target's own folder (same file system),
flushed to disk, then renamed onto the target with ``os.replace``, which is atomic on POSIX and
Windows. A failure (or a kill) before the rename leaves the target as it was; the temporary name
starts with a dot and is removed on failure.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

FILE_MODE = 0o644
"""Permissions of written files (``mkstemp`` creates 0600; outputs are meant to be shared)."""


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary file path beside ``path``; on success it replaces ``path`` atomically.

    The caller writes the whole file to the yielded path (any writer: ``write_h5ad``, ``to_csv``,
    ``torch.save``); the suffix is kept so that writers which look at it behave the same.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(handle)
    temp = Path(name)
    try:
        yield temp
        _fsync(temp)
        os.chmod(temp, FILE_MODE)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    with atomic_path(path) as temp:
        temp.write_bytes(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    return write_bytes(path, text.encode("utf-8"))


@contextmanager
def atomic_directory(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty staging folder beside ``path``; on success it becomes ``path``.

    An existing ``path`` is replaced only with ``overwrite`` (it is moved aside, the staging
    folder renamed into place, then the old one deleted), so readers see the old or the new
    folder, never a mix.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield staging
        for file in staging.rglob("*"):
            if file.is_file():
                _fsync(file)
        os.chmod(staging, 0o755)
        if path.exists() and overwrite:
            retired = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
            os.replace(path, retired)
            os.replace(staging, path)
            shutil.rmtree(retired)
        else:
            os.rename(staging, path)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
