"""The label-efficiency benchmark end to end at CI size (``--smoke``), in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STRATEGIES = {"random", "stratified_random", "entropy", "epistemic", "tta", "hybrid"}


@pytest.mark.slow
def test_smoke_run_writes_the_report(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "label_efficiency.py"), "--smoke", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "label_efficiency_2d.json").read_text())
    assert json.loads(proc.stdout) == report
    assert (tmp_path / "label_efficiency_2d.png").stat().st_size > 10_000
    assert report["labels"] == [4, 8, 12]
    assert {"config", "wall_s", "notes", "mixture", "control"} <= set(report)
    for pool in ("mixture", "control"):
        summary = report[pool]
        assert {"full_pool_dice", "target_dice_95", "baseline_mean_filter", "goal"} <= set(summary)
        assert set(summary["strategies"]) == STRATEGIES
        for name, entry in summary["strategies"].items():
            assert len(entry["dice_mean"]) == 3 and all(0.0 <= d <= 1.0 for d in entry["dice_mean"])
            assert {"nauc", "labels_to_95_mean_curve", "pick_share", "final_dice_by_test_kind"} <= set(entry)
            assert "trap" in entry["pick_share"]
            if name != "random":
                assert {"mean", "ci_low", "ci_high"} <= set(entry["nauc_minus_random"])
        # every strategy starts from the same labels and model
        assert len({e["dice_mean"][0] for e in summary["strategies"].values()}) == 1
    assert "heterogeneous pool" in proc.stderr and "| random |" in proc.stderr
