"""A DICOMweb datastore against a real Orthanc: list, prefetch ahead of next-sample, fetch, infer,
and a final label that comes back to the PACS as a DICOM SEG (STOW-RS)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import highdicom as hd
import nibabel as nib
import numpy as np
import pytest
import requests
from dicomweb_client import DICOMwebClient

from server.dicom import synth
from tests.dicom.conftest import Labelloop, Orthanc, dcmtk, require, wait_for

pytestmark = pytest.mark.dicom


def to_pacs(pacs: Orthanc, series: synth.SyntheticSeries) -> None:
    result = dcmtk("storescu", "-aec", pacs.aet, "127.0.0.1", str(pacs.dicom_port), *map(str, series.files))
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def studies(orthanc: Orthanc, tmp_path_factory: pytest.TempPathFactory) -> list[synth.SyntheticSeries]:
    require("storescu")
    folder = tmp_path_factory.mktemp("pacs-series")
    made = [synth.ct_series(folder / f"s{i}", 10, patient_id=f"PACS-{i}") for i in range(2)]
    for series in made:
        to_pacs(orthanc, series)
    return made


@pytest.fixture(scope="module")
def server(
    orthanc: Orthanc, studies: list[synth.SyntheticSeries], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Labelloop]:
    work = tmp_path_factory.mktemp("dicomweb")
    # --studies with a URL: MONAI Label's form; the volumes are cached under --data-dir.
    srv = Labelloop(
        work,
        ["--studies", orthanc.dicomweb, "--data-dir", str(work / "data")],
        env={"LABELLOOP_DICOMWEB_PREFETCH": "1"},  # keep one series ready ahead
    ).start()
    try:
        yield srv
    finally:
        srv.stop()


def states(srv: Labelloop) -> dict[str, str]:
    items = srv.get("/dicom/series", params={"source": "dicomweb"}).json()["items"]
    return {i["SeriesInstanceUID"]: i["state"] for i in items}


def next_sample(srv: Labelloop, client: str) -> tuple[dict, float]:
    t0 = time.perf_counter()
    r = requests.post(srv.url + "/activelearning/random", json={"client_id": client}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json(), time.perf_counter() - t0


def test_list_prefetch_fetch_and_next_sample(
    server: Labelloop, orthanc: Orthanc, studies: list[synth.SyntheticSeries], tmp_path: Path
) -> None:
    uids = {s.series_uid for s in studies}
    listed = wait_for(
        lambda: states(server) if set(states(server)) == uids else None, 20, what="QIDO listing"
    )
    assert set(listed) == uids
    # Prefetch keeps one series ready: one is converted, the other stays remote.
    wait_for(lambda: "ready" in states(server).values(), 30, what="a prefetched series")
    time.sleep(1.5)
    now = states(server)
    assert sorted(now.values()) == ["ready", "remote"], now
    ready = next(u for u, s in now.items() if s == "ready")
    remote = next(u for u, s in now.items() if s == "remote")
    assert server.get("/datastore/image", params={"image": remote}).status_code == 404

    # An explicit fetch puts a series at the head of the queue (202: the download runs in the background).
    r = requests.post(server.url + f"/dicom/series/{remote}/fetch", timeout=10)
    assert r.status_code == 202
    server.wait_series(remote)

    # A series added to the PACS later shows up after a QIDO refresh; it is not fetched while two
    # never-served series are ready.
    late = synth.ct_series(tmp_path / "late", 6, patient_id="PACS-late")
    to_pacs(orthanc, late)
    assert requests.post(server.url + "/dicom/sync", timeout=10).status_code == 202
    wait_for(lambda: states(server).get(late.series_uid) == "remote", 20, what="the late series listed")

    # Next-sample answers from what is already converted, with the DICOM keys OHIF/Slicer read.
    served = []
    for client in ("ann-1", "ann-2"):
        pick, seconds = next_sample(server, client)
        assert pick["id"] in {ready, remote}
        assert seconds < 2.0, f"next-sample took {seconds:.2f}s"
        assert Path(pick["path"]).is_file()
        assert pick["SeriesInstanceUID"] == pick["id"]
        assert pick["RetrieveURL"].endswith(f"/series/{pick['id']}")
        for key in ("PatientID", "StudyInstanceUID", "Modality", "StudyDate", "StudyTime"):
            assert pick[key], key
        served.append(pick["id"])
    assert sorted(served) == sorted([ready, remote])
    # Both ready series are now leased: the prefetcher brings the late one in, ahead of the next ask.
    server.wait_series(late.series_uid)
    pick, _ = next_sample(server, "ann-3")
    assert pick["id"] == late.series_uid
    shape = server.get("/datastore/image/info", params={"image": late.series_uid}).json()["shape"]
    assert shape == [128, 128, 6]


def test_infer_on_a_dicomweb_series(server: Labelloop, studies: list[synth.SyntheticSeries]) -> None:
    uid = studies[0].series_uid
    server.wait_series(uid)
    r = requests.post(
        server.url + "/infer/segmentation",
        params={"image": uid, "output": "json"},
        data={"params": "{}"},
        timeout=300,
    )
    if r.status_code == 404 and "requested URL was not found" in r.text:
        pytest.skip("no POST /infer/<model> route in this build (inference is developed separately)")
    assert r.status_code == 200, r.text
    assert isinstance(r.json(), dict)


def box_label(
    server: Labelloop, series: synth.SyntheticSeries, box: tuple[slice, ...]
) -> tuple[Any, np.ndarray]:
    """The series as a ready image, and a label of it: one box of label 1."""
    img = server.ready_image(series.series_uid)
    label = np.zeros(img.shape, np.uint8)
    label[box] = 1
    return img, label


def test_final_label_becomes_a_seg_in_the_pacs(
    server: Labelloop, orthanc: Orthanc, studies: list[synth.SyntheticSeries], tmp_path: Path
) -> None:
    series = studies[1]
    img, label = box_label(server, series, np.s_[40:70, 50:80, 2:7])
    path = tmp_path / "label.nii.gz"
    nib.save(nib.Nifti1Image(label, img.affine), str(path))
    with open(path, "rb") as f:
        r = requests.put(
            server.url + "/datastore/label",
            params={"image": series.series_uid},
            files={"label": ("label.nii.gz", f)},
            data={"params": json.dumps({"label_info": [{"name": "lesion", "idx": 1}], "client_id": "ann-1"})},
            timeout=30,
        )
    assert r.status_code == 200, r.text
    job = server.wait_export(series.series_uid)
    assert job["status"] == "DONE", job
    assert job["destinations"] == [f"stow:{orthanc.dicomweb}"]

    pacs = DICOMwebClient(url=orthanc.dicomweb)
    segs = pacs.search_for_series(series.study_uid, search_filters={"Modality": "SEG"})
    assert [s["0020000E"]["Value"][0] for s in segs] == [job["seg_series_uid"]]
    seg = hd.seg.Segmentation.from_dataset(
        pacs.retrieve_instance(series.study_uid, job["seg_series_uid"], job["seg_sop_uid"])
    )
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series.series_uid
    assert seg.get_segment_description(1).segment_label == "lesion"
    frames = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=series.sop_uids, combine_segments=True, assert_missing_frames_are_empty=True
    )
    assert np.array_equal(frames, label.transpose(2, 1, 0))
    # The SEG in the PACS marks the series as labelled for the next QIDO refresh.
    assert requests.post(server.url + "/dicom/sync", timeout=10).status_code == 202
    wait_for(
        lambda: (
            server.get(f"/dicom/series/{job['seg_series_uid']}").json().get("labels_series")
            == series.series_uid
        ),
        20,
        what="the SEG's reference cached",
    )


def test_viewers_reach_the_pacs_through_the_proxy(
    server: Labelloop, studies: list[synth.SyntheticSeries]
) -> None:
    """OHIF's QIDO and WADO roots are ``/proxy/dicom/qido`` and ``/proxy/dicom/wado``: dicomweb-client
    (as a viewer would) searches and retrieves through them, and gets what the PACS holds."""
    series = studies[0]
    qido = DICOMwebClient(url=server.url + "/proxy/dicom/qido")
    found = qido.search_for_series(search_filters={"PatientID": "PACS-0"})
    assert [s["0020000E"]["Value"][0] for s in found] == [series.series_uid]
    wado = DICOMwebClient(url=server.url + "/proxy/dicom/wado")
    metadata = wado.retrieve_series_metadata(series.study_uid, series.series_uid)
    assert sorted(m["00080018"]["Value"][0] for m in metadata) == sorted(series.sop_uids)
    ds = wado.retrieve_instance(series.study_uid, series.series_uid, series.sop_uids[0])
    assert ds.SOPInstanceUID == series.sop_uids[0] and ds.pixel_array.shape == (128, 128)
    r = requests.get(server.url + "/proxy/dicom/qido/studies/%2e%2e/%2e%2e/system", timeout=10)
    assert r.status_code == 400 and "detail" in r.json()  # nothing outside the DICOMweb root


def test_a_nrrd_final_label_becomes_a_seg_in_the_pacs(
    server: Labelloop, orthanc: Orthanc, studies: list[synth.SyntheticSeries], tmp_path: Path
) -> None:
    """Slicer's NRRD setting (and the Reviewer): the label is NRRD in LPS; the SEG matches voxel for voxel."""
    import nrrd

    series = studies[0]
    img, label = box_label(server, series, np.s_[30:60, 40:90, 1:6])
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ img.affine
    path = tmp_path / "label.seg.nrrd"
    header = {
        "space": "left-posterior-superior",
        "space directions": lps[:3, :3].T,
        "space origin": lps[:3, 3],
        "encoding": "gzip",
    }
    nrrd.write(str(path), label, header)
    with open(path, "rb") as f:
        r = requests.put(
            server.url + "/datastore/label",
            params={"image": series.series_uid},
            files={"label": ("label.seg.nrrd", f)},
            timeout=30,
        )
    assert r.status_code == 200, r.text
    job = server.wait_export(series.series_uid)
    assert job["status"] == "DONE", job
    pacs = DICOMwebClient(url=orthanc.dicomweb)
    seg = hd.seg.Segmentation.from_dataset(
        pacs.retrieve_instance(series.study_uid, job["seg_series_uid"], job["seg_sop_uid"])
    )
    frames = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=series.sop_uids, combine_segments=True, assert_missing_frames_are_empty=True
    )
    assert np.array_equal(frames, label.transpose(2, 1, 0))


def test_the_server_starts_while_the_pacs_is_down_and_reconnects(
    tmp_path: Path, studies: list[synth.SyntheticSeries]
) -> None:
    from tests.conftest import free_port
    from tests.dicom.conftest import running_orthanc

    require("storescu")
    pacs = Orthanc(free_port(), free_port())
    srv = Labelloop(
        tmp_path,
        ["--studies", pacs.dicomweb, "--data-dir", str(tmp_path / "data")],
        env={"LABELLOOP_DICOMWEB_SYNC_SECONDS": "2"},
    )
    t0 = time.monotonic()
    srv.start(timeout=60)  # nothing answers at the PACS's URL
    try:
        started = time.monotonic() - t0
        ready = srv.get("/health/ready")
        assert ready.status_code == 200  # the annotators' routes work: the database answers
        assert ready.json()["checks"]["dicomweb"].startswith("down"), ready.json()
        assert srv.get("/datastore/", params={"output": "stats"}).status_code == 200
        with running_orthanc(tmp_path / "pacs", pacs):
            to_pacs(pacs, studies[0])
            wait_for(
                lambda: srv.get("/health/ready").json()["checks"]["dicomweb"] == "up", 30, what="reconnected"
            )
            wait_for(lambda: series_known(srv, studies[0].series_uid), 30, what="the PACS's series listed")
        assert started < 20, started  # no half-minute of retries at start
        print(f"\nstarted in {started:.1f} s with the PACS down")
    finally:
        srv.stop()


def series_known(srv: Labelloop, uid: str) -> bool:
    return srv.get(f"/dicom/series/{uid}").status_code == 200
