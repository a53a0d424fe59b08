"""``output=all`` splices the stored info JSON into the reply: it must stay valid, strict JSON (no NaN),
and say what the rows say, assignments merged in."""

from __future__ import annotations

import json
import math
from pathlib import Path

from sqlalchemy import update

from server.database import Database
from server.datastore.indexer import index_studies
from server.datastore.store import Datastore
from server.models import Image, Label
from tests.conftest import write_label, write_volume


def strict(text: str) -> dict:
    def refuse(name: str) -> None:
        raise ValueError(f"invalid JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def test_output_all_is_strict_json_with_every_info(tmp_path: Path) -> None:
    studies = tmp_path / "studies"
    for i in range(3):
        write_volume(studies / f"study_{i}.nii.gz", seed=i, size=8)
    write_label(studies / "labels" / "final" / "study_1.nii.gz", shape=(8, 8, 8), seed=1)
    db = Database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    db.migrate()
    index_studies(db, studies)
    with db.session() as s:
        s.execute(update(Image).where(Image.id == "study_0").values(info={"score": math.nan, "name": "NaNa"}))
        s.execute(update(Image).where(Image.id == "study_2").values(info={"note": 'quote " and \\\\ slash'}))
        s.execute(update(Label).where(Label.image_id == "study_1").values(info={"d": [math.inf, 1.5]}))
    store = Datastore(db, studies)
    listing = strict("".join(store.listing_all(batch=2)))
    objects = listing["objects"]
    assert sorted(objects) == ["study_0", "study_1", "study_2"]
    assert objects["study_0"]["image"]["info"] == {"score": None, "name": "NaNa"}
    assert objects["study_2"]["image"]["info"] == {"note": 'quote " and \\\\ slash'}
    assert objects["study_1"]["labels"]["final"]["info"] == {"d": [None, 1.5]}
    assert objects["study_1"]["labels"]["final"]["ext"] == ".nii.gz"
    assert objects["study_0"]["labels"] == {}
