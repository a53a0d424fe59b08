"""Many clients writing one study at once: saves of its final label (a double-clicked save, two
reviewers), deletes, review-state and info updates. Every acknowledged write is readable afterwards,
the label row and its file always agree, and nothing answers 5xx."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from tests.conftest import NO_WORKER, Server, free_port, write_volume
from tests.reliability.hostile_files import nifti

CLIENTS = 8
ROUNDS = 6


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    folder = tmp_path / "studies"
    write_volume(folder / "study_0.nii.gz", seed=0)
    srv = Server(folder, free_port(), env=dict(NO_WORKER)).start()
    yield srv
    srv.stop()


def label_bytes(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    return nifti((rng.random((32, 32, 32)) > 0.5).astype(np.uint8))


def at_once(calls: list[Callable[[], requests.Response]]) -> list[requests.Response]:
    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(lambda call: call(), calls))


def row_and_file(studies: Path, tag: str = "final") -> tuple[dict[str, Any] | None, Path | None]:
    db = studies / ".labelloop" / "labelloop.db"
    with sqlite3.connect(db) as conn:
        row = conn.execute(
            "SELECT file, size FROM labels WHERE image_id = 'study_0' AND tag = ?", (tag,)
        ).fetchone()
    if row is None:
        return None, None
    return {"file": row[0], "size": row[1]}, studies / row[0]


def test_concurrent_saves_of_one_label_keep_an_acknowledged_one(server: Server) -> None:
    url = server.url
    for round_ in range(ROUNDS):
        payloads = {i: label_bytes(round_ * 100 + i) for i in range(CLIENTS)}

        replies = at_once(
            [
                partial(
                    requests.put,
                    f"{url}/datastore/label",
                    params={"image": "study_0", "tag": "final"},
                    files={"label": ("l.nii.gz", payloads[i])},
                    timeout=60,
                )
                for i in range(CLIENTS)
            ]
        )
        assert all(r.status_code == 200 for r in replies), [(r.status_code, r.text[:200]) for r in replies]
        stored = requests.get(
            f"{url}/datastore/label", params={"label": "study_0", "tag": "final"}, timeout=30
        )
        assert stored.status_code == 200
        assert stored.content in payloads.values()  # the last committed of the acknowledged saves
        row, path = row_and_file(server.studies)
        assert row is not None and path is not None and path.is_file()
        assert row["size"] == path.stat().st_size == len(stored.content)  # the row names the file on disk


def test_saves_deletes_and_reviews_at_once_stay_consistent(server: Server) -> None:
    url = server.url
    label_url = f"{url}/datastore/label"
    for round_ in range(ROUNDS):
        payloads = {i: label_bytes(1000 + round_ * 100 + i) for i in range(CLIENTS)}
        calls: list[Callable[[], requests.Response]] = []
        for i in range(CLIENTS):
            calls.append(
                partial(
                    requests.put,
                    label_url,
                    params={"image": "study_0"},
                    files={"label": ("l.nii.gz", payloads[i])},
                    timeout=60,
                )
            )
            if i % 3 == 0:
                calls.append(
                    lambda: requests.delete(label_url, params={"id": "study_0", "tag": "final"}, timeout=60)
                )
            meta = {"segmentationMeta": {"status": "approved" if i % 2 else "flagged", "approvedBy": f"r{i}"}}
            calls.append(
                partial(
                    requests.put,
                    f"{url}/datastore/label/info",
                    params={"label": "study_0", "tag": "final"},
                    files={"info": (None, json.dumps(meta))},
                    timeout=60,
                )
            )
        replies = at_once(calls)
        assert all(r.status_code < 500 for r in replies), [(r.status_code, r.text[:200]) for r in replies]
        assert all(r.status_code in (200, 404) for r in replies)  # 404: a delete or review after a delete
        row, path = row_and_file(server.studies)
        head = requests.head(label_url, params={"image": "study_0", "tag": "final"}, timeout=30)
        if row is None:
            assert head.status_code == 404
            assert not list((server.studies / "labels" / "final").glob("study_0.*"))
        else:
            assert head.status_code == 200 and path is not None
            stored = requests.get(label_url, params={"label": "study_0", "tag": "final"}, timeout=30)
            assert stored.content in payloads.values() and row["size"] == path.stat().st_size
        leftovers = [
            p.name for p in server.studies.rglob("*") if p.name.startswith((".tmp-", ".bak-", ".del-"))
        ]
        assert not leftovers


def test_concurrent_info_updates_lose_no_key(server: Server) -> None:
    url = server.url
    requests.put(
        f"{url}/datastore/label",
        params={"image": "study_0"},
        files={"label": ("l.nii.gz", label_bytes(7))},
        timeout=60,
    ).raise_for_status()
    keys = [f"k{i}" for i in range(16)]
    image_calls = [
        partial(
            requests.put,
            f"{url}/datastore/image/info",
            params={"image": "study_0"},
            files={"info": (None, json.dumps({k: k}))},
            timeout=60,
        )
        for k in keys
    ]
    label_calls = [
        partial(
            requests.put,
            f"{url}/datastore/label/info",
            params={"label": "study_0", "tag": "final"},
            files={"info": (None, json.dumps({k: k}))},
            timeout=60,
        )
        for k in keys
    ]
    assert all(r.status_code == 200 for r in at_once(image_calls + label_calls))
    image_info = requests.get(f"{url}/datastore/image/info", params={"image": "study_0"}, timeout=30).json()
    label_info = requests.get(
        f"{url}/datastore/label/info", params={"label": "study_0", "tag": "final"}, timeout=30
    ).json()
    assert all(image_info.get(k) == k for k in keys), image_info
    assert all(label_info.get(k) == k for k in keys), label_info
