"""Reading and checking volumes (NIfTI, NRRD): every upload must load before it is stored."""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import nrrd
import numpy as np

from server.errors import BadRequest


@dataclass(frozen=True)
class VolumeHeader:
    shape: tuple[int, ...]
    affine: np.ndarray


def read_header(path: Path, ext: str) -> VolumeHeader:
    """Shape and voxel-to-world affine, from the header alone."""
    try:
        if ext in (".nii", ".nii.gz"):
            img = nib.load(str(path))
            return VolumeHeader(tuple(int(s) for s in img.shape), np.asarray(img.affine))  # type: ignore[attr-defined]
        header = nrrd.read_header(str(path))
        return VolumeHeader(tuple(int(s) for s in header["sizes"]), nrrd_affine(header))
    except (OSError, ValueError, EOFError, nib.filebasedimages.ImageFileError, nrrd.NRRDError) as exc:
        raise BadRequest(f"file does not load as a {ext} image: {exc}") from exc


def load_array(path: Path, ext: str) -> tuple[np.ndarray, np.ndarray]:
    """The whole voxel array and its affine; raises BadRequest for corrupt or truncated files."""
    try:
        if ext in (".nii", ".nii.gz"):
            img = nib.load(str(path))
            data = np.asanyarray(img.dataobj)  # type: ignore[attr-defined]
            return data, np.asarray(img.affine)  # type: ignore[attr-defined]
        data, header = nrrd.read(str(path))
        return np.asarray(data), nrrd_affine(header)
    except (
        OSError,
        ValueError,
        EOFError,
        zlib.error,
        gzip.BadGzipFile,
        nib.filebasedimages.ImageFileError,
        nrrd.NRRDError,
    ) as exc:
        raise BadRequest(f"file does not load as a {ext} image: {exc}") from exc


def nrrd_affine(header: dict[str, Any]) -> np.ndarray:
    dims = int(header.get("dimension", len(header.get("sizes", []))))
    affine = np.eye(4)
    directions = header.get("space directions")
    origin = header.get("space origin")
    if directions is not None:
        rows = [np.asarray(d, dtype=float) for d in directions if d is not None and not np.any(np.isnan(d))]
        for i, d in enumerate(rows[:3]):
            affine[: len(d), i] = d
    if origin is not None:
        o = np.asarray(origin, dtype=float)
        affine[: len(o), 3] = o
    space = str(header.get("space", "")).lower()
    if space in ("left-posterior-superior", "lps"):
        # NRRD in LPS; nibabel affines are RAS.
        affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    del dims
    return affine


def bin_to_nifti(raw: bytes, shape: tuple[int, ...], affine: np.ndarray, dest: Path) -> None:
    """A ``.bin`` label: raw uint8 voxels in Fortran order, reshaped to the image's shape."""
    expected = int(np.prod(shape[:3]))
    if len(raw) != expected:
        raise BadRequest(
            f".bin label has {len(raw)} bytes; the image needs {expected} ({'x'.join(map(str, shape[:3]))})"
        )
    data = np.frombuffer(raw, dtype=np.uint8).reshape(shape[:3], order="F")
    nib.save(nib.Nifti1Image(data, affine), str(dest))
