"""Writing output files atomically: a crash or a refused command never leaves half a file."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from .errors import CoverageError


@contextlib.contextmanager
def atomic_path(path, mode: int = 0o644):
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds.

    The temporary file lives in the same directory, so the final ``os.replace`` is atomic.
    A missing directory or a read-only location is reported as a :class:`CoverageError`
    naming the output.
    """
    target = Path(path)
    directory = _check_place(target)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=directory)
    except OSError as exc:
        raise CoverageError(f"{target}: cannot write ({exc.strerror}); choose a writable location") from exc
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, mode)
        try:
            os.replace(tmp, target)
        except OSError as exc:
            raise CoverageError(f"{target}: cannot write ({exc.strerror}); choose another output path") from exc
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _check_place(target: Path) -> Path:
    """The directory an output goes into, after checking the output can be written there."""
    directory = target.parent
    if target.is_dir():
        raise CoverageError(f"{target}: cannot write: it is a directory; give a file name")
    if not directory.is_dir():
        raise CoverageError(f"{target}: cannot write: directory {directory} does not exist; create it first")
    if not os.access(directory, os.W_OK):
        raise CoverageError(f"{target}: cannot write: directory {directory} is not writable; choose another")
    return directory


def check_output(path, suffixes: tuple = ()) -> None:
    """Refuse an output path before any work is done: bad place, or a suffix not in ``suffixes``."""
    target = Path(path)
    _check_place(target)
    if suffixes and target.suffix.lower() not in suffixes:
        raise CoverageError(f"{target}: unsupported output type {target.suffix or '(none)'!r}; "
                            f"use one of {', '.join(suffixes)}")


def write_text(path, text: str) -> None:
    """Write a text file atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
