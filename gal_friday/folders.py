"""The data folder and the folders the product writes into: made one level at a time.

A folder is created only when its parent exists. Creating missing parents as well would
hide a disk that is not mounted (``/mnt/trading/data`` quietly made on the root disk) until
the orders, fills and journals written there are needed and missing. Before a run relies on
the data folder it is also checked writable, so a read-only folder is one line naming it and
what goes there, instead of a "Permission denied" from whichever file came first.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

DATA_FOLDER_HOLDS = "the audit store, the session journals, the control socket and candle files"


class FolderError(OSError):
    """A folder that cannot be made or written; the message names it and what it is for.

    An OSError, so code that treats a failed write as the environment failing (the audit
    store spilling while its disk is away) treats this one the same way."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "folder error"


def make_folder(path: Path, what: str) -> Path:
    """``path``, created if missing, when its parent exists; FolderError otherwise."""
    if path.is_dir():
        return path
    try:
        path.mkdir()
    except FileExistsError:
        if not path.is_dir():
            raise FolderError(f"the {what} {path} is a file, not a folder") from None
    except FileNotFoundError:
        raise FolderError(
            f"cannot create the {what} {path}: its parent folder {path.parent} does not "
            "exist (a disk not mounted, or a mistyped path?); create it first"
        ) from None
    except OSError as exc:
        raise FolderError(f"cannot create the {what} {path}: {exc.strerror or exc}") from None
    return path


def check_writable(path: Path, what: str, holds: str) -> None:
    """FolderError unless a file can be created in ``path`` (a read-only folder or disk)."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-check-", dir=path)
    except OSError as exc:
        raise FolderError(
            f"cannot write in the {what} {path} ({exc.strerror or exc}); it holds {holds}"
        ) from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)


def prepare_data_folder(path: Path) -> Path:
    """The data folder, made (its last level only) and checked writable, before a run."""
    make_folder(path, "data folder")
    check_writable(path, "data folder", DATA_FOLDER_HOLDS)
    return path
