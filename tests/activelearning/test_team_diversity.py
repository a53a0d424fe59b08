"""Four annotators each asking for one study, as the Slicer and OHIF plugins do: ``hybrid`` keeps the
team's leases (and the labelled studies) as already chosen, so near-duplicate re-scans never go to two
annotators at once while distinct studies remain. ``random`` is the control: it does hand them out."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from server.models import pack_vector
from tests.conftest import NO_WORKER, REPO, Server, free_port, write_volume

APP = REPO / "tests" / "training" / "app"
GROUPS, PER_GROUP = 4, 4
ANNOTATORS = [f"annotator-{i}" for i in range(4)]
VERSION = "segmentation@1"


def group_of(image_id: str) -> int:
    return int(image_id.split("_")[1])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """16 studies in 4 groups of near-duplicate re-scans; one group is the most uncertain throughout."""
    studies = tmp_path / "studies"
    ids = [f"g_{g}_{m}" for g in range(GROUPS) for m in range(PER_GROUP)]
    for n, image_id in enumerate(ids):
        write_volume(studies / f"{image_id}.nii.gz", seed=n, size=8)
    srv = Server(
        studies, free_port(), args=["--app", str(APP), "--conf", "scoring", "true"], env=dict(NO_WORKER)
    )
    srv.start()
    with sqlite3.connect(studies / ".labelloop" / "labelloop.db") as conn:
        for image_id in ids:
            g, m = group_of(image_id), int(image_id.split("_")[2])
            vector = [10.0 * (d == g) + 0.01 * m for d in range(GROUPS)]  # a group's scans nearly coincide
            entropy = 0.9 - 0.1 * g - 0.001 * m  # group 0 most uncertain, then 1, ...
            conn.execute(
                "INSERT INTO scores (image_id, method, model_version, value, ts)"
                " VALUES (?, 'entropy', ?, ?, 1.0)",
                (image_id, VERSION, entropy),
            )
            conn.execute(
                "INSERT INTO embeddings (image_id, model_version, dim, vector, ts) VALUES (?, ?, ?, ?, 1.0)",
                (image_id, VERSION, GROUPS, pack_vector(vector)),
            )
    yield srv
    srv.stop()


def rounds(srv: Server, strategy: str, n: int) -> list[list[int]]:
    """Each annotator asks for one study in turn, ``n`` times round; after every answer, the groups of
    the studies the team holds (each annotator's newest pick; asking again releases the older one)."""
    held: dict[str, str] = {}
    seen: list[list[int]] = []
    for _ in range(n):
        for who in ANNOTATORS:
            r = requests.post(f"{srv.url}/activelearning/{strategy}", json={"client_id": who}, timeout=30)
            assert r.status_code == 200, r.text
            held[who] = r.json()["id"]
            seen.append(sorted(group_of(i) for i in held.values()))
    return seen


def test_hybrid_spreads_one_study_requests_across_the_team(server: Server) -> None:
    for groups in rounds(server, "hybrid", 3):
        assert len(set(groups)) == len(groups), groups  # never two scans of one group at once
    held = rounds(server, "hybrid", 1)[-1]
    assert held == [0, 1, 2, 3]


def test_random_hands_near_duplicates_to_two_annotators(server: Server) -> None:
    clashes = sum(len(set(groups)) < len(groups) for groups in rounds(server, "random", 8))
    assert clashes > 0  # the control: without the team's picks, duplicates go to different annotators
