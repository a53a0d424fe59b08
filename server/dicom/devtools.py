"""Finding dcmtk's tools for tests and benchmarks.

pynetdicom installs Python apps named ``storescu``, ``storescp``, ``echoscu`` ... into the virtualenv's
``bin``; with the venv on PATH those shadow dcmtk's. Only an ELF binary counts here.
"""

from __future__ import annotations

import os
from pathlib import Path

EXTRA = ("/usr/bin", "/usr/local/bin", "/usr/sbin")


def dcmtk_tool(name: str) -> str | None:
    """The path of dcmtk's ``name`` (a native executable), or None."""
    seen: set[str] = set()
    for folder in [*os.get_exec_path(), *EXTRA]:
        candidate = Path(folder) / name
        if str(candidate) in seen:
            continue
        seen.add(str(candidate))
        try:
            if candidate.is_file() and os.access(candidate, os.X_OK):
                with open(candidate, "rb") as f:
                    if f.read(4) == b"\x7fELF":
                        return str(candidate)
        except OSError:
            continue
    return None
