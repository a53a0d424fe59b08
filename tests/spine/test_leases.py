"""Leases: a study handed to one annotator is not handed to another while its lease runs."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import requests

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
