"""Files written so that nothing is lost: temp file in the same directory, then an atomic rename."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], mode: str = "w") -> Path:
    """Write `path` through `write(fileobj)`; readers see the old file or the new one, never half.

    The temp file lives in the target directory (a rename is atomic only within one file system)
    and is fsync'ed before the rename, so a crash cannot leave a truncated file under `path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Atomically write `data` as indented JSON."""
    return atomic_write(path, lambda fh: json.dump(data, fh, indent=2, default=str))
