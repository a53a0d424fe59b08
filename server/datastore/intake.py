"""One intake for every volume that arrives from outside: uploaded images and labels, session and
``/infer`` uploads, OHIF's raw labels once wrapped as NIfTI.

It reads only the bytes it was given: a NRRD that names a detached data file (``data file:``) is
refused, and so are skips that would make a reader wander (``line skip``, ``byte skip``). The header is
checked before anything is allocated: dimensions, data type, voxel count and payload size against
:class:`Limits` (413 when too large, 422 when absurd; 400, as before, for a file that does not load).
The payload is then streamed in bounded chunks: a decompression bomb stops at the size its header
declared, a truncated or corrupt file is refused, and a label's values are checked on the way (finite,
integral, within the app's label indices, one channel). Memory stays at a few chunks whatever the file
claims.

Once a file has passed, the usual readers (nibabel, pynrrd, MONAI) may load it.
"""

from __future__ import annotations

import bz2
import gzip
import io
import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

import nibabel as nib
import nrrd
import numpy as np

from server.datastore.volumes import nrrd_affine
from server.errors import BadRequest, TooLarge, Unprocessable

CHUNK = 8 << 20  # bytes decompressed and checked at a time
MAX_TRAILING = 1 << 20  # bytes a file may carry after its payload (padding some writers add)
MAX_OFFSET = 16 << 20  # NIfTI: header and extensions before the voxels


class Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


@dataclass(frozen=True)
class Limits:
    """What one uploaded volume may be. The defaults fit a CT of 1024 x 1024 x 2000 voxels."""

    max_voxels: int = 1024 * 1024 * 2000
    max_bytes: int = 1024 * 1024 * 2000 * 4  # the decompressed payload (float32 at the voxel limit)
    max_header_bytes: int = 64 * 1024  # NRRD header text


@dataclass(frozen=True)
class Inspected:
    shape: tuple[int, ...]
    affine: np.ndarray
    dtype: np.dtype[Any]


def inspect(
    path: Path, ext: str, *, label: bool = False, label_max: int | None = None, limits: Limits | None = None
) -> Inspected:
    """Check the file at ``path`` (a ``.nii``, ``.nii.gz``, ``.nrrd`` or ``.seg.nrrd``) as an image, or as
    a label when ``label`` (values integral, finite, in ``0..label_max``). Raises 413 or 422."""
    limits = limits or Limits()
    try:
        if ext in (".nii", ".nii.gz"):
            return _nifti(path, ext == ".nii.gz", label, label_max, limits)
        if ext in (".nrrd", ".seg.nrrd"):
            return _nrrd(path, label, label_max, limits)
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile, ValueError) as exc:
        # Corrupt compression or a file cut short; the message is the reader's, never a server path.
        raise BadRequest(f"the {ext} file does not load: {_clean(exc)}") from None
    raise Unprocessable(f"unsupported volume type {ext!r}")


# ---- NIfTI --------------------------------------------------------------------------------------
def _nifti(path: Path, gz: bool, label: bool, label_max: int | None, limits: Limits) -> Inspected:
    with open(path, "rb") as raw:
        stream: Readable = gzip.GzipFile(fileobj=raw, mode="rb") if gz else raw
        head = _read_exact(stream, 348, "a NIfTI header")
        size = int.from_bytes(head[:4], "little")
        if size not in (348, 540):
            size = int.from_bytes(head[:4], "big")
        if size == 540:
            head += _read_exact(stream, 540 - 348, "a NIfTI-2 header")
        elif size != 348:
            raise BadRequest("not a NIfTI file (its header size is neither 348 nor 540)")
        header_class = nib.Nifti2Header if size == 540 else nib.Nifti1Header
        try:
            hdr = header_class.from_fileobj(io.BytesIO(head + b"\0" * 4), check=True)
            shape = tuple(int(d) for d in hdr.get_data_shape())
            dtype = np.dtype(hdr.get_data_dtype())
            affine = np.asarray(hdr.get_best_affine(), dtype=float)
            offset = int(hdr.get_data_offset())
            slope, inter = hdr.get_slope_inter()
        except (nib.spatialimages.HeaderDataError, ValueError, KeyError, TypeError, OverflowError) as exc:
            raise Unprocessable(f"the NIfTI header is invalid: {_clean(exc)}") from None
        nbytes = _check_geometry(shape, dtype, affine, label, limits)
        if label and not (slope in (None, 1.0) and inter in (None, 0.0)):
            raise Unprocessable("a label must not be scaled (scl_slope 1, scl_inter 0)")
        if not size <= offset <= MAX_OFFSET:
            raise Unprocessable(f"the NIfTI voxel offset {offset} is out of range")
        _skip(stream, offset - size)
        _payload(stream, nbytes, dtype, label, label_max)
    return Inspected(shape, affine, dtype)


# ---- NRRD ---------------------------------------------------------------------------------------
NRRD_TYPES = {
    "int8": ("signed char", "int8", "int8_t"),
    "uint8": ("uchar", "unsigned char", "uint8", "uint8_t"),
    "int16": ("short", "short int", "signed short", "signed short int", "int16", "int16_t"),
    "uint16": ("ushort", "unsigned short", "unsigned short int", "uint16", "uint16_t"),
    "int32": ("int", "signed int", "int32", "int32_t"),
    "uint32": ("uint", "unsigned int", "uint32", "uint32_t"),
    "int64": ("longlong", "long long", "long long int", "signed long long", "signed long long int", "int64"),
    "uint64": ("ulonglong", "unsigned long long", "unsigned long long int", "uint64", "uint64_t"),
    "float32": ("float",),
    "float64": ("double",),
}
NRRD_DTYPE = {alias: np.dtype(name) for name, aliases in NRRD_TYPES.items() for alias in aliases}
NRRD_DTYPE["int64_t"] = np.dtype("int64")


def _nrrd(path: Path, label: bool, label_max: int | None, limits: Limits) -> Inspected:
    with open(path, "rb") as raw:
        text, offset = _nrrd_header_text(raw, limits.max_header_bytes)
        try:
            header = nrrd.read_header(text.splitlines(keepends=True))
        except (nrrd.NRRDError, ValueError, KeyError, TypeError, IndexError) as exc:
            raise Unprocessable(f"the NRRD header is invalid: {_clean(exc)}") from None
        for key in ("data file", "datafile"):
            if key in header:
                raise Unprocessable("a NRRD with a detached data file is refused: send the data in the file")
        for key in ("line skip", "lineskip", "byte skip", "byteskip"):
            if int(header.get(key, 0) or 0) != 0:
                raise Unprocessable(f"NRRD '{key}' is not accepted in uploads")
        dtype = NRRD_DTYPE.get(str(header.get("type", "")).strip())
        if dtype is None:
            raise Unprocessable(f"NRRD type {header.get('type')!r} is not a supported voxel type")
        if dtype.itemsize > 1:
            endian = str(header.get("endian", "little")).strip()
            if endian not in ("little", "big"):
                raise Unprocessable(f"NRRD endian {endian!r} must be little or big")
            dtype = dtype.newbyteorder("<" if endian == "little" else ">")
        sizes = header.get("sizes")
        if sizes is None:
            raise Unprocessable("the NRRD header has no sizes")
        shape = tuple(int(s) for s in np.asarray(sizes).ravel())
        affine = nrrd_affine(_finite_geometry(header))
        nbytes = _check_geometry(shape, dtype, affine, label, limits)
        encoding = str(header.get("encoding", "raw")).strip().lower()
        raw.seek(offset)
        stream: Readable
        if encoding == "raw":
            stream = raw
        elif encoding in ("gzip", "gz"):
            stream = gzip.GzipFile(fileobj=raw, mode="rb")
        elif encoding in ("bzip2", "bz2"):
            stream = bz2.BZ2File(raw, mode="rb")
        else:
            raise Unprocessable(f"NRRD encoding {encoding!r} is not accepted: use raw, gzip or bzip2")
        _payload(stream, nbytes, dtype, label, label_max)
    return Inspected(shape, affine, dtype)


def _nrrd_header_text(raw: IO[bytes], limit: int) -> tuple[str, int]:
    """The header's text up to its blank line, and where the data starts; at most ``limit`` bytes."""
    head = raw.read(limit + 2)
    if not head.startswith(b"NRRD000"):
        raise BadRequest("not a NRRD file (no NRRD000x magic)")
    for sep in (b"\n\n", b"\r\n\r\n"):
        end = head.find(sep)
        if end >= 0:
            try:
                return head[:end].decode("ascii"), end + len(sep)
            except UnicodeDecodeError:
                raise Unprocessable("the NRRD header is not ASCII text") from None
    raise Unprocessable(f"no end of the NRRD header in its first {limit} bytes")


def _finite_geometry(header: dict[str, Any]) -> dict[str, Any]:
    directions = header.get("space directions")
    if directions is not None:
        rows = [np.asarray(d, dtype=float) for d in directions if d is not None]
        if any(np.all(np.isnan(r)) for r in rows):
            rows = [r for r in rows if not np.all(np.isnan(r))]  # 'none' rows (a list axis)
        if any(not np.all(np.isfinite(r)) for r in rows):
            raise Unprocessable("the NRRD space directions are not finite numbers")
    origin = header.get("space origin")
    if origin is not None and not np.all(np.isfinite(np.asarray(origin, dtype=float))):
        raise Unprocessable("the NRRD space origin is not finite")
    return header


# ---- shared -------------------------------------------------------------------------------------
def _check_geometry(
    shape: tuple[int, ...], dtype: np.dtype[Any], affine: np.ndarray, label: bool, limits: Limits
) -> int:
    """The payload's byte count, once shape, type and affine make sense and fit the limits."""
    if not 2 <= len(shape) <= 5 or any(d < 1 for d in shape):
        raise Unprocessable(f"a volume needs 2 to 5 dimensions of at least 1 voxel, got {list(shape)}")
    if dtype.kind not in "biuf":
        raise Unprocessable(f"voxel type {dtype} is not accepted (integers or real numbers only)")
    if not np.all(np.isfinite(affine)):
        raise Unprocessable("the voxel-to-world transform (affine) is not finite")
    if label and sum(1 for d in shape[3:] if d > 1) > 0:
        raise Unprocessable(f"a label has one channel: got shape {list(shape)}")
    voxels = math.prod(shape)
    if voxels > limits.max_voxels:
        raise TooLarge(
            f"{voxels} voxels ({'x'.join(map(str, shape))}) is over the limit of {limits.max_voxels}"
        )
    nbytes = voxels * dtype.itemsize
    if nbytes > limits.max_bytes:
        raise TooLarge(f"{nbytes} bytes of voxels is over the limit of {limits.max_bytes}")
    return nbytes


def _payload(stream: Readable, nbytes: int, dtype: np.dtype[Any], label: bool, label_max: int | None) -> None:
    """Read exactly ``nbytes`` (and little after), checking a label's values chunk by chunk."""
    left, carry = nbytes, b""
    while left > 0:
        block = stream.read(min(CHUNK, left))
        if not block:
            raise BadRequest(
                f"the file does not load: it ends {left} bytes before the voxels its header declares"
            )
        left -= len(block)
        if label:
            data = carry + block
            usable = len(data) - len(data) % dtype.itemsize
            _check_label_values(np.frombuffer(data[:usable], dtype=dtype), label_max)
            carry = data[usable:]
    if len(stream.read(MAX_TRAILING + 1)) > MAX_TRAILING:
        raise Unprocessable("the file holds more data than its header declares")


def _check_label_values(values: np.ndarray, label_max: int | None) -> None:
    if values.size == 0:
        return
    if values.dtype.kind == "f":
        if not np.all(np.isfinite(values)):
            raise Unprocessable("a label must hold finite values (found NaN or infinity)")
        if not np.all(values == np.round(values)):
            raise Unprocessable("a label must hold whole numbers (label indices)")
    low, high = values.min(), values.max()
    if low < 0:
        raise Unprocessable(f"a label holds a negative value ({low})")
    if label_max is not None and high > label_max:
        raise Unprocessable(f"a label holds {high}, above the app's highest label index {label_max}")


def _read_exact(stream: Readable, n: int, what: str) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        raise BadRequest(f"the file does not load: it is too short for {what}")
    return data


def _skip(stream: Readable, n: int) -> None:
    while n > 0:
        got = stream.read(min(CHUNK, n))
        if not got:
            raise BadRequest("the file does not load: it ends inside its header extensions")
        n -= len(got)


def _clean(exc: BaseException) -> str:
    """An exception's text without file system paths."""
    text = str(exc) or type(exc).__name__
    return " ".join(w for w in text.split() if "/" not in w)[:300]
