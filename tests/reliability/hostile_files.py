"""Hostile volume files, as bytes: each one a way a file has been seen to hurt a server."""

from __future__ import annotations

import gzip
import io
import struct

import nibabel as nib
import numpy as np

AFFINE = np.diag([1.5, 1.5, 2.0, 1.0])


def nifti(data: np.ndarray, affine: np.ndarray = AFFINE, gz: bool = True) -> bytes:
    img = nib.Nifti1Image(data, affine)
    img.header.set_data_offset(352)
    raw = img.header.binaryblock + b"\0" * 4 + np.asarray(data).tobytes(order="F")
    return gzip.compress(raw) if gz else raw


def header_only(shape: tuple[int, ...], dtype: type = np.int16) -> bytes:
    """A 352-byte NIfTI that claims ``shape`` and holds no voxels (a lying header)."""
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(dtype)
    hdr.set_data_shape(shape)
    hdr.set_data_offset(352)
    return hdr.binaryblock + b"\0" * 4


def patched_header(offset: int, fmt: str, value: int | float) -> bytes:
    raw = bytearray(header_only((8, 8, 8)))
    struct.pack_into(fmt, raw, offset, value)
    return bytes(raw) + b"\0" * (8 * 8 * 8 * 2)


def bomb(declared: tuple[int, ...] = (64, 64, 64), extra_mb: int = 300) -> bytes:
    """A small .nii.gz whose gzip stream inflates far past the voxels its header declares."""
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9) as f:
        f.write(header_only(declared, np.uint8))
        block = b"\0" * (1 << 20)
        for _ in range(extra_mb):
            f.write(block)
    return out.getvalue()


def nan_affine() -> bytes:
    raw = bytearray(header_only((8, 8, 8)))
    struct.pack_into("<h", raw, 254, 1)  # sform_code 1: the srow rows are the affine
    struct.pack_into("<f", raw, 280, float("nan"))  # srow_x[0]
    return bytes(raw) + b"\0" * (8 * 8 * 8 * 2)


def nrrd(header: str, data: bytes = b"") -> bytes:
    return ("NRRD0004\n" + header.strip() + "\n\n").encode() + data


SHAPE = (32, 32, 32)  # the studies' shape in the suite

# name -> (file name, bytes): refused as an image and as a label
HOSTILE_VOLUMES: dict[str, tuple[str, bytes]] = {
    "detached NRRD, absolute": (
        "a.nrrd",
        nrrd("type: uchar\ndimension: 3\nsizes: 32 32 32\nencoding: raw\ndata file: /etc/passwd"),
    ),
    "detached NRRD, relative": (
        "a.nrrd",
        nrrd("type: uchar\ndimension: 3\nsizes: 32 32 32\nencoding: raw\ndatafile: .labelloop/labelloop.db"),
    ),
    "detached NRRD, endless device": (
        "a.nrrd",
        nrrd("type: uchar\ndimension: 3\nsizes: 32 32 32\nencoding: raw\ndata file: /dev/zero"),
    ),
    "NRRD huge line skip": (
        "a.nrrd",
        nrrd("type: uchar\ndimension: 3\nsizes: 2 2 2\nencoding: raw\nline skip: 2000000000", b"\0" * 8),
    ),
    "NRRD byte skip": (
        "a.nrrd",
        nrrd("type: uchar\ndimension: 3\nsizes: 2 2 2\nbyte skip: 99\nencoding: raw"),
    ),
    "NRRD absurd sizes": (
        "a.nrrd",
        nrrd("type: float\ndimension: 3\nsizes: 1000000000 1000000000 9\nencoding: raw"),
    ),
    "NRRD negative size": ("a.nrrd", nrrd("type: float\ndimension: 3\nsizes: -4 4 4\nencoding: raw")),
    "NRRD block type": ("a.nrrd", nrrd("type: block\ndimension: 3\nsizes: 2 2 2\nencoding: raw", b"\0" * 8)),
    "NRRD endless header": ("a.nrrd", b"NRRD0004\n" + b"key:=value\n" * 20000),
    "NRRD NaN directions": (
        "a.nrrd",
        nrrd(
            "type: uchar\ndimension: 3\nspace: left-posterior-superior\nsizes: 2 2 2\n"
            "space directions: (nan,0,0) (0,1,0) (0,0,1)\nencoding: raw",
            b"\0" * 8,
        ),
    ),
    "NRRD truncated": (
        "a.nrrd",
        nrrd("type: short\ndimension: 3\nsizes: 32 32 32\nencoding: raw", b"\0" * 100),
    ),
    "NIfTI lying header 3 GB": ("a.nii", header_only((1024, 1024, 1500))),
    "NIfTI 32767 cubed": ("a.nii", header_only((32767, 32767, 32767))),
    "NIfTI negative dim": ("a.nii", patched_header(42, "<h", -5)),
    "NIfTI zero dim": ("a.nii", patched_header(42, "<h", 0)),
    "NIfTI unknown type": ("a.nii", patched_header(70, "<h", 999)),
    "NIfTI NaN affine": ("a.nii", nan_affine()),
    "NIfTI decompression bomb": ("a.nii.gz", bomb()),
    "NIfTI corrupt gzip": ("a.nii.gz", gzip.compress(header_only((4, 4, 4)))[:40] + b"garbage" * 40),
    "NIfTI complex": ("a.nii.gz", nifti(np.zeros(SHAPE, np.complex64))),
    "not a volume": ("a.nii.gz", b"hello, world"),
    "empty file": ("a.nii.gz", b""),
}

# refused as a label (a good image otherwise)
HOSTILE_LABELS: dict[str, tuple[str, bytes]] = {
    "label NaN": ("l.nii.gz", nifti(np.full(SHAPE, np.nan, np.float32))),
    "label infinity": ("l.nii.gz", nifti(np.full(SHAPE, np.inf, np.float32))),
    "label fractions": ("l.nii.gz", nifti(np.full(SHAPE, 0.5, np.float32))),
    "label negative": ("l.nii.gz", nifti(np.full(SHAPE, -1, np.int16))),
    "label above the app's labels": ("l.nii.gz", nifti(np.full(SHAPE, 200, np.uint8))),
    "label two channels": ("l.nii.gz", nifti(np.zeros((*SHAPE, 2), np.uint8))),
    "label wrong shape": ("l.nii.gz", nifti(np.zeros((16, 16, 16), np.uint8))),
}
