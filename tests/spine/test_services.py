"""Services called without HTTP: indexing, atomic writes, app loading."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from sqlalchemy import select, text

from server.apploader import AppLoadError, load_app
from server.database import Database
from server.datastore import volumes
from server.datastore.indexer import ANALYZE_AFTER_ROWS, index_studies
from server.datastore.store import Datastore
from server.errors import BadRequest
from server.models import Image, Label, LabelVersion
from tests.conftest import write_label, write_volume


@pytest.fixture
def db(tmp_path: Path, db_url: str) -> Database:
    database = Database(db_url or f"sqlite:///{tmp_path / 'test.db'}")
    database.migrate()
    return database


def test_index_is_incremental_and_never_reads_contents(
    tmp_path: Path, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    studies = tmp_path / "s"
    for i in range(5):
        write_volume(studies / f"a{i}.nii.gz", seed=i, size=8)
    write_label(studies / "labels" / "final" / "a1.nii.gz", shape=(8, 8, 8))
    (studies / "notes.txt").write_text("ignored")

    def no_reads(*args: object, **kwargs: object) -> None:
        raise AssertionError("the indexer must not open image files")

    monkeypatch.setattr(volumes, "load_array", no_reads)
    monkeypatch.setattr(volumes, "read_header", no_reads)
    monkeypatch.setattr("nibabel.load", no_reads)

    first = index_studies(db, studies)
    assert (first.images_added, first.labels_added) == (5, 1)
    again = index_studies(db, studies)
    assert (again.images_added, again.images_updated, again.images_removed, again.labels_added) == (
        0,
        0,
        0,
        0,
    )

    (studies / "a4.nii.gz").unlink()
    write_volume(studies / "a5.nii.gz", seed=5, size=8)
    st = (studies / "a0.nii.gz").stat()
    os.utime(studies / "a0.nii.gz", (st.st_atime, st.st_mtime + 10))
    (studies / "labels" / "final" / "a1.nii.gz").unlink()
    third = index_studies(db, studies)
    assert (third.images_added, third.images_updated, third.images_removed, third.labels_removed) == (
        1,
        1,
        1,
        1,
    )
    with db.session() as s:
        ids = sorted(s.scalars(select(Image.id)))
        completed = list(s.scalars(select(Image.id).where(Image.completed.is_(True))))
    assert ids == ["a0", "a1", "a2", "a3", "a5"]
    assert completed == []  # the final label went away, so a1 is back in the pool


def test_failed_commit_leaves_no_file_and_keeps_the_old_one(
    tmp_path: Path, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    studies = tmp_path / "s"
    write_volume(studies / "a.nii.gz", size=8)
    index_studies(db, studies)
    store = Datastore(db, studies)
    good = write_label(tmp_path / "good.nii.gz", shape=(8, 8, 8), seed=1)
    tmp = store.temp_for_label("final", ".nii.gz")
    shutil.copy(good, tmp)
    store.save_label("a", "final", tmp, ".nii.gz")
    before = (studies / "labels" / "final" / "a.nii.gz").read_bytes()

    from sqlalchemy.orm import SessionTransaction

    def broken_commit(self: SessionTransaction, *args: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(SessionTransaction, "commit", broken_commit)
    newer = write_label(tmp_path / "newer.nii.gz", shape=(8, 8, 8), seed=2)
    tmp = store.temp_for_label("final", ".nii.gz")
    shutil.copy(newer, tmp)
    with pytest.raises(RuntimeError):
        store.save_label("a", "final", tmp, ".nii.gz")
    tmp2 = store.temp_for_image(".nii.gz")
    shutil.copy(write_volume(tmp_path / "b.nii.gz", size=8), tmp2)
    with pytest.raises(RuntimeError):
        store.add_image("b", tmp2, ".nii.gz")
    monkeypatch.undo()

    assert (studies / "labels" / "final" / "a.nii.gz").read_bytes() == before
    assert not (studies / "b.nii.gz").exists()
    leftovers = [p.name for p in studies.rglob("*") if p.name.startswith((".tmp-", ".bak-", ".del-"))]
    assert leftovers == []
    with db.session() as s:
        assert s.get(Image, "b") is None
        assert len(s.scalars(select(Label)).all()) == 1
        assert [v.number for v in s.scalars(select(LabelVersion))] == [1]  # the failed save left no row
    versions = studies / "labels" / ".versions" / "a" / "final"
    assert sorted(p.name for p in versions.iterdir()) == ["1.nii.gz"]  # ... and no version file


def test_bin_label_and_image_validation(tmp_path: Path, db: Database) -> None:
    studies = tmp_path / "s"
    write_volume(studies / "a.nii.gz", size=8)
    index_studies(db, studies)
    store = Datastore(db, studies)
    header = volumes.read_header(studies / "a.nii.gz", ".nii.gz")
    tmp = store.temp_for_label("final", ".nii.gz")
    volumes.bin_to_nifti(bytes(range(256)) * 2, header.shape, header.affine, tmp)
    store.save_label("a", "final", tmp, ".nii.gz")
    data, _ = volumes.load_array(studies / "labels" / "final" / "a.nii.gz", ".nii.gz")
    assert data[1, 0, 0] == 1 and data[0, 1, 0] == 8  # Fortran order: x varies fastest
    with pytest.raises(BadRequest):
        volumes.bin_to_nifti(b"\x00" * 10, header.shape, header.affine, tmp_path / "x.nii.gz")


def test_app_loader_isolates_apps_with_the_same_module_names(tmp_path: Path) -> None:
    for name, label in (("one", "liver"), ("two", "spleen")):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "helpers.py").write_text(f"LABEL = {label!r}\n")
        (folder / "main.py").write_text(
            "from server.appspec import AppSpec\nimport helpers\n\n"
            "def build_app(app_dir, conf):\n    return AppSpec(name=helpers.LABEL, labels=[helpers.LABEL])\n"
        )
    assert load_app(tmp_path / "one").name == "liver"
    assert load_app(tmp_path / "two").name == "spleen"  # not the cached 'helpers' of app one
    import sys

    assert "helpers" not in sys.modules


def test_broken_app_fails_with_a_clear_message(tmp_path: Path) -> None:
    (tmp_path / "main.py").write_text("raise ImportError('no such network')\n")
    with pytest.raises(AppLoadError, match="no such network"):
        load_app(tmp_path)
    (tmp_path / "main.py").write_text("x = 1\n")
    with pytest.raises(AppLoadError, match="build_app"):
        load_app(tmp_path)


@pytest.mark.parametrize(
    ("declaration", "reason"),
    [
        (
            "ModelSpec('seg', 'segmentation', ['liver'], task=object())",
            "model 'seg': object is not an inference task",
        ),
        ("TrainerSpec('seg', task='train me')", "trainer 'seg': str is not a training recipe"),
        ("ScoringSpec('entropy', method=42)", "scoring 'entropy': int is not a scoring method"),
    ],
)
def test_a_wrong_object_in_an_app_slot_fails_at_load_naming_the_file(
    tmp_path: Path, declaration: str, reason: str
) -> None:
    slot = {
        "ModelSpec": "models={'seg': %s}",
        "TrainerSpec": "trainers={'seg': %s}",
        "ScoringSpec": "scoring={'entropy': %s}",
    }
    kind = declaration.split("(")[0]
    (tmp_path / "main.py").write_text(
        "from server.appspec import AppSpec, ModelSpec, ScoringSpec, TrainerSpec\n\n"
        "def build_app(app_dir, conf):\n"
        f"    return AppSpec(name='bad', labels=['liver'], {slot[kind] % declaration})\n"
    )
    with pytest.raises(AppLoadError) as err:
        load_app(tmp_path)
    message = str(err.value)
    assert str(tmp_path / "main.py") in message and reason in message and "missing:" in message


def test_a_bulk_index_refreshes_the_planners_statistics(tmp_path: Path, db: Database, db_url: str) -> None:
    """Right after a first index of many studies, releasing a client's older lease is an index lookup,
    not a scan of every study (PostgreSQL plans it from statistics that the indexer now refreshes)."""
    if not db_url:
        pytest.skip("SQLite's queries are written not to need statistics")
    studies = tmp_path / "bulk"
    studies.mkdir()
    for i in range(ANALYZE_AFTER_ROWS):
        (studies / f"b{i:05d}.nii.gz").write_bytes(b"x")  # the indexer never reads contents
    report = index_studies(db, studies)
    assert report.images_added == ANALYZE_AFTER_ROWS
    release = (
        "EXPLAIN UPDATE images SET lease_client = NULL, lease_expires = 0"
        " WHERE lease_expires > 0 AND lease_client = 'a' AND id <> 'b'"
    )
    with db.engine.connect() as conn:
        plan = "\n".join(row[0] for row in conn.execute(text(release)))
        analyzed = conn.scalar(text("SELECT last_analyze FROM pg_stat_user_tables WHERE relname = 'images'"))
    assert "ix_images_lease" in plan and "Seq Scan" not in plan, plan
    assert analyzed is not None
