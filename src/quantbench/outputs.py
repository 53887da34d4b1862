"""Output paths checked before the first cell starts: a run that measured for an hour must not
end in a traceback because its log or folder cannot be written."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from quantbench.errors import UsageError


def _existing_ancestor(path: Path) -> Path:
    for parent in [path, *path.parents]:
        if parent.exists():
            return parent
    return Path(".")


def _probe(folder: Path, option: str, target: Path) -> None:
    """Create and remove a file in `folder`: the only test a root user, a read-only mount or
    /proc answers truthfully."""
    try:
        fd, name = tempfile.mkstemp(prefix=".quantbench-probe-", dir=folder)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise UsageError(f"{option} '{target}' cannot be written ({exc.strerror or exc} in "
                         f"'{folder}'): pass a path in a writable folder") from None


def check_dir(path: str | Path, option: str) -> None:
    """A folder files will be created in (it may not exist yet)."""
    target = Path(path).expanduser()
    if target.exists() and not target.is_dir():
        raise UsageError(f"{option} '{path}' is a file: pass a folder")
    anchor = _existing_ancestor(target)
    if not anchor.is_dir():
        raise UsageError(f"{option} '{path}' cannot be created: '{anchor}' is a file, not a folder")
    _probe(anchor, option, target)


def check_file(path: str | Path, option: str, must_be_new: bool = False) -> None:
    """A file that will be written or appended to (its folders may not exist yet)."""
    target = Path(path).expanduser()
    if str(path).strip() == "":
        raise UsageError(f"{option} is empty: pass a file path")
    if target.is_dir():
        raise UsageError(f"{option} '{path}' is a folder: pass a file path")
    if target.exists():
        if must_be_new:
            raise UsageError(f"{option} '{path}' exists: choose a new file name (nothing is "
                             "overwritten)")
        if not target.is_file():
            raise UsageError(f"{option} '{path}' is not a regular file: pass a file path")
        if not os.access(target, os.W_OK):
            raise UsageError(f"{option} '{path}' is not writable: pass another file")
        return
    anchor = _existing_ancestor(target.parent)
    if not anchor.is_dir():
        raise UsageError(f"{option} '{path}' cannot be created: '{anchor}' is a file, not a folder")
    _probe(anchor, option, target)
