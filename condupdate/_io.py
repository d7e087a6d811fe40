"""Atomic file writes, so an interrupted run never leaves a half-written result."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "prepare_output_dir"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` and move it into place on success.

    The caller writes the whole file to the yielded path. ``os.replace`` is atomic
    on POSIX and Windows when both paths are on one file system, so readers see
    either the old file or the complete new one. On an exception the temporary
    file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    tmp = Path(tmp_name)
    # mkstemp creates the file readable by its owner only. Give it the permissions
    # a plain open() would, so results stay readable by the user's group.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def prepare_output_dir(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Create the output folder ``path``, refusing a non-empty one unless ``overwrite``.

    Raises
    ------
    FileExistsError
        If ``path`` holds files and ``overwrite`` is false.
    NotADirectoryError
        If ``path`` exists and is a file.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"Output path {str(path)!r} is a file; give a folder path with --out.")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise FileExistsError(
            f"Output folder {str(path)!r} is not empty; choose another folder with --out "
            "or pass --overwrite to replace the results in it."
        )
    path.mkdir(parents=True, exist_ok=True)
    return path
