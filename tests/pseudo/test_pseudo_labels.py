"""The pseudo-label service on a real database and datastore (no HTTP): tag, provenance, never ground
truth, replaced when the model version changes, and a final label always wins."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from server.database import Database
from server.datastore.indexer import index_studies
from server.datastore.store import FINAL, Datastore
from server.models import Score
from server.pseudo import PSEUDO, Predictor, Provenance, PseudoLabels
from tests.conftest import write_label, write_volume

SIZE = 8
IDS = [f"s{i}" for i in range(5)]


@pytest.fixture
def store(tmp_path: Path, db_url: str) -> Datastore:
    db = Database(db_url or f"sqlite:///{tmp_path / 'test.db'}")
    db.migrate()
    studies = tmp_path / "studies"
    for i, image_id in enumerate(IDS):
        write_volume(studies / f"{image_id}.nii.gz", seed=i, size=SIZE)
    index_studies(db, studies)
    return Datastore(db, studies)


@pytest.fixture
def pseudo(store: Datastore) -> PseudoLabels:
    service = PseudoLabels(store.db, store)
    store.on_label_saved.append(service.on_label_saved)  # what server.pseudo.init_app does
    return service


def fake_predictor(tmp_path: Path, calls: list[str]) -> Predictor:
    def predict(image_id: str, workdir: Path) -> tuple[Path, str, dict[str, Any]]:
        calls.append(image_id)
        return write_label(workdir / "pred.nii.gz", shape=(SIZE,) * 3, seed=len(calls)), ".nii.gz", {}

    return predict


def save_final(store: Datastore, tmp_path: Path, image_id: str) -> None:
    tmp = store.temp_for_label(FINAL, ".nii.gz")
    shutil.copy(write_label(tmp_path / f"final-{image_id}.nii.gz", shape=(SIZE,) * 3), tmp)
    store.save_label(image_id, FINAL, tmp, ".nii.gz")


def provenance(version: int) -> Provenance:
    return Provenance("seg", version, "mean_teacher", 0.9, time.time())


def test_pseudo_labels_carry_provenance_and_are_never_ground_truth(
    tmp_path: Path, store: Datastore, pseudo: PseudoLabels
) -> None:
    save_final(store, tmp_path, "s0")
    pool = pseudo.pool(10)
    assert "s0" not in pool and sorted(pool) == IDS[1:]
    report = pseudo.refresh(pool, provenance(1), fake_predictor(tmp_path, []), tmp_path / "work")
    assert report == {"written": 4, "current": 0, "failed": [], "dropped": 0}

    info = store.label_info("s1", PSEUDO)
    assert {k: info[k] for k in ("model", "model_version", "method", "threshold")} == {
        "model": "seg",
        "model_version": 1,
        "method": "mean_teacher",
        "threshold": 0.9,
    }
    assert time.time() - 60 < info["created_ts"] <= time.time()
    assert (store.studies / "labels" / PSEUDO / "s1.nii.gz").is_file()

    items = {item["id"]: item for item in store.page(None, 10)["items"]}
    assert {i: (e["completed"], e["labels"]) for i, e in items.items()} == {
        "s0": (True, [FINAL]),
        **{i: (False, [PSEUDO]) for i in IDS[1:]},
    }
    assert store.page(None, 10, completed=True)["total"] == 1
    assert [Path(p["label"]).parent.name for p in store.train_list()] == [FINAL]  # output=train, dataset zip
    assert store.train_list()[0]["image"].endswith("s0.nii.gz")
    assert pseudo.pool(10) == pool  # pseudo-labelled studies stay in the unlabelled pool


def test_a_new_model_version_replaces_the_pseudo_labels(
    tmp_path: Path, store: Datastore, pseudo: PseudoLabels
) -> None:
    calls: list[str] = []
    predict = fake_predictor(tmp_path, calls)
    pseudo.refresh(IDS, provenance(1), predict, tmp_path / "work")
    again = pseudo.refresh(IDS, provenance(1), predict, tmp_path / "work")
    assert again["written"] == 0 and again["current"] == 5 and len(calls) == 5  # current: not recomputed

    # Version 2 on a smaller pool: those are regenerated, the v1 label left outside is dropped.
    report = pseudo.refresh(IDS[:4], provenance(2), predict, tmp_path / "work")
    assert report["written"] == 4 and report["dropped"] == 1 and len(calls) == 9
    assert {p.image_id: p.info["model_version"] for p in pseudo.labels()} == {i: 2 for i in IDS[:4]}
    assert not store.label_exists("s4", PSEUDO)

    # Another model's pseudo-labels are not this model's to drop.
    other = Provenance("other", 7, "pseudo_label", 0.5, time.time())
    pseudo.refresh(["s4"], other, predict, tmp_path / "work")
    assert pseudo.drop("seg", keep_version=3) == 4
    assert [(p.image_id, p.info["model"]) for p in pseudo.labels()] == [("s4", "other")]


def test_a_final_label_always_wins(tmp_path: Path, store: Datastore, pseudo: PseudoLabels) -> None:
    pseudo.refresh(IDS, provenance(1), fake_predictor(tmp_path, []), tmp_path / "work")
    save_final(store, tmp_path, "s2")
    assert not store.label_exists("s2", PSEUDO)  # the hook deleted it
    assert store.label_exists("s2", FINAL) and "s2" not in pseudo.pool(10)

    # A prediction written for a study that is completed meanwhile is refused; nothing is stored.
    tmp = store.temp_for_label(PSEUDO, ".nii.gz")
    shutil.copy(write_label(tmp_path / "late.nii.gz", shape=(SIZE,) * 3), tmp)
    assert pseudo.save("s2", tmp, ".nii.gz", provenance(1)) is False
    assert not tmp.exists() and not store.label_exists("s2", PSEUDO)
    assert pseudo.refresh(["s2"], provenance(1), fake_predictor(tmp_path, []), tmp_path / "w")["written"] == 0

    # Even without the hook (another process saved the final label), a refresh drops it.
    store.on_label_saved.clear()
    save_final(store, tmp_path, "s3")
    assert store.label_exists("s3", PSEUDO)
    assert pseudo.drop("seg", keep_version=2) >= 1
    assert not store.label_exists("s3", PSEUDO)

    # Deleting the final label puts the study back into the pool.
    store.delete_label("s2", FINAL)
    assert "s2" in pseudo.pool(10)


def test_pool_leaves_out_the_most_uncertain_studies(store: Datastore, pseudo: PseudoLabels) -> None:
    with store.db.session() as s:
        for i, image_id in enumerate(IDS[:4]):
            s.add(Score(image_id=image_id, method="entropy", model_version="seg@1", value=i, ts=0.0))
    pool = pseudo.pool(10, ("entropy", "seg@1"), keep_fraction=0.5)
    assert sorted(pool) == ["s0", "s1", "s4"]  # s4 has no score: kept
    assert sorted(pseudo.pool(10, ("entropy", "seg@1"), keep_fraction=1.0)) == IDS
    assert len(pseudo.pool(2)) == 2
