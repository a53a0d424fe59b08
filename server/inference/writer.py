"""Writing results with the input's geometry: NIfTI or NRRD, the dtype and compression asked for.

The geometry is read from the input file's own header, not re-derived from the tensor, so a label
overlays its image exactly: a NIfTI result keeps the input's affine and qform/sform codes; an NRRD
result of an NRRD input keeps its space, directions and origin verbatim.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import nrrd
import numpy as np

from server.datastore.volumes import read_header
from server.errors import BadRequest
from server.inference.request import param_flag

RESULT_EXTS = (".nii.gz", ".nii", ".nrrd", ".seg.nrrd")
RESULT_DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64")
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True)
class ResultFormat:
    ext: str
    dtype: str
    compress: bool


def result_format(params: dict[str, Any], input_ext: str, default_dtype: str = "uint8") -> ResultFormat:
    """``result_extension`` (default: the input's), ``result_dtype``, ``result_compress`` from params."""
    ext = str(params.get("result_extension") or input_ext).lower()
    if not ext.startswith("."):
        ext = "." + ext
    if ext not in RESULT_EXTS:
        raise BadRequest(f"result_extension {ext!r}: expected one of {', '.join(RESULT_EXTS)}")
    dtype = str(params.get("result_dtype") or default_dtype).lower()
    if dtype not in RESULT_DTYPES:
        raise BadRequest(f"result_dtype {dtype!r}: expected one of {', '.join(RESULT_DTYPES)}")
    compress = param_flag(params, "result_compress", False)
    return ResultFormat(ext, dtype, compress)


def write_like(array: np.ndarray, source: Path, source_ext: str, dest: Path, fmt: ResultFormat) -> Path:
    """Write ``array`` (the source's voxel grid, spatial axes only) to ``dest`` in ``fmt``."""
    data = np.asarray(array).astype(fmt.dtype, copy=False)
    if fmt.ext in (".nii", ".nii.gz"):
        _write_nifti(data, source, source_ext, dest)
    else:
        _write_nrrd(data, source, source_ext, dest, fmt.compress)
    return dest


def _write_nifti(data: np.ndarray, source: Path, source_ext: str, dest: Path) -> None:
    if source_ext in (".nii", ".nii.gz"):
        src = nib.load(str(source))
        out = nib.Nifti1Image(data, src.affine)  # type: ignore[attr-defined]
        hdr = src.header
        out.set_qform(hdr.get_qform(), code=int(hdr["qform_code"]))  # type: ignore[attr-defined,index]
        out.set_sform(hdr.get_sform(), code=int(hdr["sform_code"]))  # type: ignore[attr-defined,index]
        out.header.set_xyzt_units(*hdr.get_xyzt_units())  # type: ignore[attr-defined]
    else:
        out = nib.Nifti1Image(data, read_header(source, source_ext).affine)
    nib.save(out, str(dest))


def _write_nrrd(data: np.ndarray, source: Path, source_ext: str, dest: Path, compress: bool) -> None:
    ndim = data.ndim
    header: dict[str, Any] = {"encoding": "gzip" if compress else "raw", "kinds": ["domain"] * ndim}
    src_header = nrrd.read_header(str(source)) if source_ext == ".nrrd" else None
    if src_header is not None and src_header.get("space directions") is not None:
        directions = [d for d in src_header["space directions"] if d is not None and not np.any(np.isnan(d))]
        header["space"] = src_header.get("space", "left-posterior-superior")
        header["space directions"] = np.asarray(directions[:ndim], dtype=float)
        if src_header.get("space origin") is not None:
            header["space origin"] = np.asarray(src_header["space origin"], dtype=float)
    else:
        lps = _RAS_TO_LPS @ read_header(source, source_ext).affine
        header["space"] = "left-posterior-superior"
        header["space directions"] = lps[:3, :ndim].T.copy()
        header["space origin"] = lps[:3, 3].copy()
    nrrd.write(str(dest), data, header, index_order="F")
