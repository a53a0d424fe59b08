"""Ids and file names that come from requests: checked before they get near the filesystem."""

from __future__ import annotations

import re
from pathlib import Path

from server.errors import BadRequest

# Extensions the datastore recognises, longest first so ``.seg.nrrd`` wins over ``.nrrd``.
IMAGE_EXTS = (".nii.gz", ".nii", ".nrrd")
LABEL_EXTS = (".seg.nrrd", ".nii.gz", ".nii", ".nrrd")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-+ ]{0,199}$")
_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$")


def check_id(value: str | None, what: str = "image") -> str:
    """An image id: a plain name, no separators, no ``..``, no absolute path, no control chars."""
    if value is None or value == "":
        raise BadRequest(f"{what} id is required")
    if "/" in value or "\\" in value or ".." in value or "\x00" in value or Path(value).is_absolute():
        raise BadRequest(f"invalid {what} id {value!r}: no path separators, '..' or absolute paths")
    if not _ID.match(value):
        raise BadRequest(
            f"invalid {what} id {value!r}: use letters, digits, '.', '_', '-', '+' or spaces (1-200 chars), "
            "starting with a letter or digit"
        )
    return value


def check_tag(value: str | None) -> str:
    if not value:
        return "final"
    if not _TAG.match(value):
        raise BadRequest(f"invalid label tag {value!r}: letters, digits, '_' or '-' (1-64 chars)")
    return value


def split_ext(filename: str, exts: tuple[str, ...] = IMAGE_EXTS) -> tuple[str, str] | None:
    """``spleen_1.nii.gz`` -> (``spleen_1``, ``.nii.gz``); None when the extension is not known."""
    lower = filename.lower()
    for ext in exts:
        if lower.endswith(ext) and len(filename) > len(ext):
            return filename[: -len(ext)], filename[-len(ext) :].lower()
    return None


def upload_ext(filename: str | None, exts: tuple[str, ...], default: str = ".nii.gz") -> str:
    """The stored extension comes from the uploaded filename's suffixes (``.nii.gz`` when empty)."""
    if not filename:
        return default
    name = Path(filename).name
    parts = split_ext(name, exts)
    if parts is None:
        raise BadRequest(f"unsupported file type {name!r}: expected one of {', '.join(exts)}")
    return parts[1]


def inside(root: Path, relative: str) -> Path:
    """Resolve ``relative`` under ``root`` and refuse anything that escapes it."""
    root = root.resolve()
    path = (root / relative).resolve()
    if path != root and root not in path.parents:
        raise BadRequest("path escapes the datastore")
    return path
