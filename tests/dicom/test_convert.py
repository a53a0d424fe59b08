"""Series -> volume geometry: sort along the normal, spacing from positions, LPS -> RAS, rescale."""

from __future__ import annotations

import random
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from server.dicom import synth
from server.dicom.convert import ConversionError, NothingToConvert, load_series, write_nifti

OBLIQUE = (0.866025, 0.5, 0.0, -0.5, 0.866025, 0.0)  # rotated 30 degrees about the z axis


def shuffled(files: list[Path], seed: int = 3) -> list[Path]:
    out = list(files)
    random.Random(seed).shuffle(out)
    return out


def test_oblique_series_geometry(tmp_path: Path) -> None:
    series = synth.ct_series(tmp_path, 8, slice_spacing=2.0, orientation=OBLIQUE)
    volume = load_series(shuffled(series.files))
    assert volume.data.shape == (128, 128, 8)
    assert volume.sop_uids == series.sop_uids  # slice order = position along the normal
    assert list(volume.data[0, 0, :]) == [k - 1024 for k in range(8)]
    assert volume.spacing == pytest.approx((0.661468, 0.661468, 2.0), abs=1e-4)
    row, col = np.asarray(OBLIQUE[:3]), np.asarray(OBLIQUE[3:])
    assert volume.affine_lps[:3, 0] == pytest.approx(row / np.linalg.norm(row) * 0.661468, abs=1e-5)
    assert volume.affine_lps[:3, 1] == pytest.approx(col / np.linalg.norm(col) * 0.661468, abs=1e-5)
    assert volume.affine_lps[:3, 2] == pytest.approx([0, 0, 2.0], abs=1e-4)
    path = tmp_path / "v.nii.gz"
    write_nifti(volume, path)
    img = nib.load(str(path))
    # World position of voxel (i, j, k) in RAS is the DICOM LPS position with x and y negated.
    ijk = np.array([5, 7, 3, 1.0])
    lps = np.asarray(synth.template().ImagePositionPatient, dtype=float) + row * 0.661468 * 5
    lps = lps + col * 0.661468 * 7 + np.array([0, 0, 2.0]) * 3
    assert (img.affine @ ijk)[:3] == pytest.approx([-lps[0], -lps[1], lps[2]], abs=1e-3)
    assert img.header.get_qform(coded=True)[1] == 1 and img.header.get_sform(coded=True)[1] == 1


def test_matches_simpleitk(tmp_path: Path) -> None:
    sitk = pytest.importorskip("SimpleITK", reason="SimpleITK not installed (pip install SimpleITK)")
    series = synth.ct_series(tmp_path, 6, slice_spacing=1.25, orientation=OBLIQUE)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp_path)))
    image = reader.Execute()
    volume = load_series(shuffled(series.files))
    direction = np.asarray(image.GetDirection()).reshape(3, 3) * np.asarray(image.GetSpacing())
    assert volume.affine_lps[:3, :3] == pytest.approx(direction, abs=1e-4)
    assert volume.affine_lps[:3, 3] == pytest.approx(image.GetOrigin(), abs=1e-4)
    assert np.array_equal(sitk.GetArrayFromImage(image).transpose(2, 1, 0), volume.data)


def test_fractional_rescale_gives_floats(tmp_path: Path) -> None:
    series = synth.ct_series(tmp_path, 3)
    for path in series.files:
        ds = pydicom.dcmread(path)
        ds.RescaleSlope, ds.RescaleIntercept = "0.5", "-10"
        ds.save_as(path)
    volume = load_series(series.files)
    assert volume.data.dtype == np.float32
    stored = synth.template().pixel_array.T
    assert volume.data[5, 9, 1] == pytest.approx(stored[5, 9] * 0.5 - 10)


def test_duplicate_positions_are_refused(tmp_path: Path) -> None:
    series = synth.ct_series(tmp_path, 3)
    ds = pydicom.dcmread(series.files[2])
    ds.ImagePositionPatient = pydicom.dcmread(series.files[1]).ImagePositionPatient
    ds.save_as(series.files[2])
    with pytest.raises(ConversionError, match="share one slice position"):
        load_series(series.files)


def test_irregular_spacing_is_reported(tmp_path: Path) -> None:
    series = synth.ct_series(tmp_path, 4, slice_spacing=2.0)
    ds = pydicom.dcmread(series.files[3])
    ds.ImagePositionPatient = [ds.ImagePositionPatient[0], ds.ImagePositionPatient[1], -75.699997 + 9.0]
    ds.save_as(series.files[3])
    volume = load_series(series.files)
    assert any("non-uniform slice spacing" in w for w in volume.warnings)


def test_a_series_without_images_is_nothing_to_convert(tmp_path: Path) -> None:
    series = synth.ct_series(tmp_path, 1)
    ds = pydicom.dcmread(series.files[0])
    ds.Modality = "SEG"
    ds.save_as(series.files[0])
    with pytest.raises(NothingToConvert):
        load_series(series.files)
