"""The rest of the datastore contract: info updates, deletes, listings, sessions expiry, logs, CORS."""

from __future__ import annotations

import json
import time
from pathlib import Path

import requests

from server.database import Database
from server.sessions import SessionStore
from tests.conftest import NO_WORKER, Server, free_port, write_label, write_volume


def put_label(url: str, image: str, path: Path, tag: str = "final") -> requests.Response:
    with open(path, "rb") as f:
        return requests.put(
            f"{url}/datastore/label", params={"image": image, "tag": tag}, files={"label": (path.name, f)}
        )


def test_info_updates_merge(server: Server, tmp_path: Path) -> None:
    u = server.url
    r = requests.put(
        f"{u}/datastore/image/info", params={"image": "study_0"}, data={"info": json.dumps({"site": "A"})}
    )
    assert r.status_code == 200 and r.json()["site"] == "A"
    r = requests.put(
        f"{u}/datastore/image/info", params={"image": "study_0"}, data={"info": json.dumps({"phase": 2})}
    )
    info = requests.get(f"{u}/datastore/image/info", params={"image": "study_0"}).json()
    assert info["site"] == "A" and info["phase"] == 2 and info["name"] == "study_0.nii.gz"
    assert Path(info["path"]) == server.studies / "study_0.nii.gz"

    assert put_label(u, "study_0", write_label(tmp_path / "l.nii.gz")).ok
    meta = {"segmentationMeta": {"status": "approved", "approvedBy": "dr-x"}}
    r = requests.put(
        f"{u}/datastore/updatelabelinfo",
        params={"label": "study_0", "tag": "final"},
        data={"params": json.dumps(meta)},
    )
    assert r.status_code == 200 and r.json() is None
    r = requests.put(
        f"{u}/datastore/label/info",
        params={"label": "study_0", "tag": "final"},
        data={"info": json.dumps({"x": 1})},
    )
    linfo = requests.get(f"{u}/datastore/label/info", params={"label": "study_0", "tag": "final"}).json()
    assert linfo["segmentationMeta"]["approvedBy"] == "dr-x" and linfo["x"] == 1
    server.restart()
    assert (
        requests.get(f"{server.url}/datastore/label/info", params={"label": "study_0", "tag": "final"}).json()
        == linfo
    )


def test_listings_and_deletes(server: Server, tmp_path: Path) -> None:
    u = server.url
    assert put_label(u, "study_1", write_label(tmp_path / "l.nii.gz")).ok
    train = requests.get(f"{u}/datastore/", params={"output": "train"}).json()
    assert train == [
        {
            "image": str(server.studies / "study_1.nii.gz"),
            "label": str(server.studies / "labels/final/study_1.nii.gz"),
        }
    ]

    first = requests.get(f"{u}/datastore/", params={"output": "page", "limit": 2}).json()
    assert first["total"] == 3 and [i["id"] for i in first["items"]] == ["study_0", "study_1"]
    assert first["items"][1]["labels"] == ["final"] and first["items"][1]["completed"] is True
    second = requests.get(
        f"{u}/datastore/", params={"output": "page", "limit": 2, "after": first["next"]}
    ).json()
    assert [i["id"] for i in second["items"]] == ["study_2"] and second["next"] is None
    todo = requests.get(f"{u}/datastore/", params={"output": "page", "completed": "false"}).json()
    assert todo["total"] == 2

    assert (
        requests.head(f"{u}/datastore/label", params={"image": "study_1", "tag": "final"}).status_code == 200
    )
    assert requests.delete(f"{u}/datastore/label", params={"id": "study_1", "tag": "final"}).json() == {}
    assert not (server.studies / "labels/final/study_1.nii.gz").exists()
    assert requests.get(f"{u}/datastore/").json()["completed"] == 0

    assert requests.delete(f"{u}/datastore/", params={"id": "study_2"}).json() == {}
    assert not (server.studies / "study_2.nii.gz").exists()
    assert requests.get(f"{u}/datastore/").json()["total"] == 2
    server.restart()  # the index agrees with the folder after a restart
    assert requests.get(f"{server.url}/datastore/").json() == {"total": 2, "completed": 0, "label_tags": {}}


def test_replacing_an_image_with_another_format(server: Server, tmp_path: Path) -> None:
    import nibabel as nib
    import nrrd

    src = write_volume(tmp_path / "v.nii.gz", seed=4)
    data = nib.load(src).get_fdata().astype("int16")
    nrrd_path = tmp_path / "study_0.nrrd"
    nrrd.write(str(nrrd_path), data)
    with open(nrrd_path, "rb") as f:
        assert requests.put(
            f"{server.url}/datastore/", params={"image": "study_0"}, files={"file": ("study_0.nrrd", f)}
        ).ok
    assert (server.studies / "study_0.nrrd").exists() and not (server.studies / "study_0.nii.gz").exists()
    r = requests.get(f"{server.url}/datastore/image", params={"image": "study_0"})
    assert r.headers["content-disposition"] == 'attachment; filename="study_0.nrrd"'
    assert r.content == nrrd_path.read_bytes()


def test_session_expiry_sweep(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 's.db'}")
    db.migrate()
    store = SessionStore(db, tmp_path / "sessions", default_expiry=3600, max_expiry=10)
    vol = write_volume(tmp_path / "v.nii.gz", size=8)
    with open(vol, "rb") as f:
        short = store.create([("v.nii.gz", f)], expiry=1, uncompress=False)
    with open(vol, "rb") as f:
        capped = store.create([("v.nii.gz", f)], expiry=999, uncompress=False)
    assert capped["session_info"]["expiry"] == 10  # capped by the maximum
    assert store.sweep(now=time.time() + 2) == 1
    assert not Path(short["session_info"]["path"]).exists()
    assert Path(capped["session_info"]["path"]).exists()


def test_logs_and_cors(server: Server) -> None:
    requests.get(f"{server.url}/info/")
    text = requests.get(f"{server.url}/logs/", params={"text": "true", "lines": 50})
    assert text.status_code == 200 and "labelloop" in text.text
    html = requests.get(f"{server.url}/logs/")
    assert html.headers["content-type"].startswith("text/html")
    pre = requests.options(
        f"{server.url}/datastore/label",
        headers={"Origin": "http://ohif.example", "Access-Control-Request-Method": "PUT"},
    )
    assert pre.status_code == 200
    # By default every origin may call, without credentials: no origin is reflected with them.
    assert pre.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in pre.headers


def test_cors_credentials_only_for_configured_origins(studies: Path) -> None:
    env = {**NO_WORKER, "LABELLOOP_CORS_ORIGINS": "http://ohif.example,https://viewer.example"}
    srv = Server(studies, free_port(), env=env).start()
    try:
        for origin, allowed in (("http://ohif.example", True), ("http://evil.example", False)):
            pre = requests.options(
                f"{srv.url}/datastore/label",
                headers={"Origin": origin, "Access-Control-Request-Method": "PUT"},
            )
            got = requests.get(f"{srv.url}/info/", headers={"Origin": origin})
            for resp in (pre, got):
                if allowed:
                    assert resp.headers["Access-Control-Allow-Origin"] == origin
                    assert resp.headers["Access-Control-Allow-Credentials"] == "true"
                else:
                    assert "Access-Control-Allow-Origin" not in resp.headers
                    assert "Access-Control-Allow-Credentials" not in resp.headers
    finally:
        srv.stop()
