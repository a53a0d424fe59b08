"""Selection from what the scoring job stores: ``stratified_random`` bins the stored foreground
fractions, ``hybrid`` spreads its batch over the stored embeddings; both see open candidates only."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import requests

from server.database import Database
from server.models import Embedding, Image, Score, pack_vector, unpack_vector
from server.sampling import SqlCandidatePool
from strategies.base import SelectionContext
from strategies.diversity import Hybrid, k_center_greedy
from strategies.stratified import size_strata
from tests.conftest import REPO, Server, free_port, write_label, write_volume

APP = REPO / "tests" / "training" / "app"
FG = "entropy.foreground_fraction"


def test_sql_pool_reads_latest_values_and_embeddings_of_open_candidates(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'pool.db'}")
    db.migrate()
    ids = ["a", "b", "c", "d", "e"]
    leases = {"c": ("other", 1e12), "d": ("me", 1e12)}  # c: leased to someone else; d: to the caller
    with db.session() as s:
        for n, i in enumerate(ids):
            client, expires = leases.get(i, (None, 0.0))
            s.add(
                Image(
                    id=i,
                    ext=".nii.gz",
                    file=f"{i}.nii.gz",
                    created_ts=0.0,
                    rand_key=n / 10,
                    completed=i == "b",  # labelled
                    lease_client=client,
                    lease_expires=expires,
                )
            )
            s.flush()
        for ts, version in ((1.0, "m@1"), (2.0, "m@2")):
            for n, i in enumerate(ids):
                s.add(Score(image_id=i, method=FG, model_version=version, value=ts * 10 + n, ts=ts))
                s.add(Embedding(image_id=i, model_version=version, dim=2, vector=pack_vector([ts, n]), ts=ts))
    with db.sessions() as s:
        pool = SqlCandidatePool(s, 1000.0, "me", random.Random(0), exclude=set())
        # labelled (b) and leased to someone else (c) are left out; the caller's own lease (d) is not
        assert pool.score_values(FG, ids) == {"a": 20.0, "d": 23.0, "e": 24.0}
        assert pool.score_values(FG, ["a", "a", "zzz"], model_version="m@1") == {"a": 10.0}
        assert pool.score_values("entropy", ids) == {}
        assert pool.embeddings(ids) == {"a": [2.0, 0.0], "d": [2.0, 3.0], "e": [2.0, 4.0]}
        assert pool.embeddings(["e"], model_version="m@1") == {"e": [1.0, 4.0]}
        assert pool.embeddings(["e"], model_version="m@3") == {}
        excluded = SqlCandidatePool(s, 1000.0, None, random.Random(0), exclude={"a"})
        assert excluded.score_values(FG, ids) == {"e": 24.0}  # no client: d's lease counts too
    db.dispose()


def stored(studies: Path) -> tuple[dict[str, float], dict[str, float], dict[str, list[float]]]:
    """Foreground fractions, entropies and embeddings stored under ``segmentation@0``."""
    with sqlite3.connect(studies / ".labelloop" / "labelloop.db") as conn:
        rows = conn.execute(
            "SELECT image_id, method, value FROM scores WHERE model_version = 'segmentation@0'"
        )
        values: dict[str, dict[str, float]] = {}
        for image_id, method, value in rows:
            values.setdefault(method, {})[image_id] = value
        query = "SELECT image_id, dim, vector FROM embeddings WHERE model_version = 'segmentation@0'"
        embeddings = {i: unpack_vector(blob) for i, dim, blob in conn.execute(query)}
        assert all(len(embeddings[i]) == dim for i, dim, _ in conn.execute(query))
    return values.get(FG, {}), values.get("entropy", {}), embeddings


def test_hybrid_reads_the_embeddings_of_the_model_version_it_ranks_by(tmp_path: Path) -> None:
    """Scores of ``seg@2``; a second model scored later (newer embeddings, other geometry). Hybrid must
    spread its batch over ``seg@2``'s vectors, never the newest model's."""
    db = Database(f"sqlite:///{tmp_path / 'pool.db'}")
    db.migrate()
    ranked = ["a", "b", "c", "d"]  # by entropy, highest first
    own = {"a": [0.0, 0.0], "b": [0.0, 0.1], "c": [10.0, 10.0], "d": [0.0, 0.2]}  # b, d: near a
    other = {"a": [0.0, 0.0], "b": [10.0, 10.0], "c": [0.0, 0.1], "d": [0.0, 0.2]}  # b far instead
    with db.session() as s:
        for n, i in enumerate(ranked):
            s.add(Image(id=i, ext=".nii.gz", file=f"{i}.nii.gz", created_ts=0.0, rand_key=n / 10))
            s.flush()
            s.add(Score(image_id=i, method="entropy", model_version="seg@2", value=1.0 - n / 10, ts=1.0))
            s.add(Embedding(image_id=i, model_version="seg@2", dim=2, vector=pack_vector(own[i]), ts=1.0))
            s.add(Embedding(image_id=i, model_version="cls@5", dim=2, vector=pack_vector(other[i]), ts=2.0))
    with db.sessions() as s:
        pool = SqlCandidatePool(s, 1000.0, "me", random.Random(0), exclude=set())
        assert pool.score_version("entropy") == "seg@2" and pool.score_version("nosuch") is None
        assert pool.embeddings(["b"]) == {"b": [10.0, 10.0]}  # the newest overall: the other model's
        context = SelectionContext("hybrid", "me", {}, 1000.0, random.Random(0))
        picks = Hybrid(candidate_factor=2).select(pool, 2, context)
        assert [p.image_id for p in picks] == ["a", "c"]  # c is far from a in seg@2's space
        assert all(p.fields["embeddings"] == "stored" for p in picks)
    db.dispose()


def test_stratified_and_hybrid_select_from_what_the_scoring_job_stored(tmp_path: Path) -> None:
    studies = tmp_path / "studies"
    for i in range(8):
        write_volume(studies / f"s{i}.nii.gz", seed=i)
    srv = Server(studies, free_port(), args=["--app", str(APP), "--conf", "scoring", "true"]).start()
    try:
        u = srv.url
        info = requests.get(f"{u}/info/").json()["strategies"]
        assert FG in info["stratified_random"]["description"]
        assert "scoring job stored" in info["hybrid"]["description"]

        before = requests.get(f"{u}/scoring/coverage", timeout=30).json()
        assert before["unlabelled"] == 8 and before["methods"]["entropy"]["scored"] == 0
        job = requests.post(f"{u}/scoring/", params={"run_sync": "true"}, json={}, timeout=300).json()
        assert job["status"] == "DONE", job
        assert job["result"]["embedded"] == 8
        after = requests.get(f"{u}/scoring/coverage", timeout=30).json()["methods"]["entropy"]
        assert after["coverage"] == 1.0 and after["read_by"] == ["entropy", "hybrid", "stratified_random"]
        fg, entropy, embeddings = stored(studies)
        all_ids = {f"s{i}" for i in range(8)}
        assert set(fg) == set(entropy) == set(embeddings) == all_ids
        assert len({len(v) for v in embeddings.values()}) == 1 and len(embeddings["s0"]) > 1

        label = write_label(tmp_path / "s7.nii.gz")  # s7 gets a final label: no longer a candidate
        r = requests.put(
            f"{u}/datastore/label",
            params={"image": "s7"},
            files={"label": (label.name, label.read_bytes())},
            data={"params": "{}"},
            timeout=30,
        )
        assert r.status_code == 200, r.text

        open_now = all_ids - {"s7"}
        hybrid = requests.post(f"{u}/activelearning/hybrid", json={"k": 2, "client_id": "b"}).json()["batch"]
        ranked = sorted(open_now, key=lambda i: -entropy[i])  # the candidates, most uncertain first
        # the labelled study (s7) counts as already chosen: k-center keeps away from it
        chosen = k_center_greedy([embeddings[i] for i in ranked], 2, labelled=[embeddings["s7"]])
        assert [p["id"] for p in hybrid] == [ranked[n] for n in chosen]
        assert all(p["embeddings"] == "stored" and p["score"] == entropy[p["id"]] for p in hybrid)

        rest = open_now - {p["id"] for p in hybrid}  # b's studies are leased: not a's candidates
        picks = requests.post(
            f"{u}/activelearning/stratified_random", json={"k": 4, "client_id": "a"}
        ).json()["batch"]
        expected = size_strata({i: fg[i] for i in rest}, 4)  # bins over the open candidates
        assert len({p["id"] for p in picks}) == 4 and {p["id"] for p in picks} <= rest
        assert {p["stratum"] for p in picks} == {0, 1, 2, 3}  # one per bin before any repeats
        assert all(p["stratum"] == expected[p["id"]] and p["strata"] == FG for p in picks)
    finally:
        srv.stop()
