"""Atomic file writes, so an interrupted run never leaves a half-written result."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "check_output_dir", "new_sibling_dir", "swap_directory"]


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


def check_output_dir(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Check that results may be written to the folder ``path``, without creating it.

    Raises
    ------
    FileExistsError
        If ``path`` contains files and ``overwrite`` is false.
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
    return path


def new_sibling_dir(path: Path, tag: str = "tmp") -> Path:
    """Create an empty hidden folder beside ``path`` on the same file system."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{path.name}.{tag}.", dir=path.parent))


def swap_directory(new: Path, path: Path) -> None:
    """Move the complete folder ``new`` to ``path``, replacing what was there.

    The old folder is first renamed aside and deleted only once ``new`` is in
    place, so readers see the old results or the new ones, never a mixture. If
    the process dies between the two renames, the old folder survives beside
    ``path`` under a hidden ``.NAME.old.*`` name.
    """
    old = None
    if path.exists():
        old = new_sibling_dir(path, "old")
        os.replace(path, old / path.name)
    os.replace(new, path)
    if old is not None:
        shutil.rmtree(old)
