"""Token auth through MONAI Label's /auth/ flow, driven by the real client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from monailabel.client import MONAILabelClient
from monailabel.client.client import MONAILabelClientException

from tests.conftest import Server, free_port, write_volume


@pytest.fixture
def secured(studies: Path) -> Iterator[Server]:
    srv = Server(studies, free_port(), env={"LABELLOOP_API_TOKEN": "s3cret-token"}, ready_path="/").start()
    try:
        yield srv
    finally:
        srv.stop()


def test_token_required_and_client_login(secured: Server, tmp_path: Path) -> None:
    u = secured.url
    assert requests.get(f"{u}/info/").status_code == 401
    assert requests.get(f"{u}/info/").headers["WWW-Authenticate"] == "Bearer"
    assert requests.get(f"{u}/info/", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert requests.get(f"{u}/datastore/image", params={"image": "study_0"}).status_code == 401

    client = MONAILabelClient(u, tmpdir=str(tmp_path))
    assert client.auth_enabled() is True
    with pytest.raises(MONAILabelClientException):
        client.auth_token("alice", "not-the-token")
    client.update_auth(client.auth_token("alice", "s3cret-token"))
    assert client.auth_valid_token()
    assert client.info()["datastore"]["total"] == 3
    image = write_volume(tmp_path / "x.nii.gz", seed=3)
    assert client.upload_image(str(image), image_id="x") == {"image": "x"}
    assert client.next_sample("first", {})["id"] == "study_0"


def test_auth_is_off_by_default(server: Server) -> None:
    assert requests.get(f"{server.url}/auth/").status_code == 404
    assert MONAILabelClient(server.url).auth_enabled() is False
