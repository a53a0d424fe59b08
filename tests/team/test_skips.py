"""An unreadable study set aside: a reason, never a label. It leaves the pool, counts in progress, survives a
restart's re-index, and ``hybrid`` learns from it to stay away from studies that look like it."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import requests

from strategies.base import SelectionContext
from strategies.diversity import Hybrid, like_unreadable
from strategies.memory_pool import MemoryPool
from tests.conftest import Server, write_label
from tests.training.conftest import save_label


def next_ids(url: str, n: int) -> list[str]:
    """``n`` next-sample picks for distinct annotators (each holds its lease)."""
    out = []
    for i in range(n):
        r = requests.post(f"{url}/activelearning/random", json={"client_id": f"probe-{i}"}, timeout=10)
        assert r.status_code == 200, r.text
        out.append(r.json().get("id") or "")
    return out


def test_a_skipped_study_leaves_the_pool_and_counts(server: Server, tmp_path: Path) -> None:
    url = server.url
    r = requests.post(
        f"{url}/datastore/skip",
        params={"image": "study_0"},
        json={"reason": "unreadable: motion artefact", "client_id": "ann-1"},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    assert r.json()["reason"] == "unreadable: motion artefact" and r.json()["author"] == "ann-1"
    assert requests.get(f"{url}/datastore/skips", timeout=10).json()[0]["image"] == "study_0"
    stats = requests.get(f"{url}/datastore/", params={"output": "stats"}, timeout=10).json()
    assert stats == {"total": 3, "completed": 0, "label_tags": {}}  # MONAI Label's shape, unchanged
    picks = next_ids(url, 3)  # three studies, one skipped: two picks, then nothing
    assert "study_0" not in picks and sorted(p for p in picks if p) == ["study_1", "study_2"]
    dash = requests.get(f"{url}/dashboard/data", timeout=10).json()
    assert dash["progress"]["skipped"] == 1
    assert next(a for a in dash["annotators"] if a["annotator"] == "ann-1")["skipped"] == 1

    # A restart re-indexes the folder: the skip holds.
    server.restart()
    for i in range(3):
        requests.post(f"{url}/activelearning/random", json={"client_id": f"probe-{i}"}, timeout=10)
    assert "study_0" not in next_ids(url, 3)

    # Bad skips are a 4xx and change nothing.
    assert (
        requests.post(f"{url}/datastore/skip", params={"image": "study_1"}, json={}, timeout=10).status_code
        == 400
    )
    blank = requests.post(
        f"{url}/datastore/skip", params={"image": "study_1"}, json={"reason": " "}, timeout=10
    )
    assert blank.status_code == 400 and "reason" in blank.json()["detail"]
    missing = requests.post(
        f"{url}/datastore/skip", params={"image": "nope"}, json={"reason": "x"}, timeout=10
    )
    assert missing.status_code == 404
    save_label(url, "study_1", write_label(tmp_path / "l1.nii.gz"))
    labelled = requests.post(
        f"{url}/datastore/skip", params={"image": "study_1"}, json={"reason": "x"}, timeout=10
    )
    assert labelled.status_code == 409
    assert [s["image"] for s in requests.get(f"{url}/datastore/skips", timeout=10).json()] == ["study_0"]

    # Back into the pool; and a final label on a skipped study ends the skip (it was readable).
    assert (
        requests.delete(f"{url}/datastore/skip", params={"image": "study_0"}, timeout=10).status_code == 200
    )
    assert (
        requests.delete(f"{url}/datastore/skip", params={"image": "study_0"}, timeout=10).status_code == 404
    )
    assert "study_0" in next_ids(url, 3)
    requests.post(f"{url}/datastore/skip", params={"image": "study_2"}, json={"reason": "noise"}, timeout=10)
    save_label(url, "study_2", write_label(tmp_path / "l2.nii.gz"))
    assert requests.get(f"{url}/datastore/skips", timeout=10).json() == []
    stats = requests.get(f"{url}/datastore/", params={"output": "stats"}, timeout=10).json()
    assert stats["completed"] == 2
    assert requests.get(f"{url}/dashboard/data", timeout=10).json()["progress"]["skipped"] == 0


def test_hybrid_sets_aside_candidates_that_look_like_a_skipped_study() -> None:
    rng = np.random.default_rng(0)
    readable = rng.normal(0.0, 0.3, (6, 4))
    traps = rng.normal(5.0, 0.3, (4, 4))  # a cluster far from everything labelled
    ids = [f"r{i}" for i in range(6)] + [f"t{i}" for i in range(4)]
    vectors = dict(zip(ids, np.vstack([readable, traps]).tolist(), strict=True))
    # The traps are the most uncertain: without a skip, hybrid starts with them.
    scores = {"entropy": {i: (2.0 if i.startswith("t") else 1.0) + 0.01 * n for n, i in enumerate(ids)}}
    labelled = rng.normal(0.0, 0.3, (3, 4)).tolist()
    ctx = SelectionContext("hybrid", None, {}, 0.0, random.Random(0))

    def picks(skipped: list[list[float]]) -> list[str]:
        pool = MemoryPool(ids, scores, embeddings=vectors, taken=labelled, skipped=skipped)
        return [s.image_id for s in Hybrid().select(pool, 2, ctx)]

    assert any(p.startswith("t") for p in picks([]))
    one_skip = [rng.normal(5.0, 0.3, 4).tolist()]
    assert not any(p.startswith("t") for p in picks(one_skip))
    flags = like_unreadable(np.vstack([readable, traps]), labelled, one_skip)
    assert flags.tolist() == [False] * 6 + [True] * 4
    assert not like_unreadable(np.vstack([readable, traps]), labelled, []).any()
