"""The header scan (the C-STORE fast path) agrees with pydicom on every file pydicom ships."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest

from server.dicom import synth
from server.dicom.incoming import IngestError, InstanceMeta, decode, read_meta
from server.dicom.scan import scan

TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


def outcome(read: Callable[[], InstanceMeta]) -> InstanceMeta | int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the odd files it is made to test
        try:
            return read()
        except IngestError as exc:
            return exc.status


def corpus(tmp_path: Path) -> list[Path]:
    files = sorted(p for p in TEST_FILES.rglob("*") if p.is_file() and p.stat().st_size > 132)
    series = synth.ct_series(tmp_path / "ct", 2)
    files += series.files
    for keep in (0, 10, 400, 2000, 30000):
        files.append(synth.corrupt_copy(series.files[0], tmp_path / f"cut{keep}.dcm", keep))
    for keyword in ("SeriesInstanceUID", "SOPClassUID", "PatientID"):
        files.append(synth.without(series.files[1], tmp_path / f"no-{keyword}.dcm", keyword))
    return files


def test_scan_and_pydicom_agree(tmp_path: Path) -> None:
    fast = 0
    checked = 0
    for path in corpus(tmp_path):
        raw = path.read_bytes()
        if raw[128:132] != b"DICM":
            continue
        checked += 1
        if scan(raw) is None:
            continue  # left to pydicom: read_meta takes the same path as the reference
        fast += 1
        expected = outcome(lambda raw=raw: InstanceMeta.from_dataset(decode(raw)))
        assert outcome(lambda raw=raw: read_meta(raw)) == expected, path.name
    assert checked > 60
    assert fast > 40, f"only {fast} of {checked} files took the fast path"


def test_fast_path_statuses(tmp_path: Path) -> None:
    series = synth.ct_series(tmp_path / "ct", 1)
    cut = synth.corrupt_copy(series.files[0], tmp_path / "cut.dcm", keep=30000).read_bytes()
    assert scan(cut) is not None  # handled by the scan itself, not by the fallback
    assert outcome(lambda: read_meta(cut)) == 0xC000
    missing = synth.without(series.files[0], tmp_path / "no.dcm", "StudyInstanceUID").read_bytes()
    assert scan(missing) is not None
    assert outcome(lambda: read_meta(missing)) == 0xC001
    meta = read_meta(series.files[0].read_bytes())
    assert (meta.sop_uid, meta.series_uid, meta.patient_id, meta.modality) == (
        series.sop_uids[0],
        series.series_uid,
        "LL-SYNTH-1",
        "CT",
    )


@pytest.mark.parametrize("name", ["MR_small_bigendian.dcm", "image_dfl.dcm"])
def test_other_encodings_go_to_pydicom(name: str) -> None:
    path = TEST_FILES / name
    if not path.exists():
        pytest.skip(f"{name} not in this pydicom")
    assert scan(path.read_bytes()) is None
