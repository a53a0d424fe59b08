"""What training reads: every final label, or (``train_labels=approved``) each study's approved label,
whichever tag it has."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.services import build_services
from server.settings import Settings
from server.team.actor import Actor
from server.team.roles import Role
from tests.conftest import SEG_APP, write_label

REVIEWER = Actor("rita", Role.reviewer, user=True)


def meta(status: str) -> dict[str, object]:
    return {"segmentationMeta": {"status": status, "approvedBy": "x", "level": "", "comment": ""}}


@pytest.mark.parametrize("mode", ["final", "approved"])
def test_train_list_follows_review(studies: Path, tmp_path: Path, mode: str) -> None:
    services = build_services(
        Settings(app_dir=SEG_APP, studies=studies, train_labels=mode), role="server", background=False
    )
    try:
        ds, review = services.datastore, services.review
        for i, tag in ((0, "final"), (1, "final"), (1, "version_1"), (2, "final")):
            label = write_label(ds.temp_for_label(tag, ".nii.gz"), seed=i)
            ds.save_label(f"study_{i}", tag, label, ".nii.gz", author="ann")
        review.update_label_info("study_0", "final", meta("approved"), REVIEWER)
        review.update_label_info("study_1", "version_1", meta("approved"), REVIEWER)
        review.update_label_info("study_2", "final", meta("flagged"), REVIEWER)
        pairs = {Path(p["image"]).name: Path(p["label"]).parent.name for p in ds.train_list()}
        if mode == "final":
            assert pairs == {f"study_{i}.nii.gz": "final" for i in range(3)}
        else:
            assert pairs == {"study_0.nii.gz": "final", "study_1.nii.gz": "version_1"}
    finally:
        services.close()
