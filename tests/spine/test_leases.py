"""Leases: a study handed to one annotator is not handed to another while its lease runs."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import requests
from sqlalchemy import select

from server.appspec import default_strategies
from server.database import Database
from server.datastore.indexer import index_studies
from server.datastore.store import Datastore
from server.models import Image
from server.sampling import Sampler
from tests.conftest import NO_WORKER, Server, free_port, write_label, write_volume


def next_id(url: str, client: str | None, strategy: str = "random") -> str | None:
    body = {"client_id": client} if client else {}
    reply = requests.post(f"{url}/activelearning/{strategy}", json=body, timeout=30).json()
    return reply.get("id")


def test_concurrent_annotators_never_get_the_same_study(tmp_path: Path, db_url: str) -> None:
    studies = tmp_path / "many"
    for i in range(40):
        write_volume(studies / f"s{i:03d}.nii.gz", seed=i, size=8)
    srv = Server(studies, free_port(), args=["--db", db_url] if db_url else [], env=dict(NO_WORKER)).start()
    try:
        rounds, clients = 5, 8
        got: dict[str, list[str | None]] = {f"c{c}": [] for c in range(clients)}
        for _ in range(rounds):
            barrier = threading.Barrier(clients)

            def ask(name: str, barrier: threading.Barrier = barrier) -> None:
                barrier.wait()
                got[name].append(next_id(srv.url, name))

            threads = [threading.Thread(target=ask, args=(n,)) for n in got]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            # In each round every client holds exactly one lease: all eight picks differ.
            latest = [got[n][-1] for n in got]
            assert None not in latest
            assert len(set(latest)) == clients, latest
    finally:
        srv.stop()


def test_lease_blocks_others_until_final_label_or_expiry(tmp_path: Path, db_url: str) -> None:
    studies = tmp_path / "two"
    for i in range(2):
        write_volume(studies / f"t{i}.nii.gz", seed=i, size=8)
    args = ["--lease-seconds", "2"] + (["--db", db_url] if db_url else [])
    srv = Server(studies, free_port(), args=args, env=dict(NO_WORKER)).start()
    try:
        a = next_id(srv.url, "alice", "first")
        assert a == "t0"
        b = next_id(srv.url, "bob", "first")
        assert b == "t1"  # t0 is alice's
        assert next_id(srv.url, "carol", "first") is None  # both leased
        assert next_id(srv.url, "alice", "first") == "t0"  # the holder may get it again

        label = write_label(tmp_path / "l.nii.gz", shape=(8, 8, 8))
        with open(label, "rb") as f:
            assert requests.put(
                f"{srv.url}/datastore/label", params={"image": "t0"}, files={"label": ("l.nii.gz", f)}
            ).ok
        # t0 is done; t1 is still bob's.
        assert next_id(srv.url, "carol", "first") is None
        time.sleep(2.3)  # bob's lease expires
        assert next_id(srv.url, "carol", "first") == "t1"
    finally:
        srv.stop()


def test_asking_again_releases_the_older_lease_and_the_reply_names_every_strategy(
    tmp_path: Path, db_url: str
) -> None:
    """The lease's statements (one on PostgreSQL, four on SQLite) do the same: compare-and-set, release
    of the caller's older lease, the assignment, and the study's assignments in the reply."""
    studies = tmp_path / "three"
    for i in range(3):
        write_volume(studies / f"u{i}.nii.gz", seed=i, size=8)
    db = Database(db_url or f"sqlite:///{tmp_path / 'lease.db'}")
    db.migrate()
    index_studies(db, studies)
    sampler = Sampler(db, Datastore(db, studies, share_paths=False), lease_seconds=600)
    strategies = default_strategies()

    def holder(image_id: str) -> str | None:
        with db.session() as s:
            return s.scalar(select(Image.lease_client).where(Image.id == image_id))

    [anonymous] = sampler.next_sample(strategies, "last", {})
    assert anonymous["id"] == "u2" and "lease" not in anonymous and holder("u2") is None  # no client
    [a] = sampler.next_sample(strategies, "first", {"client_id": "alice"})
    assert a["id"] == "u0" and a["lease"]["client_id"] == "alice" and holder("u0") == "alice"
    assert set(a["strategy"]) == {"first"}
    [b] = sampler.next_sample(strategies, "first", {"client_id": "bob"})
    assert b["id"] == "u1"  # u0 is alice's
    [again] = sampler.next_sample(strategies, "last", {"client_id": "alice"})
    assert again["id"] == "u2"
    assert holder("u0") is None and holder("u2") == "alice" and holder("u1") == "bob"  # only hers went
    [back] = sampler.next_sample(strategies, "first", {"client_id": "alice"})
    assert back["id"] == "u0"  # free again, and served once before by "first"
    assert back["strategy"]["first"]["client_id"] == "alice"
    # A study served by two strategies lists both, each with whom and when.
    [other] = sampler.next_sample(strategies, "first", {"client_id": "carol"})
    assert other["id"] == "u2"  # alice's lease on u2 was released when she asked again
    assert set(other["strategy"]) == {"last", "first"}
    assert other["strategy"]["last"]["client_id"] == "alice"
    assert other["strategy"]["first"]["client_id"] == "carol"
    assert sampler.next_sample(strategies, "random", {}) == []  # all three are leased
    db.dispose()
