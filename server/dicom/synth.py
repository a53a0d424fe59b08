"""Synthetic DICOM series cloned from pydicom's bundled ``CT_small.dcm`` (tests and benchmarks).

Every clone gets new Study/Series/SOP Instance UIDs and its own ImagePositionPatient along the slice
normal; a marker pixel in each slice (value = slice index) lets a test check that a converted volume
came out in the right order.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom import Dataset, dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

MARKER = (0, 0)  # (row, column) of the pixel that holds the slice index


@dataclass
class SyntheticSeries:
    study_uid: str
    series_uid: str
    files: list[Path] = field(default_factory=list)  # in slice order (position along the normal)
    sop_uids: list[str] = field(default_factory=list)
    spacing: tuple[float, float, float] = (0.0, 0.0, 0.0)  # (column spacing, row spacing, slice spacing)
    shape: tuple[int, int, int] = (0, 0, 0)  # (columns, rows, slices): the NIfTI array shape


def template() -> Dataset:
    path = get_testdata_file("CT_small.dcm")
    if path is None:
        raise FileNotFoundError("pydicom's CT_small.dcm test file is missing")
    return dcmread(str(path))


def ct_series(
    dest: Path,
    n_slices: int,
    *,
    slice_spacing: float = 2.5,
    orientation: Sequence[float] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    origin: Sequence[float] = (-158.135803, -179.035797, -75.699997),
    study_uid: str | None = None,
    patient_id: str = "LL-SYNTH-1",
    description: str = "synthetic CT",
    series_number: int = 1,
    base: Dataset | None = None,
) -> SyntheticSeries:
    """Write ``n_slices`` CT_small clones as one series into ``dest`` (one file per instance)."""
    src = base if base is not None else template()
    dest.mkdir(parents=True, exist_ok=True)
    study = study_uid or generate_uid()
    series = generate_uid()
    row = np.asarray(orientation[:3], dtype=float)
    col = np.asarray(orientation[3:], dtype=float)
    normal = np.cross(row, col)
    pixels = src.pixel_array.copy()
    out = SyntheticSeries(study, series)
    ps = [float(v) for v in src.PixelSpacing]
    out.spacing = (ps[1], ps[0], slice_spacing)
    out.shape = (int(src.Columns), int(src.Rows), n_slices)
    for i in range(n_slices):
        ds = copy.copy(src)
        ds.file_meta = copy.deepcopy(src.file_meta)
        sop = generate_uid()
        ds.SOPInstanceUID = sop
        ds.file_meta.MediaStorageSOPInstanceUID = sop
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series
        ds.PatientID = patient_id
        ds.SeriesDescription = description
        ds.SeriesNumber = series_number
        ds.InstanceNumber = i + 1
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in orientation]
        pos = np.asarray(origin, dtype=float) + normal * slice_spacing * i
        ds.ImagePositionPatient = [f"{v:.6f}" for v in pos]
        ds.SliceLocation = f"{float(np.dot(pos, normal)):.6f}"
        ds.SliceThickness = slice_spacing
        slice_pixels = pixels.copy()
        slice_pixels[MARKER] = i  # stored value; the volume holds i * slope + intercept
        ds.PixelData = slice_pixels.tobytes()
        path = dest / f"{i:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        out.files.append(path)
        out.sop_uids.append(sop)
    return out


def many_instances(dest: Path, total: int, per_series: int = 100, seed: int = 0) -> list[SyntheticSeries]:
    """``total`` instances in series of ``per_series`` slices (the ingest benchmark's load)."""
    base = template()
    rng = random.Random(seed)
    series: list[SyntheticSeries] = []
    done = 0
    while done < total:
        n = min(per_series, total - done)
        study = generate_uid()
        series.append(
            ct_series(
                dest / f"s{len(series):05d}",
                n,
                study_uid=study,
                patient_id=f"LL-BENCH-{rng.randrange(10**6):06d}",
                series_number=len(series) + 1,
                base=base,
            )
        )
        done += n
    return series


def corrupt_copy(src: Path, dest: Path, keep: int = 400) -> Path:
    """``src`` with its dataset cut short after ``keep`` bytes of the body (the file meta stays valid)."""
    raw = src.read_bytes()
    ds = dcmread(str(src), stop_before_pixels=True)
    meta_len = int(ds.file_meta.FileMetaInformationGroupLength) + 12 + 132
    dest.write_bytes(raw[: meta_len + keep] + b"\xff\xfe\x00\xe0garbage")
    return dest


def without(src: Path, dest: Path, keyword: str) -> Path:
    """A copy of ``src`` with one attribute removed (e.g. ``SeriesInstanceUID``)."""
    ds = dcmread(str(src))
    delattr(ds, keyword)
    ds.save_as(dest, enforce_file_format=True)
    return dest


def enhanced(series: SyntheticSeries, dest: Path) -> SyntheticSeries:
    """``series`` as one Legacy Converted Enhanced CT instance (highdicom), frames in slice order: a
    multi-frame series with a new Series and SOP Instance UID, the same study and geometry."""
    import highdicom as hd

    frames = [dcmread(str(p)) for p in series.files]
    ds = hd.legacy.LegacyConvertedEnhancedCTImage(frames, generate_uid(), 2, generate_uid(), 1)
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return SyntheticSeries(
        series.study_uid,
        str(ds.SeriesInstanceUID),
        [path],
        [str(ds.SOPInstanceUID)],
        series.spacing,
        series.shape,
    )
