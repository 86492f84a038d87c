"""Atomic writes: a file fastprune writes appears whole or not at all.

The content goes to a temporary file in the same folder (same file system), which is renamed
over the target; on any failure (an exception, an interrupt) the temporary file is removed and
an existing target is left as it was."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable


def atomic_write(path: str | os.PathLike, data: bytes | str | Callable[[str], None]) -> Path:
    """Write `data` (bytes, text, or a function that writes a file at the path it is given)
    to `path` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if callable(data):
            data(str(tmp))
        else:
            with open(tmp, "wb") as f:
                f.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
