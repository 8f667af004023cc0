"""Files written so that nothing is lost: temp file in the same directory, then an atomic rename."""

from __future__ import annotations

import errno
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
    A failed write (full disk, unwritable directory) removes the temp file, leaves the old file
    as it was and raises an `OSError` whose `filename` is `path`. A `path` that exists and is not
    a regular file (a directory, a device) is refused rather than replaced.
    """
    path = Path(path)
    if path.exists() and not path.is_file():
        raise IsADirectoryError(errno.EISDIR if path.is_dir() else errno.EINVAL,
                                "exists and is not a regular file", str(path))
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, mode) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Atomically write `data` as indented JSON."""
    return atomic_write(path, lambda fh: json.dump(data, fh, indent=2, default=str))


def stale_temporaries(directory: str | os.PathLike, names: tuple[str, ...]) -> list[Path]:
    """The temp files `atomic_write` leaves behind for the files `names` in `directory` when the
    process is killed between creating and renaming them (`.<name>.<random>.tmp`), sorted."""
    directory = Path(directory)
    found: list[Path] = []
    for name in names:
        found.extend(p for p in directory.glob(f".{name}.*.tmp") if p.is_file())
    return sorted(found)
