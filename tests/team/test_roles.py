"""The role matrix, walked over every route of the app: 401 without a login, 403 below the route's
role, neither at or above it; and no route is missing from the one table (server/team/roles.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import requests
from flask import Flask

from server.app import create_app
from server.settings import Settings
from server.team.roles import MATRIX, Role, required_role
from tests.conftest import SEG_APP
from tests.team.conftest import TEAM, Team

SKIP_METHODS = {"HEAD", "OPTIONS"}


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Flask:
    studies = tmp_path_factory.mktemp("studies")
    return create_app(Settings(app_dir=SEG_APP, studies=studies), background=False)


def routes(app: Flask) -> list[tuple[str, str, str]]:
    """``(endpoint, method, url)`` for every rule and method; path variables filled with a dummy."""
    out = []
    for rule in app.url_map.iter_rules():
        url = re.sub(r"<(?:[^:>]+:)?([^>]+)>", "nosuch", rule.rule)
        for method in sorted((rule.methods or set()) - SKIP_METHODS):
            out.append((rule.endpoint, method, url))
    return out


def test_every_route_is_in_the_matrix(app: Flask) -> None:
    missing = [
        f"{endpoint}:{method}"
        for endpoint, method, _ in routes(app)
        if endpoint not in MATRIX and f"{endpoint}:{method}" not in MATRIX
    ]
    assert not missing, f"routes without a role in server/team/roles.py: {missing}"
    known = {endpoint for endpoint, _, _ in routes(app)}
    stale = [key for key in MATRIX if key.split(":")[0] not in known]
    assert not stale, f"roles for routes that do not exist: {stale}"


def call(session: requests.Session, method: str, url: str) -> int:
    params = {"timeout": "1"} if url.endswith("/campaign/events") else None
    with session.request(method, url, params=params, timeout=60, stream=True) as reply:
        return reply.status_code


def test_walk_every_route_with_every_role(team: Team, app: Flask) -> None:
    roles = {Role[role]: name for name, role in TEAM.items()}
    for endpoint, method, path in routes(app):
        needed = required_role(endpoint, method)
        url = team.url + path
        anonymous = call(requests.Session(), method, url)
        if needed is None:
            assert anonymous != 403, (endpoint, method)  # open: login itself may answer 401
            continue
        assert anonymous == 401, (endpoint, method, anonymous)
        for role, name in roles.items():
            status = call(team.as_(name), method, url)
            if role < needed:
                assert status == 403, (endpoint, method, role.name, status)
            else:
                assert status not in (401, 403), (endpoint, method, role.name, status)


def test_annotators_see_their_own_labels_only(team: Team, tmp_path: Path) -> None:
    from tests.conftest import write_label

    ann, bob, rita = team.as_("ann"), team.as_("bob"), team.as_("rita")
    pick = ann.post(f"{team.url}/activelearning/random", json={"client_id": "user-xyz"}).json()
    label = write_label(tmp_path / "l.nii.gz", shape=(16, 16, 16), seed=1)
    with open(label, "rb") as f:
        saved = ann.put(f"{team.url}/datastore/label", params={"image": pick["id"]}, files={"label": f})
    assert saved.status_code == 200, saved.text
    q = {"label": pick["id"], "tag": "final"}
    assert ann.get(f"{team.url}/datastore/label", params=q).status_code == 200
    assert bob.get(f"{team.url}/datastore/label", params=q).status_code == 403
    assert bob.get(f"{team.url}/datastore/label/info", params=q).status_code == 403
    assert rita.get(f"{team.url}/datastore/label", params=q).status_code == 200
    # The lease and the label belong to the user, whatever client_id said.
    versions = rita.get(f"{team.url}/review/versions", params={"image": pick["id"]}).json()["versions"]
    assert [(v["author"], v["source"], v["current"]) for v in versions] == [("ann", "annotator", True)]
    # An annotator may not approve.
    meta = {"params": '{"segmentationMeta": {"status": "approved", "approvedBy": "ann"}}'}
    assert ann.put(f"{team.url}/datastore/updatelabelinfo", params=q, data=meta).status_code == 403
    put = ann.put(f"{team.url}/datastore/label/info", params=q, data={"info": meta["params"]})
    assert put.status_code == 403
