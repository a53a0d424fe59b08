"""The Storage SCP against real dcmtk tools: labelloop runs as a subprocess on free ports."""

from __future__ import annotations

import random
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
import requests

from server.dicom import synth
from tests.conftest import free_port
from tests.dicom.conftest import Labelloop, dcmtk, dcmtk_env, require, tool, wait_for

pytestmark = pytest.mark.dicom

ALLOW = "STORESCU@127.0.0.1,ECHOSCU,SENDER@127.0.0.1"


@pytest.fixture(scope="module")
def export_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """dcmtk's storescp as the node DICOM SEG exports are C-STOREd to."""
    require("storescp", "storescu", "echoscu")
    folder = tmp_path_factory.mktemp("export-node")
    port = free_port()
    proc = subprocess.Popen(
        [tool("storescp"), "-aet", "EXPORTS", "-od", str(folder), "--fork", str(port)],
        env=dcmtk_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: dcmtk("echoscu", "-aec", "EXPORTS", "127.0.0.1", str(port)).returncode == 0, 10)
        yield port, folder
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, export_node: tuple[int, Path]) -> Iterator[Labelloop]:
    work = tmp_path_factory.mktemp("scp")
    (work / "studies").mkdir()
    node_port, _ = export_node
    srv = Labelloop(
        work,
        [
            "--studies",
            str(work / "studies"),
            "--dicom-allow",
            ALLOW,
            "--dicom-export",
            f"EXPORTS@127.0.0.1:{node_port}",
        ],
        dicom_port=free_port(),
    ).start()
    try:
        yield srv
    finally:
        srv.stop()


def store(srv: Labelloop, files: list[Path], aet: str = "STORESCU") -> subprocess.CompletedProcess[str]:
    """storescu -v: its log names each response's status."""
    port = str(srv.dicom_port)
    return dcmtk("storescu", "-v", "-aet", aet, "-aec", "LABELLOOP", "127.0.0.1", port, *map(str, files))


def db_value(srv: Labelloop, sql: str, *args: object) -> object:
    path = srv.workdir / "studies" / ".labelloop" / "labelloop.db"
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        row = conn.execute(sql, args).fetchone()
    return None if row is None else row[0]


def counted(srv: Labelloop, series_uid: str) -> object:
    return db_value(srv, "SELECT n_instances FROM dicom_series WHERE series_uid = ?", series_uid)


def rows_for(srv: Labelloop, sop_uid: str) -> object:
    return db_value(srv, "SELECT count(*) FROM dicom_instances WHERE sop_uid = ?", sop_uid)


def incoming(srv: Labelloop) -> Path:
    return srv.workdir / "studies" / ".labelloop" / "dicom" / "incoming"


def test_storescu_series_becomes_one_image_with_its_geometry(server: Labelloop, tmp_path: Path) -> None:
    series = synth.ct_series(tmp_path / "ct", 20, slice_spacing=3.0)
    files = list(series.files)
    random.Random(7).shuffle(files)  # arrival order must not matter
    result = store(server, files)
    assert result.returncode == 0, result.stderr
    assert server.series_state(series.series_uid) in ("receiving", "pending", "converting", "ready")
    server.wait_series(series.series_uid)

    listing = server.get("/datastore/?output=all").json()["objects"]
    assert series.series_uid in listing
    info = server.get("/datastore/image/info", params={"image": series.series_uid}).json()
    assert info["shape"] == [128, 128, 20]
    assert info["spacing"] == pytest.approx([0.661468, 0.661468, 3.0], abs=1e-4)
    for key, value in {
        "PatientID": "LL-SYNTH-1",
        "StudyInstanceUID": series.study_uid,
        "SeriesInstanceUID": series.series_uid,
        "Modality": "CT",
        "StudyDate": "20040119",
    }.items():
        assert info[key] == value

    download = server.get("/datastore/image", params={"image": series.series_uid})
    assert download.status_code == 200
    path = tmp_path / "image.nii.gz"
    path.write_bytes(download.content)
    img = nib.load(str(path))
    assert img.shape == (128, 128, 20)
    assert img.header.get_zooms() == pytest.approx((0.661468, 0.661468, 3.0), abs=1e-4)
    data = np.asanyarray(img.dataobj)
    # Slice k holds the marker k (stored value k, rescale intercept -1024): sorted along the normal.
    assert list(data[0, 0, :]) == [k - 1024 for k in range(20)]
    # LPS -> RAS: x and y flip sign, the origin is the first slice's position.
    assert np.allclose(img.affine[:3, 3], [158.135803, 179.035797, -75.699997], atol=1e-3)
    assert counted(server, series.series_uid) == 20


def test_storescu_enhanced_ct_becomes_the_same_image_as_its_frames(server: Labelloop, tmp_path: Path) -> None:
    """One multi-frame instance (Legacy Converted Enhanced CT) over C-STORE: one image, the geometry and
    voxels of the single-frame series it was made from."""
    frames = synth.ct_series(tmp_path / "ct", 8, slice_spacing=2.0)
    multi = synth.enhanced(frames, tmp_path / "enhanced")
    # -R: propose only the SOP classes of the files (storescu's default list lacks enhanced CT)
    port = str(server.dicom_port)
    result = dcmtk(
        "storescu",
        "-v",
        "-R",
        "-aet",
        "STORESCU",
        "-aec",
        "LABELLOOP",
        "127.0.0.1",
        port,
        *map(str, multi.files),
    )
    assert result.returncode == 0, result.stderr
    info = server.wait_series(multi.series_uid)
    assert info["instances"] == 1
    image = server.get("/datastore/image/info", params={"image": multi.series_uid}).json()
    assert image["shape"] == [128, 128, 8] and image["Modality"] == "CT"
    assert image["spacing"] == pytest.approx([0.661468, 0.661468, 2.0], abs=1e-4)
    path = tmp_path / "image.nii.gz"
    path.write_bytes(server.get("/datastore/image", params={"image": multi.series_uid}).content)
    data = np.asanyarray(nib.load(str(path)).dataobj)
    assert list(data[0, 0, :]) == [k - 1024 for k in range(8)]  # slices in order along the normal


def test_resending_a_series_is_idempotent(server: Labelloop, tmp_path: Path) -> None:
    series = synth.ct_series(tmp_path / "ct", 5)
    assert store(server, series.files).returncode == 0
    server.wait_series(series.series_uid)
    assert store(server, series.files).returncode == 0  # the same instances again: success, no new rows
    sql = "SELECT count(*) FROM dicom_instances WHERE series_uid = ?"
    assert db_value(server, sql, series.series_uid) == 5
    assert counted(server, series.series_uid) == 5


def test_echoscu_and_the_allowlist(server: Labelloop) -> None:
    port = str(server.dicom_port)
    ok = dcmtk("echoscu", "-aet", "ECHOSCU", "-aec", "LABELLOOP", "127.0.0.1", port)
    assert ok.returncode == 0, ok.stderr
    intruder = dcmtk("echoscu", "-aet", "INTRUDER", "-aec", "LABELLOOP", "127.0.0.1", port)
    assert intruder.returncode != 0
    assert "Association Rejected" in intruder.stderr
    assert "Calling AE Title Not Recognized" in intruder.stderr


def test_outsider_cannot_store(server: Labelloop, tmp_path: Path) -> None:
    series = synth.ct_series(tmp_path / "ct", 2)
    result = store(server, series.files, aet="OUTSIDER")
    assert result.returncode != 0
    assert "Association Rejected" in result.stderr
    assert server.get(f"/dicom/series/{series.series_uid}").status_code == 404


def test_corrupt_dataset_fails_and_leaves_nothing(
    server: Labelloop, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """dcmtk refuses to send a damaged file, so a pynetdicom SCU sends its raw bytes as a bad node would."""
    from pynetdicom import AE, _config
    from pynetdicom.sop_class import CTImageStorage

    series = synth.ct_series(tmp_path / "ct", 1)
    bad = synth.corrupt_copy(series.files[0], tmp_path / "bad.dcm", keep=30000)  # pixel data cut short
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)  # send the file's bytes undecoded
    ae = AE(ae_title="SENDER")
    ae.add_requested_context(CTImageStorage, pydicom.uid.ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title="LABELLOOP")
    assert assoc.is_established
    try:
        status = assoc.send_c_store(bad)
    finally:
        assoc.release()
    assert int(status.Status) == 0xC000, hex(int(status.Status))  # cannot understand: does not decode
    assert not list(incoming(server).glob(f"{series.study_uid}/**/*.dcm"))
    assert not list(incoming(server).glob("**/.tmp-*"))
    assert rows_for(server, series.sop_uids[0]) == 0
    assert server.get(f"/dicom/series/{series.series_uid}").status_code == 404


def test_missing_series_uid_gets_its_own_failure_status(server: Labelloop, tmp_path: Path) -> None:
    series = synth.ct_series(tmp_path / "ct", 1)
    bad = synth.without(series.files[0], tmp_path / "no-series.dcm", "SeriesInstanceUID")
    result = store(server, [bad])
    assert result.returncode != 0
    assert "Received Store Response (Error: CannotUnderstand)" in result.stderr, result.stderr
    assert not list(incoming(server).glob(f"{series.study_uid}/**/*.dcm"))
    assert rows_for(server, series.sop_uids[0]) == 0


def test_final_label_goes_back_as_dicom_seg_by_c_store(
    server: Labelloop, export_node: tuple[int, Path], tmp_path: Path
) -> None:
    _, received = export_node
    series = synth.ct_series(tmp_path / "ct", 12)
    assert store(server, series.files).returncode == 0
    server.wait_series(series.series_uid)
    info = server.get("/datastore/image/info", params={"image": series.series_uid}).json()
    img = nib.load(info["path"])
    label = np.zeros(img.shape, np.uint8)
    label[20:50, 30:60, 3:6] = 1
    label[70:80, 70:90, 8] = 2
    label_path = tmp_path / "label.nii.gz"
    nib.save(nib.Nifti1Image(label, img.affine), str(label_path))
    with open(label_path, "rb") as f:
        r = requests.put(
            server.url + "/datastore/label",
            params={"image": series.series_uid, "tag": "final"},
            files={"label": ("label.nii.gz", f)},
            data={"params": '{"label_info": [{"name": "liver", "idx": 1}, {"name": "tumour", "idx": 2}]}'},
            timeout=30,
        )
    assert r.status_code == 200, r.text
    job = server.wait_export(series.series_uid)
    assert job["status"] == "DONE", job
    assert job["destinations"] == [f"cstore:EXPORTS@127.0.0.1:{export_node[0]}"]
    files = wait_for(lambda: list(received.glob(f"*{job['seg_sop_uid']}*")), 10, what="SEG at the node")
    seg = hd.seg.segread(files[0])
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series.series_uid
    assert [seg.get_segment_description(i).segment_label for i in (1, 2)] == ["liver", "tumour"]
    # Back to (slice, row, column) per source instance, in the series' slice order.
    frames = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=series.sop_uids, combine_segments=True, assert_missing_frames_are_empty=True
    )
    assert np.array_equal(frames, label.transpose(2, 1, 0))
