"""Where the OHIF viewer's files are, and which file a viewer path is (no Flask here).

By default the OHIF v3 build with MONAI Label's panel that ships in the ``monailabel`` wheel
(``monailabel/endpoints/static/ohif``, found without importing the package), or ``--ohif DIR``.
A path names a file of the build when one exists; a path without a file extension is one of the
viewer's own routes (``/ohif/viewer?StudyInstanceUIDs=...``) and gets ``index.html``; anything else is
404 (a missing ``.js`` must not come back as HTML).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path, PurePosixPath

from werkzeug.security import safe_join

TYPES = {
    ".wasm": "application/wasm",
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".css": "text/css",
    ".html": "text/html",
    ".json": "application/json",
    ".map": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".ttf": "font/ttf",
    ".txt": "text/plain",
    ".webmanifest": "application/manifest+json",
}


def default_root() -> Path | None:
    """The OHIF build of the installed ``monailabel`` wheel, if there is one."""
    spec = importlib.util.find_spec("monailabel")
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        root = Path(location) / "endpoints" / "static" / "ohif"
        if (root / "index.html").is_file():
            return root
    return None


def resolve(root: Path, path: str) -> tuple[Path, str] | None:
    """``(file, mimetype)`` for a viewer path, or None (404)."""
    if path:
        found = safe_join(str(root), path)
        if found is not None and _is_file(Path(found)):
            suffix = PurePosixPath(path).suffix.lower()
            return Path(found), TYPES.get(suffix, "application/octet-stream")
        if PurePosixPath(path).suffix:  # a missing asset: not the viewer's page
            return None
    return root / "index.html", "text/html"


def _is_file(path: Path) -> bool:
    """``is_file`` that answers False for names the file system refuses (too long, ...)."""
    try:
        return path.is_file()
    except OSError:
        return False
