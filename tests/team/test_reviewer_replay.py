"""The MONAI Label Reviewer plugin for 3D Slicer, driven through its own REST class (``MonaiServerREST``
from the plugin sources the ``monailabel`` wheel ships; it needs only ``requests``): connect, the
datastore with ``output=all``, image and label downloads, approve, flag, a new version, delete a version.
With auth off, and with auth on, where the plugin sends no token: the reviewer writes the server URL
with their name and password (``http://name:password@host:port``), which ``requests`` sends as HTTP
Basic."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nrrd
import numpy as np
import pytest
import requests

from tests.conftest import NO_WORKER, Server, free_port, write_label
from tests.team.conftest import PASSWORD, add_users, make_studies

pytestmark = pytest.mark.filterwarnings("ignore:The .warn. function is deprecated:DeprecationWarning")
PLUGIN = Path(sys.prefix) / "monailabel" / "plugins" / "slicer" / "MONAILabelReviewer"


@pytest.fixture(scope="module")
def rest_class() -> Any:
    if not (PLUGIN / "MONAILabelReviewerLib" / "MonaiServerREST.py").is_file():
        pytest.fail(f"the monailabel wheel's Reviewer plugin is not at {PLUGIN}")
    sys.path.insert(0, str(PLUGIN))
    try:
        from MONAILabelReviewerLib.MonaiServerREST import MonaiServerREST  # the plugin's own class
    finally:
        sys.path.remove(str(PLUGIN))
    return MonaiServerREST


def meta(status: str, reviewer: str, level: str = "easy", comment: str = "") -> dict[str, Any]:
    """What the plugin's SegmentationMeta.getMeta() builds."""
    return {
        "segmentationMeta": {
            "status": status,
            "approvedBy": reviewer,
            "level": level,
            "comment": comment,
            "editTime": 1764633600,
        }
    }


@pytest.fixture(params=["auth-off", "auth-on"])
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Server, str, dict[str, str]]]:
    studies = make_studies(tmp_path / "studies", 4)
    for i in range(3):  # three labelled studies, as an annotation round leaves them
        write_label(studies / "labels" / "final" / f"case_{i:03d}.nii.gz", shape=(16, 16, 16), seed=i)
    headers: dict[str, str] = {}
    if request.param == "auth-on":
        add_users(studies, {"rita": "reviewer", "ada": "admin"})
    srv = Server(studies, free_port(), env=dict(NO_WORKER), ready_path="/").start()
    url = srv.url
    if request.param == "auth-on":
        url = f"http://rita:{PASSWORD}@127.0.0.1:{srv.port}"
        token = requests.post(f"{srv.url}/auth/token", data={"username": "ada", "password": PASSWORD}).json()
        headers = {"Authorization": f"Bearer {token['access_token']}"}
    try:
        yield srv, url, headers
    finally:
        srv.stop()


def test_reviewer_plugin_calls(
    rest_class: Any, setup: tuple[Server, str, dict[str, str]], tmp_path: Path
) -> None:
    srv, url, admin = setup
    auth_on = bool(admin)
    rest = rest_class(url)
    assert rest.checkServerConnection()

    if auth_on:  # the plugin as it is, with a plain URL: refused, and it says so by returning None
        assert rest_class(srv.url).requestDataStoreInfo() is None

    store = rest.requestDataStoreInfo()
    assert store is not None and set(store["objects"]) == {f"case_{i:03d}" for i in range(4)}
    assert "final" in store["objects"]["case_000"]["labels"]

    image = requests.get(rest.getDicomDownloadUri("case_000"), timeout=10)
    assert image.status_code == 200 and len(image.content) > 100
    label = rest.requestSegmentation("case_000", "")
    assert label is not None and label.status_code == 200

    # approve case_000 (the plugin writes approvedBy from its reviewer list: "someone")
    assert rest.updateLabelInfo("case_000", "final", meta("approved", "someone", "hard", "fine")) == 200
    # flag case_001
    assert rest.updateLabelInfo("case_001", "final", meta("flagged", "someone", "medium", "leak")) == 200
    # a new version of case_002, then its approval
    edited = tmp_path / "edit.nrrd"  # the plugin saves the segmentation node as NRRD
    nrrd.write(str(edited), (np.random.default_rng(42).random((16, 16, 16)) > 0.6).astype(np.uint8))
    assert rest.saveLabel("case_002", str(edited), "version_1", meta("", "someone")) == 200
    assert rest.updateLabelInfo("case_002", "version_1", meta("approved", "someone")) == 200

    cases = requests.get(f"{srv.url}/review/cases", headers=admin, timeout=10).json()
    assert cases["summary"]["approved"] == 2 and cases["summary"]["flagged"] == 1
    assert cases["summary"]["unlabelled"] == 1 and cases["total"] == 4
    by_id = {c["image"]: c for c in cases["cases"]}
    reviewer = by_id["case_000"]["reviews"]["final"]["reviewer"]
    assert reviewer == ("rita" if auth_on else "someone")  # with auth on: the logged-in reviewer
    assert by_id["case_000"]["reviews"]["final"]["level"] == "hard"

    # at most one approved label per study: approving final of case_002 withdraws version_1's approval
    assert rest.updateLabelInfo("case_002", "final", meta("approved", "someone")) == 200
    store = rest.requestDataStoreInfo()
    labels = store["objects"]["case_002"]["labels"]
    assert labels["final"]["info"]["segmentationMeta"]["status"] == "approved"
    assert labels["version_1"]["info"]["segmentationMeta"]["status"] == ""

    # delete the version; the history keeps it
    assert rest.deleteLabelByVersionTag("case_002", "version_1") == 200
    assert "version_1" not in rest.requestDataStoreInfo()["objects"]["case_002"]["labels"]
    history = requests.get(f"{srv.url}/review/versions", params={"image": "case_002"}, headers=admin).json()
    tags = [(v["tag"], v["version"], v["current"]) for v in history["versions"]]
    assert ("version_1", 1, False) in tags and ("final", 0, True) in tags  # 0: found on disk

    report = requests.get(f"{srv.url}/review/report", params={"fmt": "csv"}, headers=admin, timeout=10)
    assert report.headers["Content-Type"].startswith("text/csv")
    lines = report.text.strip().splitlines()
    assert lines[0].startswith("image,status") and len(lines) == 1 + 3
    rows = requests.get(f"{srv.url}/review/report", headers=admin, timeout=10).json()
    assert {r["image"]: r["status"] for r in rows} == {
        "case_000": "approved",
        "case_001": "flagged",
        "case_002": "approved",
    }
    assert json.dumps(rows)  # plain JSON
