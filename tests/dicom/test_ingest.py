"""The ingest path without external tools: statuses, atomicity, idempotence, restart, SEG building."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pytest
from flask import Flask
from pydicom import dcmread
from sqlalchemy import func, select, update
from sqlalchemy.exc import OperationalError

from server.api.common import services_of
from server.app import create_app
from server.dicom import synth
from server.dicom.export import SKIPPED, Node, build_seg
from server.dicom.incoming import IncomingStore, IngestError, InstanceMeta, Status, decode
from server.dicom.listener import AllowEntry, parse_allowlist
from server.dicom.models import DicomExport, DicomInstance, DicomSeries, ExportState, SeriesState
from server.dicom.service import DicomService
from server.errors import ConfigError
from server.settings import Settings
from tests.conftest import SEG_APP


@pytest.fixture
def app(tmp_path: Path, db_url: str) -> Iterator[Flask]:
    (tmp_path / "studies").mkdir()
    settings = Settings(
        app_dir=SEG_APP,
        studies=tmp_path / "studies",
        db_url=db_url,
        dicom_port=1,
        dicom_series_idle_seconds=0.2,
    )
    app = create_app(settings, background=False)  # threads not started: the tests step the workers
    converter = service(app).converter
    assert converter is not None
    converter.isolate = False  # convert in this process (the server tests cover the child process)
    converter.max_defer_seconds = 0.0  # no yielding to ingest unless a test asks for it
    yield app
    service(app).stop()


def service(app: Flask) -> DicomService:
    found = services_of(app).dicom
    assert found is not None
    return found


def put_series(store: IncomingStore, files: list[Path]) -> None:
    for path in files:
        raw = path.read_bytes()
        store.put(raw, InstanceMeta.from_dataset(decode(raw)))


def instance_rows(app: Flask) -> int:
    with services_of(app).db.sessions() as s:
        return int(s.scalar(select(func.count()).select_from(DicomInstance)) or 0)


def test_decode_statuses(tmp_path: Path) -> None:
    series = synth.ct_series(tmp_path / "ct", 1)
    for keep in (10, 30000):  # garbled header / pixel data cut short
        raw = synth.corrupt_copy(series.files[0], tmp_path / f"bad{keep}.dcm", keep).read_bytes()
        with pytest.raises(IngestError) as err:
            InstanceMeta.from_dataset(decode(raw))
        assert err.value.status == Status.CANNOT_DECODE == 0xC000
    raw = synth.without(series.files[0], tmp_path / "nouid.dcm", "StudyInstanceUID").read_bytes()
    with pytest.raises(IngestError) as err:
        InstanceMeta.from_dataset(decode(raw))
    assert err.value.status == Status.MISSING_UIDS == 0xC001


def test_put_is_atomic_and_idempotent(app: Flask, tmp_path: Path) -> None:
    store = service(app).incoming
    assert store is not None
    series = synth.ct_series(tmp_path / "ct", 3)
    raw = series.files[0].read_bytes()
    meta = InstanceMeta.from_dataset(decode(raw))
    assert store.put(raw, meta) is True
    assert store.put(raw, meta) is False  # a duplicate: success, nothing changes
    final = store.incoming / series.study_uid / series.series_uid / f"{meta.sop_uid}.dcm"
    assert final.read_bytes() == raw
    assert [p.name for p in final.parent.iterdir()] == [final.name]  # no temporaries left
    with services_of(app).db.sessions() as s:
        row = s.get(DicomSeries, series.series_uid)
        assert row is not None and row.n_instances == 1 and row.state == SeriesState.RECEIVING
        assert row.patient_id == "LL-SYNTH-1" and row.modality == "CT"


def test_disk_failure_is_out_of_resources_and_leaves_nothing(app: Flask, tmp_path: Path) -> None:
    store = service(app).incoming
    assert store is not None
    series = synth.ct_series(tmp_path / "ct", 1)
    (store.incoming / series.study_uid).write_bytes(b"")  # a file where the study folder must go
    raw = series.files[0].read_bytes()
    with pytest.raises(IngestError) as err:
        store.put(raw, InstanceMeta.from_dataset(decode(raw)))
    assert err.value.status == Status.OUT_OF_RESOURCES == 0xA700
    assert instance_rows(app) == 0


def test_database_failure_is_out_of_resources_and_removes_the_file(
    app: Flask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = service(app).incoming
    assert store is not None
    series = synth.ct_series(tmp_path / "ct", 1)
    raw = series.files[0].read_bytes()

    def fail(*_args: object) -> bool:
        raise OperationalError("INSERT", {}, Exception("disk I/O error"))

    monkeypatch.setattr(store, "_index", fail)
    with pytest.raises(IngestError) as err:
        store.put(raw, InstanceMeta.from_dataset(decode(raw)))
    assert err.value.status == Status.OUT_OF_RESOURCES
    assert not list(store.incoming.rglob("*.dcm")) and not list(store.incoming.rglob(".tmp-*"))
    assert instance_rows(app) == 0


def test_allowlist_and_export_node_parsing() -> None:
    entries = parse_allowlist("STORESCU@127.0.0.1, OTHER ,@10.0.0.5")
    assert entries == [
        AllowEntry("STORESCU", "127.0.0.1"),
        AllowEntry("OTHER", None),
        AllowEntry(None, "10.0.0.5"),
    ]
    assert entries[0].matches("STORESCU", "127.0.0.1") and not entries[0].matches("STORESCU", "10.0.0.9")
    assert entries[1].matches("OTHER", "192.168.1.1") and not entries[1].matches("NOPE", "192.168.1.1")
    assert entries[2].matches("ANY", "10.0.0.5")
    for bad in ("AET@", "WAY_TOO_LONG_AE_TITLE", "BACK\\SLASH"):
        with pytest.raises(ConfigError):
            parse_allowlist(bad)
    assert Node.parse("ORTHANC@127.0.0.1:4242") == Node("ORTHANC", "127.0.0.1", 4242)
    with pytest.raises(ConfigError):
        Node.parse("127.0.0.1:4242")


def test_idle_series_converts_and_a_restart_requeues_an_interrupted_conversion(
    app: Flask, tmp_path: Path
) -> None:
    svc = service(app)
    assert svc.incoming is not None and svc.converter is not None
    series = synth.ct_series(tmp_path / "ct", 4)
    put_series(svc.incoming, series.files)
    assert svc.converter.step() is False  # still receiving: not idle yet
    time.sleep(0.3)
    # Simulate a crash in the middle of a conversion: the row says CONVERTING, no image exists.
    svc.converter.close_idle(time.time())
    with services_of(app).db.session() as s:
        s.execute(update(DicomSeries).values(state=SeriesState.CONVERTING))
    assert svc.converter.step() is False  # a CONVERTING series is not picked twice
    svc.converter.on_start()  # what a restarted server does first
    assert svc.converter.run_until_idle() == 1
    info = services_of(app).datastore.image_info(series.series_uid)
    assert info["shape"] == [128, 128, 4] and info["StudyInstanceUID"] == series.study_uid


def test_an_instance_arriving_during_conversion_reopens_the_series(app: Flask, tmp_path: Path) -> None:
    svc = service(app)
    assert svc.incoming is not None and svc.converter is not None
    series = synth.ct_series(tmp_path / "ct", 3)
    put_series(svc.incoming, series.files[:2])
    with services_of(app).db.session() as s:
        s.execute(update(DicomSeries).values(state=SeriesState.CONVERTING))
    put_series(svc.incoming, series.files[2:])  # arrives while the converter works
    assert svc.converter.convert(series.series_uid) == SeriesState.RECEIVING
    time.sleep(0.3)
    assert svc.converter.run_until_idle() == 1
    assert services_of(app).datastore.image_info(series.series_uid)["shape"] == [128, 128, 3]


def test_seg_from_a_label_and_empty_labels_are_skipped(app: Flask, tmp_path: Path) -> None:
    svc = service(app)
    assert svc.incoming is not None and svc.converter is not None and svc.exporter is not None
    series = synth.ct_series(tmp_path / "ct", 5, orientation=(0.866025, 0.5, 0, -0.5, 0.866025, 0))
    put_series(svc.incoming, series.files)
    time.sleep(0.3)
    svc.converter.run_until_idle()
    ds = services_of(app).datastore
    image = nib.load(str(ds.get_image(series.series_uid).path))
    label = np.zeros(image.shape, np.uint8)
    label[10:20, 30:50, 1:3] = 3  # a sparse value: renumbered to segment 1
    seg = build_seg(label, image.affine, series.files, {3: "vessel"})
    assert seg is not None
    buf = io.BytesIO()
    seg.save_as(buf)
    back = hd.seg.Segmentation.from_dataset(dcmread(io.BytesIO(buf.getvalue())))
    assert back.get_segment_description(1).segment_label == "vessel"
    frames = back.get_pixels_by_source_instance(
        series.sop_uids, combine_segments=True, assert_missing_frames_are_empty=True
    )
    assert np.array_equal(frames, (label > 0).astype(np.uint8).transpose(2, 1, 0))

    # An empty final label queues an export that ends SKIPPED (not ERROR, not DONE).
    tmp = ds.temp_for_label("final", ".nii.gz")
    nib.save(nib.Nifti1Image(np.zeros(image.shape, np.uint8), image.affine), str(tmp))
    ds.save_label(series.series_uid, "final", tmp, ".nii.gz", {})
    svc.exporter.on_start()
    assert svc.exporter.run_until_idle() == 1
    with services_of(app).db.sessions() as s:
        job = s.scalars(select(DicomExport)).one()
        assert job.status == SKIPPED and job.status != ExportState.DONE


def test_a_multiframe_instance_converts_like_its_frames_and_gets_a_seg(app: Flask, tmp_path: Path) -> None:
    """Enhanced CT (one instance, per-frame functional groups) becomes the same volume as the single-frame
    series it was made from, and a label on it comes back as a SEG referencing its frames."""
    svc = service(app)
    assert svc.incoming is not None and svc.converter is not None
    frames = synth.ct_series(
        tmp_path / "ct", 6, slice_spacing=3.0, orientation=(0.866025, 0.5, 0, -0.5, 0.866025, 0)
    )
    multi = synth.enhanced(frames, tmp_path / "enhanced")
    put_series(svc.incoming, frames.files + multi.files)
    time.sleep(0.3)
    svc.converter.run_until_idle()
    ds = services_of(app).datastore
    single = nib.load(str(ds.get_image(frames.series_uid).path))
    image = nib.load(str(ds.get_image(multi.series_uid).path))
    assert image.shape == single.shape == (128, 128, 6)
    assert np.allclose(image.affine, single.affine, atol=1e-4)
    assert np.array_equal(np.asanyarray(image.dataobj), np.asanyarray(single.dataobj))
    assert list(np.asanyarray(image.dataobj)[0, 0, :]) == [k - 1024 for k in range(6)]  # slice order

    label = np.zeros(image.shape, np.uint8)
    label[10:20, 30:50, 1:3] = 2
    seg = build_seg(label, image.affine, multi.files, {2: "vessel"})
    assert seg is not None
    buf = io.BytesIO()
    seg.save_as(buf)
    back = hd.seg.Segmentation.from_dataset(dcmread(io.BytesIO(buf.getvalue())))
    got = back.get_pixels_by_source_frame(
        multi.sop_uids[0], list(range(1, 7)), combine_segments=True, assert_missing_frames_are_empty=True
    )
    # highdicom's converter may store the frames in any order: each goes to the slice at its position
    # (the series starts at z = -75.7, 3 mm apart, along a normal that is +z).
    source = dcmread(str(multi.files[0]), stop_before_pixels=True)
    z = [
        float(f.PlanePositionSequence[0].ImagePositionPatient[2])
        for f in source.PerFrameFunctionalGroupsSequence
    ]
    slice_of_frame = [round((v + 75.699997) / 3.0) for v in z]
    assert sorted(slice_of_frame) == list(range(6))
    expected = (label > 0).astype(np.uint8).transpose(2, 1, 0)[slice_of_frame]
    assert got.sum() > 0 and np.array_equal(got, expected)


def test_conversion_yields_to_a_running_ingest(app: Flask, tmp_path: Path) -> None:
    svc = service(app)
    assert svc.incoming is not None and svc.converter is not None
    svc.converter.max_defer_seconds = 30.0
    first = synth.ct_series(tmp_path / "a", 2)
    put_series(svc.incoming, first.files)
    time.sleep(0.3)  # the series is idle, but instances of other series keep coming
    put_series(svc.incoming, synth.ct_series(tmp_path / "b", 1).files)
    assert svc.converter.step() is False
    with services_of(app).db.sessions() as s:
        row = s.get(DicomSeries, first.series_uid)
        assert row is not None and row.state == SeriesState.PENDING
    svc.incoming.last_receive -= 2.0  # a quiet second
    assert svc.converter.step() is True
    assert services_of(app).datastore.image_info(first.series_uid)["shape"] == [128, 128, 2]


def test_batched_rows_commit_together_and_a_database_failure_is_retried(
    app: Flask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SCP's path: the file is safe when ``put`` returns, the row follows in a group commit."""
    store = service(app).incoming
    assert store is not None and store.batcher is not None
    batcher = store.batcher
    batcher.poll_seconds = 0.05  # retry quickly
    series = synth.ct_series(tmp_path / "ct", 6)
    real_index = store._index
    transactions: list[int] = []
    broken = [True]

    def index(conn: object, rows: list[object]) -> int:
        if broken[0]:
            raise OperationalError("INSERT", {}, Exception("database is locked"))
        transactions.append(len(rows))
        return real_index(conn, rows)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "_index", index)
    batcher.start()
    try:
        for path in series.files + series.files[:2]:  # two duplicates among them
            raw = path.read_bytes()
            store.put(raw, InstanceMeta.from_dataset(decode(raw)), batched=True)
        assert len(list(store.incoming.rglob("*.dcm"))) == 6  # every file safe before any row
        assert batcher.flush(0.5) is False and batcher.failures >= 1 and instance_rows(app) == 0
        broken[0] = False  # the database is back: nothing received was lost
        assert batcher.flush(10)
    finally:
        batcher.stop()
    assert instance_rows(app) == 6 and batcher.backlog == 0
    assert sum(transactions) == 8 and len(transactions) < 8  # several rows per transaction
    with services_of(app).db.sessions() as s:
        row = s.get(DicomSeries, series.series_uid)
        assert row is not None and row.n_instances == 6 and row.state == SeriesState.RECEIVING


def test_the_api_sees_an_acknowledged_instance_before_its_group_commit(app: Flask, tmp_path: Path) -> None:
    """A sender that got Success asks ``/dicom/series/<uid>`` at once: the answer waits for the rows
    the listener has acknowledged, not for the batcher's next turn."""
    store = service(app).incoming
    assert store is not None and store.batcher is not None
    batcher = store.batcher
    batcher.linger_seconds = 3.0  # a row waits this long for company before its transaction
    series = synth.ct_series(tmp_path / "ct", 2)
    batcher.start()
    try:
        for path in series.files:
            raw = path.read_bytes()
            store.put(raw, InstanceMeta.from_dataset(decode(raw)), batched=True)
        assert instance_rows(app) == 0 and batcher.backlog == 2  # acknowledged, not committed yet
        listed = service(app).list_series(None, None, None, 10)
        assert [item["SeriesInstanceUID"] for item in listed["items"]] == [series.series_uid]
        assert service(app).series(series.series_uid)["instances"] == 2
    finally:
        batcher.stop()


def test_recover_indexes_safe_files_without_rows_and_removes_temporaries(app: Flask, tmp_path: Path) -> None:
    """A crash after the C-STORE response but before the group commit: the file is there, its row is
    not. The next start indexes it once (and counts it once); an unfinished temporary goes."""
    svc = service(app)
    assert svc.incoming is not None and svc.converter is not None
    store = svc.incoming
    series = synth.ct_series(tmp_path / "ct", 4)
    put_series(store, series.files[:1])  # indexed normally
    folder = store.incoming / series.study_uid / series.series_uid
    for path in series.files[1:]:  # acknowledged, row lost
        meta = InstanceMeta.from_dataset(decode(path.read_bytes()))
        (folder / f"{meta.sop_uid}.dcm").write_bytes(path.read_bytes())
    (folder / ".tmp-deadbeef.dcm").write_bytes(b"half a file")
    (folder / "garbage.dcm").write_bytes(b"not dicom")  # left, logged, never indexed
    assert instance_rows(app) == 1
    assert store.recover() == (1, 3)
    assert store.recover() == (0, 0)  # idempotent
    assert instance_rows(app) == 4 and not list(folder.glob(".tmp-*"))
    with services_of(app).db.sessions() as s:
        row = s.get(DicomSeries, series.series_uid)
        assert row is not None and row.n_instances == 4
    time.sleep(0.3)
    svc.converter.close_idle(time.time())
    assert svc.converter.run_until_idle() == 1
    assert services_of(app).datastore.image_info(series.series_uid)["shape"] == [128, 128, 4]


def test_an_unexpected_conversion_failure_ends_the_series_in_error(
    app: Flask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug or a library error outside the handled set: the series ends ERROR with the reason, not
    CONVERTING for ever (nor converted again at every restart)."""
    svc = service(app)
    series = synth.ct_series(tmp_path / "ct", 3)
    put_series(svc.incoming, series.files)
    time.sleep(0.3)

    def broken(paths: list[str], tmp: Path) -> None:
        raise KeyError("(0028,0030) missing in a way nobody planned for")

    monkeypatch.setattr(svc.converter, "_convert_file", broken)
    assert svc.converter.run_until_idle() == 1
    row = svc.series(series.series_uid)
    assert row["state"] == SeriesState.ERROR and "KeyError" in row["error"], row
