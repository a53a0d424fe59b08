"""The model registry: numbered versions, atomic files, delete by rename (no server needed)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from server.database import Database
from server.errors import BadRequest, NotFound
from server.registry import ModelRegistry


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    db = Database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    db.migrate()
    return ModelRegistry(db, tmp_path / "data")


def checkpoint(tmp_path: Path, content: bytes) -> Path:
    path = tmp_path / f"ckpt-{hashlib.md5(content).hexdigest()}.pt"
    path.write_bytes(content)
    return path


def test_versions_grow_and_files_are_copied(registry: ModelRegistry, tmp_path: Path) -> None:
    assert registry.current("seg") is None
    v1 = registry.publish("seg", checkpoint(tmp_path, b"one"), {"best_metric": 0.5}, source="train")
    v2 = registry.publish("seg", checkpoint(tmp_path, b"two"))
    assert (v1.version, v2.version) == (1, 2)
    assert registry.path(v2).read_bytes() == b"two"
    assert registry.path(v2) == registry.root / "seg" / "v2.pt"
    assert v1.checksum == "SHA256:" + hashlib.sha256(b"one").hexdigest()
    assert v1.metrics == {"best_metric": 0.5} and v1.source == "train"
    current = registry.current("seg")
    assert current is not None and current.version == 2
    assert [v.version for v in registry.versions("seg")] == [1, 2]
    assert registry.current("other") is None
    assert not [p for p in (registry.root / "seg").iterdir() if p.name.startswith(".tmp")]


def test_delete_renames_and_numbers_are_never_reused(registry: ModelRegistry, tmp_path: Path) -> None:
    registry.publish("seg", checkpoint(tmp_path, b"one"))
    registry.publish("seg", checkpoint(tmp_path, b"two"))
    retired = registry.delete("seg")
    assert retired.version == 2
    assert (registry.root / "seg" / "v2.pt.deleted").read_bytes() == b"two"
    assert not (registry.root / "seg" / "v2.pt").exists()
    current = registry.current("seg")
    assert current is not None and current.version == 1
    assert registry.publish("seg", checkpoint(tmp_path, b"three")).version == 3
    registry.delete("seg")
    registry.delete("seg")
    with pytest.raises(NotFound):
        registry.delete("seg")


def test_bad_names_and_missing_files(registry: ModelRegistry, tmp_path: Path) -> None:
    with pytest.raises(BadRequest):
        registry.publish("../escape", checkpoint(tmp_path, b"x"))
    with pytest.raises(BadRequest):
        registry.publish("seg", tmp_path / "missing.pt")
    assert registry.versions("seg") == []
