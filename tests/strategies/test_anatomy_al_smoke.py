"""The anatomy active-learning benchmark end to end at CI size (``--smoke``, the template shrunk 4x), in a
subprocess with its own caches; and its non-learned baseline against a direct computation. A smoke run
is never a result: this checks the machinery (the oracle's skips, the shared start, the report)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

from anatomy_al import bootstrap, mean_filter_baseline  # noqa: E402
from anatomy_headroom import mean_dice  # noqa: E402
from anatomy_pool import Study  # noqa: E402

STRATEGIES = {"random", "stratified_random", "entropy", "epistemic", "tta", "hybrid"}


def benchmark(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``benchmarks/<script> --smoke *args`` in a subprocess, from the repository root."""
    return subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), "--smoke", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )


def run_smoke(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``anatomy_al.py --smoke`` with the job and pool caches under ``tmp_path``."""
    return benchmark(
        "anatomy_al.py", "--cache", str(tmp_path / "jobs"), "--pool-cache", str(tmp_path / "pools"), *args
    )


@pytest.fixture(scope="module")
def al_smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """One smoke run of both pools, shared by the active-learning and the pseudo-label checks."""
    tmp_path = tmp_path_factory.mktemp("anatomy")
    return tmp_path, run_smoke(tmp_path, "--out", str(tmp_path / "out"))


def test_smoke_run_skips_every_trap_and_reports_the_protocol(
    al_smoke: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    tmp_path, proc = al_smoke
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "anatomy_al_2d.json").read_text())
    assert (tmp_path / "out" / "anatomy_al_2d.png").stat().st_size > 10_000
    assert report["smoke"] is True and report["labels"] == [4, 8, 12]
    jobs = sorted((tmp_path / "jobs").glob("2d_*.json"))
    assert len(jobs) == 4  # two seeds of the mixture and of the control, each kept for a rerun
    for path in jobs:
        job = json.loads(path.read_text())
        assert "trap" not in job["initial"]["labelled"]
        for name, run in job["strategies"].items():
            assert "trap" not in run["labelled"], name  # the oracle never labels a trap
            assert len(run["labelled"]) == 12
            assert run["picks"].count("trap") == run["skipped"] - job["initial"]["skipped"]
            assert len(run["picks"]) == 8 + run["picks"].count("trap")  # 4 labels a round, skips on top
    for pool in ("mixture", "control"):
        summary = report[pool]
        assert set(summary["strategies"]) == STRATEGIES
        assert len({e["dice_mean"][0] for e in summary["strategies"].values()}) == 1  # one shared start
        for name, entry in summary["strategies"].items():
            assert abs(sum(entry["pick_share"].values()) - 1.0) < 1e-3
            if name != "random":
                d = entry["nauc_minus_random"]
                assert d["ci_low"] <= d["mean"] <= d["ci_high"] and len(d["per_seed"]) == 2
    assert all(e["pick_share"]["trap"] == 0 for e in report["control"]["strategies"].values())
    assert {"best_strategy", "beats_both_randoms_outside_interval", "traps_at_most_twice_random"} <= set(
        report["goals"]
    )
    again = run_smoke(tmp_path, "--pools", "mixture", "--out", str(tmp_path / "again"))
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(again.stdout)["jobs_from_cache"] == 2  # finished jobs come from the cache


def test_pseudo_label_smoke_run_takes_the_campaigns_picks(
    al_smoke: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    """``anatomy_pseudo.py --smoke`` on the smoke campaign's jobs: every arm at N = 4 and 8, the combined
    arm labelled with the best strategy's first N picks (never a trap), the goals and the figure."""
    tmp_path, al = al_smoke
    assert al.returncode == 0, al.stderr[-3000:]
    out = tmp_path / "pseudo"
    args = ["--al-jobs", str(tmp_path / "jobs"), "--al-report", str(tmp_path / "out" / "anatomy_al_2d.json")]
    args += ["--cache", str(tmp_path / "pjobs"), "--pool-cache", str(tmp_path / "pools"), "--out", str(out)]
    proc = benchmark("anatomy_pseudo.py", "--pools", "mixture", *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "anatomy_pseudo_2d.json").read_text())
    assert (out / "anatomy_pseudo_2d.png").stat().st_size > 10_000
    best = json.loads((tmp_path / "out" / "anatomy_al_2d.json").read_text())["goals"]["best_strategy"]
    assert report["smoke"] is True and report["combined_strategy"] == best
    arms = {"labelled_only", "pseudo_masked", "mean_teacher", "fixmatch", "bcp", "al_pseudo_masked"}
    summary = report["summaries"]["mixture"]
    assert set(summary["by_labels"]) == {"4", "8"}
    for entry in summary["by_labels"].values():
        assert arms <= set(entry)
        for arm in arms - {"labelled_only"}:
            assert len(entry[arm]["per_seed"]) == 2 and {"mean", "ci_low", "ci_high"} <= set(
                entry[arm]["gap_closed"]
            )
    for seed in (0, 1):
        (campaign,) = (tmp_path / "jobs").glob(f"2d_mixture_{seed}_*.json")
        picked = json.loads(campaign.read_text())["strategies"][best]
        for n in (4, 8):
            (job,) = (tmp_path / "pjobs").glob(f"2d_mixture_{seed}_{n}_al_pseudo_masked_*.json")
            kinds = json.loads(job.read_text())["labelled_kinds"]
            assert kinds == picked["labelled"][:n] and "trap" not in kinds  # the campaign's first N labels
    assert {
        "registered_or_combined_closes_30pct_at_4_or_8",
        "arms_below_labelled_only_outside_interval",
        "met",
    } <= set(report["goals"])
    assert "| 8 | al_pseudo_masked |" in proc.stderr


def test_the_baseline_picks_the_best_cut_points_on_the_pool() -> None:
    rng = np.random.default_rng(0)
    studies = []
    for _ in range(3):
        label = rng.integers(0, 3, (1, 32, 32)).astype(np.uint8)
        label = ndimage.median_filter(label, size=(1, 5, 5))
        image = (0.1 + 0.35 * label + rng.normal(0, 0.05, label.shape)).astype(np.float32)
        studies.append(Study(image, label, "A"))
    out = mean_filter_baseline(studies[:2], studies[2:])
    a, b = out["cuts"]

    def direct(s: Study, cuts: tuple[float, float]) -> float:
        return mean_dice(np.digitize(ndimage.uniform_filter(s.image[0], 5), cuts), s.label[0], 3)

    assert abs(out["test_dice_by_image"][0] - direct(studies[2], (a, b))) < 1e-9
    grid = np.linspace(0.0, 1.0, 41)
    best = max(
        np.mean([direct(s, (x, y)) for s in studies[:2]]) for i, x in enumerate(grid) for y in grid[i + 1 :]
    )
    assert abs(np.mean([direct(s, (a, b)) for s in studies[:2]]) - best) < 1e-9


def test_bootstrap_interval_of_paired_differences() -> None:
    out = bootstrap([0.02, 0.03, 0.01, 0.04, 0.02])
    assert abs(out["mean"] - 0.024) < 1e-12
    assert 0.01 <= out["ci_low"] < out["mean"] < out["ci_high"] <= 0.04
    even = bootstrap([-0.01, 0.01, -0.01, 0.01])
    assert even["ci_low"] < 0 < even["ci_high"]
