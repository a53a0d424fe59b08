"""``labelloop user``: add (a generated password printed once), list, disable, enable, reset; and what
each does to logging in."""

from __future__ import annotations

from pathlib import Path

import requests
from monailabel.client import MONAILabelClient
from monailabel.client.client import MONAILabelClientException

from tests.conftest import NO_WORKER, Server, free_port
from tests.team.conftest import cli, make_studies


def test_user_lifecycle_and_login(tmp_path: Path) -> None:
    studies = make_studies(tmp_path / "studies", 2)
    added = cli("user", "add", "alice", "--role", "annotator", "--studies", str(studies))
    assert added.returncode == 0, added.stderr
    generated = added.stdout.strip().removeprefix("password: ")
    assert len(generated) >= 12 and "password" not in generated
    assert cli("user", "add", "alice", "--role", "annotator", "--studies", str(studies)).returncode == 2
    bad_role = cli("user", "add", "eve", "--role", "owner", "--studies", str(studies))
    assert bad_role.returncode == 2 and "unknown role" in bad_role.stderr
    listed = cli("user", "list", "--studies", str(studies))
    assert "alice" in listed.stdout and "annotator" in listed.stdout

    srv = Server(studies, free_port(), env=dict(NO_WORKER), ready_path="/").start()
    try:
        u = srv.url
        assert requests.get(f"{u}/info/", timeout=10).status_code == 401  # a user exists: auth is on
        client = MONAILabelClient(u, tmpdir=str(tmp_path))
        assert client.auth_enabled()
        try:
            client.auth_token("alice", "wrong-password")
            raise AssertionError("a wrong password logged in")
        except MONAILabelClientException as exc:
            assert exc.status_code == 401
        client.update_auth(client.auth_token("alice", generated))
        assert client.auth_valid_token()
        assert client.info()["datastore"]["total"] == 2
        valid = requests.get(f"{u}/auth/token/valid", headers=client._headers, timeout=10)
        assert valid.json()["username"] == "alice" and valid.json()["roles"] == ["annotator"]

        assert cli("user", "disable", "alice", "--studies", str(studies)).returncode == 0
        assert requests.get(f"{u}/info/", headers=client._headers, timeout=10).status_code == 401
        assert (
            requests.post(f"{u}/auth/token", data={"username": "alice", "password": generated}).status_code
            == 401
        )
        assert cli("user", "enable", "alice", "--studies", str(studies)).returncode == 0
        reset = cli("user", "reset", "alice", "--role", "reviewer", "--studies", str(studies))
        new_password = reset.stdout.strip().removeprefix("password: ")
        assert new_password != generated
        assert (
            requests.post(f"{u}/auth/token", data={"username": "alice", "password": generated}).status_code
            == 401
        )
        token = requests.post(f"{u}/auth/token", data={"username": "alice", "password": new_password}).json()
        me = requests.get(
            f"{u}/auth/token/valid", headers={"Authorization": f"Bearer {token['access_token']}"}
        )
        assert me.json()["roles"] == ["reviewer"]
        # The token is stored hashed: the database never holds it.
        db = (studies / ".labelloop" / "labelloop.db").read_bytes()
        assert token["access_token"].encode() not in db and new_password.encode() not in db
    finally:
        srv.stop()
