"""Atomic writes: build a file (or folder) under a temporary name beside it, then rename.

A reader, or a rerun after a kill, sees the old file or the whole new one, never a part:
``os.replace`` within one folder is atomic on POSIX.  The temporary name is hidden
(``.<name>.<pid>.tmp``), so globs for results skip it, and :func:`leftovers` finds what a
killed process left.  Standard library only: ``train/config.py`` imports it when the
Snakefile loads that file on its own.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

TMP_SUFFIX = ".tmp"


class replacing:  # noqa: N801 - used like contextlib's lower-case context managers
    """Context manager yielding a temporary path that replaces ``path`` on success.

    On an exception the temporary (file or folder) is removed and ``path`` is untouched.
    Missing parent folders are created.  A folder already at ``path`` is removed just
    before the rename, since a folder cannot be renamed over a non-empty one.

    Args:
        path: the target.
        suffix: appended after ``.tmp`` where a writer picks the format from the name
            (``".png"`` for matplotlib).
        durable: fsync the file and its folder, so the rename survives a power cut.

    Example::

        with replacing("out.h5") as tmp:
            with h5py.File(tmp, "w") as f:
                ...

    Writers that open and close in different methods call :meth:`commit` or
    :meth:`discard` instead of using ``with``.
    """

    def __init__(self, path: str | Path, suffix: str = "", durable: bool = False):
        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}{TMP_SUFFIX}{suffix}")
        self.durable = durable
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _remove(self.tmp)  # a previous process with the same pid may have left it

    def __enter__(self) -> Path:
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.commit()
        else:
            self.discard()
        return False

    def commit(self) -> Path:
        """Rename the temporary over the target; returns the target."""
        try:
            if self.durable and self.tmp.is_file():
                _fsync(self.tmp)
            if self.tmp.is_dir() and self.path.is_dir():
                shutil.rmtree(self.path)
            os.replace(self.tmp, self.path)
        finally:
            _remove(self.tmp)
        if self.durable:
            _fsync(self.path.parent)
        return self.path

    def discard(self) -> None:
        """Remove the temporary, leaving the target as it was."""
        _remove(self.tmp)


def write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically; returns ``path``."""
    with replacing(path) as tmp:
        tmp.write_text(text, encoding=encoding)
    return Path(path)


def leftovers(folder: str | Path, name: str) -> list[Path]:
    """Temporaries that killed writers of ``folder/name`` left behind."""
    return sorted(Path(folder).glob(f".{_glob_escape(name)}.*{TMP_SUFFIX}"))


def _glob_escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def _remove(tmp: Path) -> None:
    if tmp.is_dir() and not tmp.is_symlink():
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    """fsync a file or folder (a no-op where the system cannot open folders)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
