"""What the datastore holds, rows and files, to show that a refused request changed nothing."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import requests


def snapshot(url: str, studies: Path) -> dict[str, Any]:
    files = {
        p.relative_to(studies).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(studies.rglob("*"))
        if p.is_file() and ".labelloop" not in p.parts
    }
    listing = requests.get(url + "/datastore/?output=all", timeout=10).json()["objects"]
    return {"files": files, "rows": listing}
