"""A DICOM series (single-frame instances, or one multi-frame instance) as a volume with its geometry,
written as NIfTI.

Slices are sorted by ImagePositionPatient projected on the slice normal (ImageOrientationPatient's
row x column cosines); in-plane spacing comes from PixelSpacing and the slice step from the positions
themselves; rescale slope/intercept are applied per slice. DICOM patient space is LPS and NIfTI is RAS:
the affine is flipped in x and y. The array index order is (column, row, slice), as ITK and MONAI load it.

A multi-frame instance (Enhanced CT/MR/PET, Legacy Converted Enhanced) is read with highdicom's
``Image.get_volume`` (per-frame positions, pixel measures and rescale from the functional groups) and
laid out the same way: slices ascending along the normal of the row and column directions.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
from pydicom import Dataset, dcmread
from pydicom.errors import InvalidDicomError

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
NON_IMAGE_MODALITIES = {"SEG", "RTSTRUCT", "RTPLAN", "RTDOSE", "SR", "PR", "KO", "REG", "DOC"}


class ConversionError(Exception):
    """The series cannot become a volume (the message says why)."""


class NothingToConvert(ConversionError):
    """No image instances in the series (a SEG, a structured report ...)."""


@dataclass
class Slice:
    path: Path
    ds: Dataset
    position: np.ndarray | None
    distance: float


@dataclass
class Volume:
    data: np.ndarray  # (columns, rows, slices)
    affine_lps: np.ndarray
    sop_uids: list[str]  # in slice order (k = 0 .. n-1)
    warnings: list[str] = field(default_factory=list)

    @property
    def affine_ras(self) -> np.ndarray:
        affine: np.ndarray = LPS_TO_RAS @ self.affine_lps
        return affine

    @property
    def spacing(self) -> tuple[float, float, float]:
        norms = np.linalg.norm(self.affine_lps[:3, :3], axis=0)
        return (float(norms[0]), float(norms[1]), float(norms[2]))


def frames(ds: Dataset) -> int:
    return int(ds.get("NumberOfFrames", 1) or 1)


def read_images(paths: Sequence[Path], *, pixels: bool = True) -> list[tuple[Path, Dataset]]:
    """The image instances of a series (SEG, SR and other non-image instances left out)."""
    datasets: list[tuple[Path, Dataset]] = []
    for path in paths:
        try:
            read: Dataset = dcmread(str(path), stop_before_pixels=not pixels)
        except (InvalidDicomError, OSError, EOFError, ValueError) as exc:
            raise ConversionError(f"{path.name} does not read: {exc}") from exc
        if str(read.get("Modality", "")).upper() in NON_IMAGE_MODALITIES:
            continue
        if "Rows" not in read or "Columns" not in read or (pixels and "PixelData" not in read):
            continue
        datasets.append((path, read))
    if not datasets:
        raise NothingToConvert("no image instances in the series")
    return datasets


def multiframe(datasets: list[tuple[Path, Dataset]]) -> tuple[Path, Dataset] | None:
    """The series' one multi-frame instance, None for a series of single frames; a mix is refused."""
    multi = [pd for pd in datasets if frames(pd[1]) > 1]
    if not multi:
        return None
    if len(datasets) > 1:
        raise ConversionError(
            f"{len(multi)} multi-frame instance(s) among {len(datasets)} image instances: one volume needs"
            " a single multi-frame instance or single frames only"
        )
    return multi[0]


def read_slices(paths: Sequence[Path], *, pixels: bool = True) -> list[Slice]:
    """The single-frame image instances of a series, sorted along the slice normal (or InstanceNumber)."""
    return sorted_slices(read_images(paths, pixels=pixels))


def sorted_slices(datasets: list[tuple[Path, Dataset]]) -> list[Slice]:
    if multiframe(datasets) is not None:
        raise ConversionError("a multi-frame instance: read it with load_series or multiframe_geometry")
    datasets = _largest_stack(datasets)
    orientation = _orientation(datasets[0][1])
    if orientation is None or any("ImagePositionPatient" not in ds for _, ds in datasets):
        datasets.sort(key=lambda pd: int(pd[1].get("InstanceNumber", 0) or 0))
        return [Slice(p, ds, None, float(i)) for i, (p, ds) in enumerate(datasets)]
    normal = np.cross(orientation[0], orientation[1])
    slices = []
    for path, ds in datasets:
        pos = np.asarray([float(v) for v in ds.ImagePositionPatient], dtype=float)
        slices.append(Slice(path, ds, pos, float(np.dot(pos, normal))))
    slices.sort(key=lambda s: s.distance)
    return slices


def load_series(paths: Sequence[Path]) -> Volume:
    datasets = read_images(paths)
    multi = multiframe(datasets)
    if multi is not None:
        return load_multiframe(*multi)
    slices = sorted_slices(datasets)
    warnings: list[str] = []
    first = slices[0].ds
    rows, cols = int(first.Rows), int(first.Columns)
    if int(first.get("SamplesPerPixel", 1) or 1) != 1:
        raise ConversionError("colour (multi-sample) images are not supported")
    affine = geometry(slices, warnings)
    data = _pixels(slices, rows, cols)
    return Volume(data, affine, [str(s.ds.SOPInstanceUID) for s in slices], warnings)


@dataclass(frozen=True)
class FrameGeometry:
    """A multi-frame instance's volume grid: ``affine_lps`` maps (column, row, slice) to LPS millimetres;
    ``hd_affine`` is highdicom's (slice, row, column) affine, whose slice axis ``flipped`` reverses."""

    affine_lps: np.ndarray
    hd_affine: np.ndarray
    flipped: bool
    shape: tuple[int, int, int]  # (columns, rows, slices)


def multiframe_geometry(ds: Dataset) -> FrameGeometry:
    """The grid of a multi-frame instance (its header is enough), slices ascending along the normal."""
    try:
        grid = hd.Image.from_dataset(ds, copy=False).get_volume_geometry()
    except (ValueError, RuntimeError, AttributeError, KeyError) as exc:
        raise ConversionError(f"the multi-frame instance is not one regular volume: {exc}") from exc
    if grid is None:
        raise ConversionError("the multi-frame instance is not one regular volume (no plane positions)")
    return _layout(grid)


def _layout(grid: hd.VolumeGeometry | hd.Volume) -> FrameGeometry:
    """highdicom's (slice, row, column) grid in this module's (column, row, slice) layout."""
    n, rows, cols = (int(v) for v in grid.spatial_shape)
    a = np.asarray(grid.affine, dtype=float)
    ours = np.eye(4)
    ours[:3, 0], ours[:3, 1], ours[:3, 2], ours[:3, 3] = a[:3, 2], a[:3, 1], a[:3, 0], a[:3, 3]
    normal = np.cross(ours[:3, 0], ours[:3, 1])
    flipped = n > 1 and float(np.dot(ours[:3, 2], normal)) < 0
    if flipped:  # highdicom's slice 0 is the last along the normal: count from the other end
        ours[:3, 3] = ours[:3, 3] + ours[:3, 2] * (n - 1)
        ours[:3, 2] = -ours[:3, 2]
    return FrameGeometry(ours, a, flipped, (cols, rows, n))


def load_multiframe(path: Path, ds: Dataset) -> Volume:
    """One multi-frame instance as a volume (rescale applied by highdicom), in this module's layout."""
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise ConversionError("colour (multi-sample) images are not supported")
    try:
        volume = hd.Image.from_dataset(ds, copy=False).get_volume()
    except (ValueError, RuntimeError, NotImplementedError, AttributeError, KeyError) as exc:
        raise ConversionError(f"{path.name} is not one regular volume, or does not decode: {exc}") from exc
    grid = _layout(volume)
    data = np.asarray(volume.array).transpose(2, 1, 0)  # (slice, row, column) -> (column, row, slice)
    if grid.flipped:
        data = data[:, :, ::-1]
    return Volume(_compact(np.ascontiguousarray(data)), grid.affine_lps, [str(ds.SOPInstanceUID)])


def _compact(data: np.ndarray) -> np.ndarray:
    """Whole numbers as int16 (or int32) when they fit, anything else as float32."""
    whole = np.issubdtype(data.dtype, np.integer) or bool(np.all(np.mod(data, 1) == 0))
    if whole and data.size:
        lo, hi = data.min(), data.max()
        if lo >= np.iinfo(np.int16).min and hi <= np.iinfo(np.int16).max:
            return data.astype(np.int16)
        if lo >= np.iinfo(np.int32).min and hi <= np.iinfo(np.int32).max:
            return data.astype(np.int32, copy=False)
    return data.astype(np.float32, copy=False)


def geometry(slices: Sequence[Slice], warnings: list[str]) -> np.ndarray:
    """The voxel (column, row, slice) to LPS-millimetre affine."""
    first = slices[0].ds
    spacing = [float(v) for v in first.get("PixelSpacing", [1.0, 1.0])]
    row_spacing, col_spacing = spacing[0], spacing[1]
    orientation = _orientation(first)
    affine = np.eye(4)
    if orientation is None or slices[0].position is None:
        warnings.append("no ImageOrientationPatient/ImagePositionPatient: nominal geometry")
        step = float(first.get("SpacingBetweenSlices", 0) or first.get("SliceThickness", 1.0) or 1.0)
        affine[:3, :3] = np.diag([col_spacing, row_spacing, step])
        return affine
    row_cos, col_cos = orientation
    normal = np.cross(row_cos, col_cos)
    affine[:3, 0] = row_cos * col_spacing
    affine[:3, 1] = col_cos * row_spacing
    affine[:3, 3] = slices[0].position
    if len(slices) == 1:
        step = float(first.get("SpacingBetweenSlices", 0) or first.get("SliceThickness", 1.0) or 1.0)
        affine[:3, 2] = normal * step
        return affine
    distances = np.asarray([s.distance for s in slices])
    gaps = np.diff(distances)
    if np.any(gaps < 1e-3):
        raise ConversionError(
            "several instances share one slice position (a 4D or duplicated series): cannot build one volume"
        )
    mean = float(np.mean(gaps))
    if float(np.max(np.abs(gaps - mean))) > 0.01 * mean + 1e-3:
        warnings.append(
            f"non-uniform slice spacing ({gaps.min():.3f}..{gaps.max():.3f} mm); using {mean:.3f}"
        )
    last, first_pos = slices[-1].position, slices[0].position
    assert last is not None and first_pos is not None
    # The step between slices as the positions give it (a gantry tilt shows up as a shear).
    affine[:3, 2] = (last - first_pos) / (len(slices) - 1)
    return affine


def write_nifti(volume: Volume, dest: Path) -> None:
    img = nib.Nifti1Image(volume.data, volume.affine_ras)
    img.header.set_xyzt_units("mm")
    img.set_qform(volume.affine_ras, code=1)
    img.set_sform(volume.affine_ras, code=1)
    nib.save(img, str(dest))


@dataclass(frozen=True)
class Converted:
    """What a conversion reports back (small and picklable: it crosses a process boundary)."""

    shape: tuple[int, ...]
    spacing: tuple[float, float, float]
    instances: int
    warnings: tuple[str, ...]


def convert_to_file(paths: Sequence[str], dest: str) -> Converted:
    """Load a series and write it as NIfTI at ``dest``: the job the converter's child process runs."""
    volume = load_series([Path(p) for p in paths])
    write_nifti(volume, Path(dest))
    return Converted(
        tuple(int(s) for s in volume.data.shape), volume.spacing, len(volume.sop_uids), tuple(volume.warnings)
    )


def lower_priority() -> None:
    """Child process initializer: conversions yield the CPU to ingest and requests."""
    os.nice(10)


def _orientation(ds: Dataset) -> tuple[np.ndarray, np.ndarray] | None:
    iop = ds.get("ImageOrientationPatient")
    if iop is None or len(iop) != 6:
        return None
    values = np.asarray([float(v) for v in iop], dtype=float)
    row, col = values[:3], values[3:]
    if np.linalg.norm(row) < 1e-6 or np.linalg.norm(col) < 1e-6:
        return None
    return row / np.linalg.norm(row), col / np.linalg.norm(col)


def _stack_key(ds: Dataset) -> tuple[object, ...]:
    iop = ds.get("ImageOrientationPatient")
    rounded = tuple(round(float(v), 4) for v in iop) if iop is not None else None
    return (int(ds.Rows), int(ds.Columns), rounded)


def _largest_stack(datasets: list[tuple[Path, Dataset]]) -> list[tuple[Path, Dataset]]:
    """Keep the largest group of slices sharing size and orientation (drops scouts/localizers)."""
    counts = Counter(_stack_key(ds) for _, ds in datasets)
    if len(counts) == 1:
        return datasets
    key, _ = counts.most_common(1)[0]
    return [(p, ds) for p, ds in datasets if _stack_key(ds) == key]


def _pixels(slices: Sequence[Slice], rows: int, cols: int) -> np.ndarray:
    slopes = [float(s.ds.get("RescaleSlope", 1) or 1) for s in slices]
    intercepts = [float(s.ds.get("RescaleIntercept", 0) or 0) for s in slices]
    integral = all(v.is_integer() for v in slopes + intercepts)
    out = np.empty((cols, rows, len(slices)), dtype=np.int32 if integral else np.float32)
    for k, (s, slope, intercept) in enumerate(zip(slices, slopes, intercepts, strict=True)):
        try:
            arr = s.ds.pixel_array
        except (ValueError, RuntimeError, NotImplementedError, AttributeError) as exc:
            raise ConversionError(f"pixel data of {s.path.name} does not decode: {exc}") from exc
        if arr.shape != (rows, cols):
            raise ConversionError(f"{s.path.name}: {arr.shape} pixels, expected {(rows, cols)}")
        if integral:
            out[:, :, k] = (arr.astype(np.int32) * int(slope) + int(intercept)).T
        else:
            out[:, :, k] = (arr.astype(np.float32) * np.float32(slope) + np.float32(intercept)).T
    return _compact(out) if integral else out
