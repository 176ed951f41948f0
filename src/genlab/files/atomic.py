"""Writing files so that a reader never sees half of one.

Every file genlab writes (PNGs, .npz samples, metrics.json, cached tensors and statistics,
downloads) goes through `atomic_write`: the bytes go to a temporary file in the same folder,
named after the target and this process's id, which replaces the target in one `os.replace`
only when writing finished without an error. An interrupted write (a crash, a full disk, a
failed checksum) leaves the previous file, if any, untouched and no temporary file behind.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


@contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file for writing (`mode` "wb" or "w") that becomes `path` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
