"""The pseudo-label benchmark end to end at CI size (``--smoke``), in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

SEMI = {"pseudo_masked", "pseudo_unmasked", "mean_teacher", "fixmatch", "bcp"}
ARMS = {"labelled_only", "labelled_strong", "labelled_copy_paste"} | SEMI


@pytest.mark.slow
def test_smoke_run_writes_the_report(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "pseudo_label.py"), "--smoke", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "pseudo_label.json").read_text())
    assert json.loads(proc.stdout) == report
    assert (tmp_path / "pseudo_label.png").stat().st_size > 10_000
    assert {"config", "wall_s", "notes", "summary", "command"} <= set(report)
    summary = report["summary"]
    assert set(summary["by_labels"]) == {"4", "8"}
    assert {"mean", "ci_low", "ci_high", "per_seed"} <= set(summary["all_labelled"])
    for entry in summary["by_labels"].values():
        assert set(entry) == ARMS | {"gap", "gap_measurable"}
        assert {"mean", "ci_low", "ci_high"} <= set(entry["gap"])
        for arm in ARMS - {"labelled_only"}:
            e = entry[arm]
            assert len(e["per_seed"]) == report["config"]["seeds"]
            assert all(0.0 <= d <= 1.0 for d in e["per_seed"])
            assert {"mean", "ci_low", "ci_high"} <= set(e["gap_closed"])
            assert e["dice_by_test_kind"] and set(e["dice_by_test_kind"]) <= {"easy", "hard", "rare", "trap"}
            assert {"mean", "ci_low", "ci_high"} <= set(e["minus_labelled_only"])
            if arm in SEMI:  # the ablation has no teacher, so no pseudo-labels to rate
                assert 0.0 <= e["pseudo_quality"]["confident_fraction"] <= 1.0
            else:
                assert "pseudo_quality" not in e
    goal = summary["goal"]
    assert {"gap_measurable", "gap_closed_primary", "no_arm_below_labelled_only_outside_ci"} <= set(goal)
    assert goal["met"] is (all(goal["gap_measurable"].values()) and not goal["why_not"])
    assert goal["primary_arm"] == "pseudo_masked" and set(goal["post_hoc"]) == {"fixmatch", "bcp"}
    assert all(set(p["gap_closed"]) == {"4", "8"} for p in goal["post_hoc"].values())
    for row in ("| 4 | pseudo_masked |", "| 8 | labelled_strong |", "| 4 | bcp |", "| 8 | all_labelled |"):
        assert row in proc.stderr
