"""Scoring through the REST API: stored per (image, method, model version), recomputed only when stale,
and read back by a score-based next-sample strategy."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import requests
import torch

from server.apploader import load_app
from tests.conftest import REPO, Server, free_port, write_volume

APP = REPO / "tests" / "training" / "app"


def scores(studies: Path, method: str = "entropy") -> list[tuple[str, str, str, float]]:
    with sqlite3.connect(studies / ".labelloop" / "labelloop.db") as conn:
        query = "SELECT image_id, method, model_version, value FROM scores WHERE method = ?"
        return sorted(conn.execute(query, (method,)).fetchall())


def embedding_versions(studies: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(studies / ".labelloop" / "labelloop.db") as conn:
        return sorted(conn.execute("SELECT image_id, model_version FROM embeddings").fetchall())


def test_scoring_is_versioned_and_feeds_the_entropy_strategy(tmp_path: Path) -> None:
    studies = tmp_path / "studies"
    for i in range(3):
        write_volume(studies / f"s{i}.nii.gz", seed=i)
    srv = Server(studies, free_port(), args=["--app", str(APP), "--conf", "scoring", "true"]).start()
    try:
        u = srv.url
        info = requests.get(f"{u}/info/").json()
        assert "entropy" in info["scoring"] and "entropy" in info["strategies"]
        assert requests.post(f"{u}/scoring/nosuch", json={}).status_code == 404

        first = requests.post(f"{u}/scoring/", params={"run_sync": "true"}, json={}, timeout=300).json()
        assert first["status"] == "DONE", first
        v0 = scores(studies)
        assert [(i, m, v) for i, m, v, _ in v0] == [(f"s{i}", "entropy", "segmentation@0") for i in range(3)]
        extra = scores(studies, "entropy.foreground_fraction")  # the method's further values, kept too
        assert [(i, v) for i, _, v, _ in extra] == [(f"s{i}", "segmentation@0") for i in range(3)]
        assert embedding_versions(studies) == [(f"s{i}", "segmentation@0") for i in range(3)]

        again = requests.post(
            f"{u}/scoring/entropy", params={"run_sync": "true"}, json={}, timeout=300
        ).json()
        assert again["status"] == "DONE"
        assert scores(studies) == v0  # same model version: nothing recomputed
        assert requests.get(f"{u}/scoring/").json()["id"] == again["id"]

        best = max(v0, key=lambda row: row[3])
        pick = requests.post(f"{u}/activelearning/entropy", json={"client_id": "a"}).json()
        assert pick["id"] == best[0]
        assert abs(pick["score"] - best[3]) < 1e-9
        assert pick["entropy"] == pick["score"]  # the score under its method's name, as MONAI Label does

        # A new model version makes every score stale.
        task = load_app(APP, {"scoring": "true"}).models["segmentation"].task
        torch.manual_seed(123)
        weights = tmp_path / "w.pt"
        torch.save(task.network().state_dict(), weights)
        with open(weights, "rb") as f:
            assert requests.put(f"{u}/model/segmentation", files={"file": ("w.pt", f)}).status_code == 200
        third = requests.post(f"{u}/scoring/", params={"run_sync": "true"}, json={}, timeout=300).json()
        assert third["status"] == "DONE"
        v1 = [row for row in scores(studies) if row[2] == "segmentation@1"]
        assert len(v1) == 3
        assert [r[3] for r in v1] != [r[3] for r in v0]
        # an image's embedding is replaced by the new version's
        assert embedding_versions(studies) == [(f"s{i}", "segmentation@1") for i in range(3)]
    finally:
        srv.stop()
