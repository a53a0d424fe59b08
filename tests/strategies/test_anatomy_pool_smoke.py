"""The anatomy pool at smoke size (the template shrunk 4x before the warp): built as the issue fixed it,
and the headroom check runs end to end. A smoke pool is never a result; this checks the machinery."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

from anatomy_pool import Recipe, load_template, make_pools, make_study  # noqa: E402


def test_the_sites_look_as_fixed_and_the_labels_are_grey_and_white_matter(tmp_path: Path) -> None:
    template = load_template(shrink=4)
    recipe = Recipe(variant="2d", shrink=4)
    studies = {
        kind: make_study(template, recipe, i, kind, "cpu") for i, kind in enumerate(("A", "B", "C", "trap"))
    }
    for study in studies.values():
        assert study.image.shape == study.label.shape == (1, 128, 128)
        assert set(np.unique(study.label)) == {0, 1, 2}

    def contrast(study: object) -> float:  # white minus grey matter intensity
        image, label = study.image[0], study.label[0]  # type: ignore[attr-defined]
        return float(image[label == 2].mean() - image[label == 1].mean())

    assert contrast(studies["A"]) > 0 > contrast(studies["B"])  # T1: white brighter; B inverted
    background = [s.image[0][s.label[0] == 0].std() for s in studies.values()]
    assert background[3] > 3 * max(background[:3])  # the trap's noise (sigma 0.5) dwarfs the others

    pools = make_pools(
        Recipe(variant="3d", shrink=4), {"pool": 6, "test": 2}, tmp_path, sets=("pool", "test")
    )
    assert [len(pools["pool"]), len(pools["test"])] == [6, 2]
    assert pools["pool"][0].image.shape == (1, 64, 80, 64)
    again = make_pools(Recipe(variant="3d", shrink=4), {"pool": 6, "test": 2}, tmp_path, sets=("pool",))
    assert np.array_equal(again["pool"][3].image, pools["pool"][3].image)  # cached, the same study


def test_headroom_smoke_runs_and_reports_the_registered_criteria(tmp_path: Path) -> None:
    out = tmp_path / "headroom.json"
    run = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "anatomy_headroom.py"),
            "--smoke",
            "--seeds",
            "1",
            "--out",
            str(out),
            "--cache",
            str(tmp_path / "cache"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["smoke"] is True and set(report["criteria"]) == {"full_minus_start", "max_minus_start"}
    assert 0.0 <= report["random_start"] <= 1.0 and 0.0 <= report["full"] <= 1.0
