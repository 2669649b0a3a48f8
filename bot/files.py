"""Files the service writes for a person (exports, charts) are theirs alone: mode 0600."""

from __future__ import annotations

import os
from pathlib import Path


def write_private(path: Path, content: bytes) -> None:
    """Write `content` to `path`, readable and writable by the owner only, whatever the
    umask, and tightened if the file existed already."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb", closefd=False) as file:
            file.write(content)
    finally:
        os.close(fd)
