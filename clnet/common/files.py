"""Writing a file so that readers see either the old content or the new, never a part."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Optional


def write_atomically(path: Path, text: str, *, mode: Optional[int] = None, durable: bool = False) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``. On any
    error or interrupt the temporary file is removed and ``path`` is left as it was.
    ``mode`` sets the permissions (mkstemp makes the file private); ``durable`` flushes it
    to disk before the rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=str(path.parent), prefix=f".{path.stem}-", suffix=path.suffix + ".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
