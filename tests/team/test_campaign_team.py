"""A campaign over REST with three annotators and a reviewer, a share of the studies read twice:
leases by person, independent readings, agreement checked against values computed here, adjudication,
approvals in the review summary, per-annotator progress, and a history that survives a restart."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import requests
from monailabel.client import MONAILabelClient

from server.team.review import readings_needed
from tests.conftest import AFFINE, DB_PARAMS, NO_WORKER, Server, free_port, fresh_database
from tests.team.conftest import add_users, login, make_studies

ANNOTATORS = ("ann", "bob", "cat")
OVERLAP = 0.25
SIZE = 16


def reading(study: str, person: str) -> np.ndarray:
    """An annotator's label of a study: a ball whose centre and radius differ a little per person."""
    rng = np.random.default_rng(zlib.crc32(f"{study}/{person}".encode()))
    centre = 8 + rng.integers(-2, 3, size=3)
    radius = 4 + rng.integers(0, 3)
    grid = np.indices((SIZE, SIZE, SIZE)).transpose(1, 2, 3, 0)
    return (np.linalg.norm(grid - centre, axis=-1) <= radius).astype(np.uint8)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float(np.logical_and(a, b).sum()) / float(a.sum() + b.sum())


def save(session: requests.Session, url: str, study: str, data: np.ndarray, tmp: Path) -> dict[str, object]:
    path = tmp / f"{study}.nii.gz"
    nib.save(nib.Nifti1Image(data, AFFINE), str(path))
    with open(path, "rb") as f:
        reply = session.put(f"{url}/datastore/label", params={"image": study}, files={"label": f}, timeout=30)
    assert reply.status_code == 200, reply.text
    return dict(reply.json())


@pytest.fixture(params=DB_PARAMS)
def db(request: pytest.FixtureRequest) -> Iterator[str]:
    yield from fresh_database(request.param, prefix="ll_team_")


def test_team_campaign(tmp_path: Path, db: str) -> None:
    studies = make_studies(tmp_path / "studies", 16, size=SIZE)
    add_users(studies, {**{a: "annotator" for a in ANNOTATORS}, "rita": "reviewer"}, db)
    args = ["--overlap", str(OVERLAP)] + (["--db", db] if db else [])
    srv = Server(studies, free_port(), args=args, env=dict(NO_WORKER), ready_path="/")
    srv.start()
    try:
        u = srv.url
        sessions = {name: requests.Session() for name in (*ANNOTATORS, "rita")}
        for name, session in sessions.items():
            session.headers.update(login(u, name))
        ids = sorted(p.name.removesuffix(".nii.gz") for p in studies.glob("*.nii.gz"))
        overlap = {i for i in ids if readings_needed(OVERLAP, i) == 2}
        assert overlap, "the fixed overlap share picked no study of this pool"

        labels: dict[tuple[str, str], np.ndarray] = {}
        saves = 0
        while True:
            held: dict[str, str] = {}
            for name in ANNOTATORS:  # everyone takes one (Slicer's default client_id), then all save
                pick = (
                    sessions[name].post(f"{u}/activelearning/random", json={"client_id": "user-xyz"}).json()
                )
                if not pick:
                    continue
                assert pick["id"] not in held.values(), "one study in two annotators' hands"
                assert (pick["id"], name) not in labels, "a study given twice to the same person"
                held[name] = pick["id"]
            if not held:
                break
            for name, study in held.items():
                labels[(study, name)] = reading(study, name)
                reply = save(sessions[name], u, study, labels[(study, name)], tmp_path)
                saves += 1
                assert reply["held"] == (study in overlap)  # a reading of the overlap: kept until adjudicated

        readers = {i: sorted(p for s, p in labels if s == i) for i in ids}
        assert all(len(readers[i]) == (2 if i in overlap else 1) for i in ids), readers

        rita = sessions["rita"]
        cases = rita.get(f"{u}/review/cases").json()
        assert cases["summary"]["adjudication"] == len(overlap)
        assert cases["summary"]["pending"] == len(ids) - len(overlap)
        for i in overlap:  # neither reading is the final label before adjudication
            assert rita.get(f"{u}/datastore/label", params={"label": i, "tag": "final"}).status_code == 404
            # ... and an annotator cannot open the other's reading
            first, second = readers[i]
            versions = rita.get(f"{u}/review/versions", params={"image": i}).json()["versions"]
            theirs = next(v["version"] for v in versions if v["author"] == second)
            q = {"image": i, "tag": "final", "version": theirs}
            assert sessions[first].get(f"{u}/review/version", params=q).status_code == 403
            assert sessions[second].get(f"{u}/review/version", params=q).status_code == 200

        agreement = rita.get(f"{u}/review/agreement").json()
        measured = {(r["image"], r["label"]): r for r in agreement["studies"]}
        assert {k[0] for k in measured} == overlap
        for i in overlap:
            a, b = readers[i]
            row = measured[(i, 1)]
            assert row["annotators"] == [a, b]
            assert abs(row["dice"] - dice(labels[(i, a)], labels[(i, b)])) < 1e-9
            assert row["surface_mm"] is not None and row["surface_mm"] >= 0

        progress = {r["annotator"]: r for r in rita.get(f"{u}/campaign/annotators").json()}
        for name in ANNOTATORS:
            assert progress[name]["labels"] == sum(p == name for _, p in labels), progress[name]
            assert progress[name]["role"] == "annotator"
            assert progress[name]["median_seconds_to_save"] is not None

        # Adjudicate: one pick, the rest a majority merge (with two readers: where both agree).
        ordered = sorted(overlap)
        picked = ordered[0]
        first_version = min(
            v["version"]
            for v in rita.get(f"{u}/review/versions", params={"image": picked}).json()["versions"]
            if v["author"] == readers[picked][0]
        )
        done = rita.post(f"{u}/review/adjudicate", params={"image": picked}, json={"version": first_version})
        assert done.status_code == 200, done.text
        for i in ordered[1:]:
            assert rita.post(f"{u}/review/adjudicate", params={"image": i}, json={"method": "majority"}).ok
        for i in ordered:
            final = rita.get(f"{u}/datastore/label", params={"label": i, "tag": "final"})
            assert final.status_code == 200
            got = np.asanyarray(nib.Nifti1Image.from_bytes(gzip.decompress(final.content)).dataobj)
            a, b = readers[i]
            want = labels[(i, a)] if i == picked else np.logical_and(labels[(i, a)], labels[(i, b)])
            assert np.array_equal(got.astype(bool), want.astype(bool)), i

        # Approve three studies, flag one.
        meta = '{"segmentationMeta": {"status": "%s", "approvedBy": "x", "level": "easy", "comment": ""}}'
        for i, status in zip(ids[:4], ("approved", "approved", "approved", "flagged"), strict=True):
            r = rita.put(
                f"{u}/datastore/updatelabelinfo",
                params={"label": i, "tag": "final"},
                data={"params": meta % status},
            )
            assert r.status_code == 200, r.text
        summary = rita.get(f"{u}/review/cases").json()["summary"]
        assert summary["approved"] == 3 and summary["flagged"] == 1 and summary["adjudication"] == 0
        approved = rita.get(f"{u}/review/cases", params={"status": "approved"}).json()["cases"]
        assert [c["image"] for c in approved] == ids[:3]
        assert all(c["reviews"]["final"]["reviewer"] == "rita" for c in approved)

        srv.restart()
        rita.headers.update(login(u, "rita"))
        total = 0
        for i in ids:
            versions = rita.get(f"{u}/review/versions", params={"image": i}).json()["versions"]
            finals = [v for v in versions if v["source"] == "annotator"]
            assert sorted(v["author"] for v in finals) == readers[i]
            total += len(versions)
            for v in versions:  # every version still downloads
                q = {"image": i, "tag": v["tag"], "version": v["version"]}
                assert rita.get(f"{u}/review/version", params=q).status_code == 200
        assert total == saves + len(overlap)  # each save, and each adjudication
        assert rita.get(f"{u}/review/cases").json()["summary"]["approved"] == 3
        assert len(rita.get(f"{u}/review/agreement").json()["pairs"]) >= 1
    finally:
        srv.stop()


def test_slicer_default_client_id_from_two_machines(tmp_path: Path) -> None:
    """Auth off, two clients that both keep Slicer's default client_id: never the same study."""
    studies = make_studies(tmp_path / "studies", 6, size=SIZE)
    srv = Server(studies, free_port(), env=dict(NO_WORKER)).start()
    try:
        one = MONAILabelClient(srv.url, client_id="user-xyz")
        two = MONAILabelClient(srv.url, client_id="user-xyz")
        held: list[str] = []
        for _ in range(3):
            for client in (one, two):
                pick = client.next_sample("random", {})
                assert pick["id"] not in held
                held.append(pick["id"])
        assert len(held) == 6
        assert one.next_sample("random", {}) == {}  # everything is held by someone
    finally:
        srv.stop()
