"""Pseudo-labels on the anatomy pool: the label-efficiency issue's arms, fixed before their run.

- Pools: the anatomy mixture and its control (``benchmarks/anatomy_pool.py``; 2D the registered recipe,
  3D the registered fallback), as ``anatomy_al.py`` runs them.
- Labels: N = 4, 8 and 16 studies drawn at random per seed, as the oracle answers them (traps skipped,
  the draw goes on: ``anatomy_al.initial``); the 4 are the first of the 8, the 8 of the 16, and the 4 are
  the active-learning campaign's starting labels of the same seed.
- Arms, each trained by ``pseudo_label.py``'s recipe unchanged (from scratch, the same seed, iterations
  and 16 labelled crops per step; the semi-supervised arms add 8 unlabelled crops to the same forward,
  ``server.training.semi``, the trainers' code) at three classes: ``labelled_only``; ``pseudo_masked``
  (hard pseudo-labels where the EMA teacher's top probability reaches 0.9: the registered arm);
  ``mean_teacher``; ``fixmatch``; ``bcp``; ``all_labelled`` (every pool study labelled: the ceiling); and
  the combined arm registered in the issue, ``al_pseudo_masked``: the N studies the best strategy of
  ``anatomy_al.py``'s run labelled first (its campaign of the same seed and pool, read from that run's
  job files), then ``pseudo_masked`` on the rest (the studies that campaign had skipped as unreadable
  by its N-th label are left out, as the server leaves them out; until 2026-12-03 every study it
  skipped within its whole campaign was left out, which told the arm of traps it had not met yet).
- Reported per pool and N: test Dice (mean of grey and white matter) per arm with 95 % t-intervals, the
  paired difference to ``labelled_only``, the gap (``all_labelled - labelled_only``) and the share of it
  each semi-supervised arm closes, ``(arm - labelled_only) / gap`` on seed means, with a 95 % percentile
  bootstrap over seeds (10,000 resamples). For the combined arm the same share, against random labels.
- Goals (the issue's): ``pseudo_masked`` or ``al_pseudo_masked`` closes >= 30 % of the gap at N = 4 or 8
  with its interval above 0; no arm below ``labelled_only`` outside its interval on either pool.

Each (pool, seed, N, arm) run is kept under ``benchmarks/results/anatomy_pseudo_jobs/``, named by its
settings and code, and reused by a rerun. Run ``anatomy_al.py`` first (the combined arm needs its picks).

    .venv/bin/python benchmarks/anatomy_pseudo.py --variant 2d --workers 2
    .venv/bin/python benchmarks/anatomy_pseudo.py --smoke --al-jobs DIR --out /tmp/ap   # CI-sized
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from anatomy_al import JOBS as AL_JOBS
from anatomy_al import code_of, initial, kept, recipe_for
from anatomy_pool import CACHE, SIZES, Recipe, make_pools
from pseudo_label import DEFAULTS, SMOKE, Config, bootstrap_gap, rounded, stack, t_interval, train
from pseudo_label import evaluate as test_dice

REPO = Path(__file__).resolve().parent.parent
JOBS = REPO / "benchmarks" / "results" / "anatomy_pseudo_jobs"
SEMI = ("pseudo_masked", "mean_teacher", "fixmatch", "bcp")
REGISTERED = "pseudo_masked"
COMBINED = "al_pseudo_masked"  # the best strategy's N labels, then pseudo_masked on the rest
ARMS = ("labelled_only", *SEMI, COMBINED)
LABELS = (4, 8, 16)
SEEDS = {"2d": 10, "3d": 5}
GOAL_SHARE = 0.30
SETS = {"mixture": ("pool", "test"), "control": ("control_pool", "control_test")}


def al_picks(al_jobs: Path, variant: str, pool: str, seed: int, strategy: str, n: int) -> list[int]:
    """The combined arm's picks: the pool indices ``strategy`` labelled first in ``anatomy_al.py``'s
    campaign (in order), then ``-1``, then the studies that campaign had skipped by the time its ``n``-th
    label came (its first draw's skips, then the traps it was given before that label): what a server
    would leave out of training at that point. Skips met later in the campaign are not known then."""
    found = sorted(al_jobs.glob(f"{variant}_{pool}_{seed}_*.json"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SystemExit(f"no anatomy_al.py job for {variant} {pool} seed {seed} in {al_jobs}: run it first")
    job = json.loads(found[-1].read_text())  # the newest run of that job
    run = job["strategies"][strategy]
    known, labelled = int(job["initial"]["skipped"]), len(job["initial"]["labelled"])
    for kind in run["picks"]:
        if labelled >= n:
            break
        known, labelled = (known + 1, labelled) if kind == "trap" else (known, labelled + 1)
    return [*run["labelled_ids"], -1, *run["skipped_ids"][:known]]


def run_task(
    cfg: Config,
    recipe: Recipe,
    pool_kind: str,
    seed: int,
    n: int,
    arm: str,
    picks: list[int] | None,
    pools: Path,
) -> dict[str, Any]:
    """One arm on one seed and N (``all_labelled`` ignores N; the combined arm takes ``picks``: the
    campaign's labelled studies, then the skipped ones after a ``-1``)."""
    torch.set_num_threads(1 if cfg.workers > 1 else 2)
    t0 = time.perf_counter()
    sets = make_pools(recipe, {"pool": cfg.pool_size, "test": cfg.test_size}, pools, sets=SETS[pool_kind])
    pool, test = sets[SETS[pool_kind][0]], sets[SETS[pool_kind][1]]
    images, labels = stack(pool)
    skipped: list[int] = []
    if arm == "all_labelled":
        chosen = list(range(len(pool)))
    elif arm == COMBINED:
        assert picks is not None
        cut = picks.index(-1)
        chosen, skipped = picks[:cut][:n], picks[cut + 1 :]
    else:
        chosen = initial(pool, seed, n)[0]
    rest = [i for i in range(len(pool)) if i not in set(chosen) | set(skipped)]
    method = REGISTERED if arm == COMBINED else arm
    net, _info = train(cfg, method, images[chosen], labels[chosen], images[rest], seed * 1000 + n)
    out = {
        "pool": pool_kind,
        "seed": seed,
        "n": n,
        "arm": arm,
        "labelled_kinds": [pool[i].kind for i in chosen] if arm != "all_labelled" else [],
        "test_dice": test_dice(net, *stack(test)),
        "test_kinds": [s.kind for s in test],
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(f"[{pool_kind} seed {seed} N {n} {arm}] {out['seconds']:.0f} s", file=sys.stderr, flush=True)
    return out


def task_key(cfg: Config, recipe: Recipe, task: tuple[str, int, int, str, list[int] | None]) -> str:
    code = CODE  # read once when the module loads: an edit of the file later must not change the key
    settings = json.dumps([asdict(replace(cfg, workers=1, seeds=0)), asdict(recipe), task], sort_keys=True)
    return hashlib.sha256((settings + code).encode()).hexdigest()[:12]


def cached(
    cfg: Config,
    recipe: Recipe,
    task: tuple[str, int, int, str, list[int] | None],
    jobs: Path | None,
    pools: Path,
) -> dict[str, Any]:
    kind, seed, n, arm, picks = task
    path = (
        jobs / f"{recipe.variant}_{kind}_{seed}_{n}_{arm}_{task_key(cfg, recipe, task)}.json"
        if jobs
        else None
    )
    return kept(path, lambda: run_task(cfg, recipe, kind, seed, n, arm, picks, pools))


def summarise(results: list[dict[str, Any]], seeds: list[int], labels: tuple[int, ...]) -> dict[str, Any]:
    dice = {(r["seed"], r["n"], r["arm"]): float(np.mean(r["test_dice"])) for r in results}
    high = np.asarray([dice[(s, 0, "all_labelled")] for s in seeds])
    out: dict[str, Any] = {"all_labelled": {**t_interval(high), "per_seed": high.tolist()}, "by_labels": {}}
    for n in labels:
        low = np.asarray([dice[(s, n, "labelled_only")] for s in seeds])
        entry: dict[str, Any] = {
            "labelled_only": {**t_interval(low), "per_seed": low.tolist()},
            "gap": t_interval(high - low),
        }
        for arm in ARMS[1:]:
            values = np.asarray([dice[(s, n, arm)] for s in seeds])
            entry[arm] = {
                **t_interval(values),
                "per_seed": values.tolist(),
                "minus_labelled_only": t_interval(values - low),
                "gap_closed": bootstrap_gap(values, low, high),
            }
        out["by_labels"][str(n)] = entry
    return out


def goals(summaries: dict[str, dict[str, Any]]) -> dict[str, Any]:
    mixture = summaries["mixture"]["by_labels"]
    closes = {
        arm: {n: mixture[n][arm]["gap_closed"] for n in ("4", "8") if n in mixture}
        for arm in (REGISTERED, COMBINED)
    }
    met_share = {
        arm: any(g["mean"] >= GOAL_SHARE and g["ci_low"] > 0 for g in by_n.values())
        for arm, by_n in closes.items()
    }
    below = [
        f"{pool} N={n} {arm}"
        for pool, s in summaries.items()
        for n, entry in s["by_labels"].items()
        for arm in ARMS[1:]
        if entry[arm]["minus_labelled_only"]["ci_high"] < 0
    ]
    return {
        "share_goal": GOAL_SHARE,
        "gap_closed": closes,
        "registered_or_combined_closes_30pct_at_4_or_8": met_share,
        "arms_below_labelled_only_outside_interval": below,
        "met": any(met_share.values()) and not below,
    }


def table(name: str, summary: dict[str, Any]) -> str:
    head = ["N", "arm", "test Dice", "vs labelled-only", "gap closed (bootstrap 95%)"]
    lines = [f"\n{name}", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n, entry in summary["by_labels"].items():
        lo = entry["labelled_only"]
        lines.append(f"| {n} | labelled_only | {lo['mean']:.3f} | - | gap {entry['gap']['mean']:+.3f} |")
        for arm in ARMS[1:]:
            e = entry[arm]
            d, g = e["minus_labelled_only"], e["gap_closed"]
            lines.append(
                f"| {n} | {arm} | {e['mean']:.3f} | "
                f"{d['mean']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}] | "
                f"{g['mean']:.0%} [{g['ci_low']:.0%}, {g['ci_high']:.0%}] |"
            )
    a = summary["all_labelled"]
    lines.append(f"all labelled {a['mean']:.3f} [{a['ci_low']:.3f}, {a['ci_high']:.3f}]")
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pools = [p for p in SETS if p in report["summaries"]]
    fig, axes = plt.subplots(1, len(pools), figsize=(7 * len(pools), 5), squeeze=False)
    for ax, pool in zip(axes[0], pools, strict=True):
        s = report["summaries"][pool]
        ns = [int(n) for n in s["by_labels"]]
        for arm in ARMS:
            rows = [s["by_labels"][str(n)][arm] for n in ns]
            mean = [r["mean"] for r in rows]
            err = [[r["mean"] - r["ci_low"] for r in rows], [r["ci_high"] - r["mean"] for r in rows]]
            ax.errorbar(ns, mean, yerr=err, marker="o", capsize=3, label=arm)
        ax.axhline(s["all_labelled"]["mean"], color="k", lw=0.8, ls=":", label="all labelled")
        ax.set(title=f"anatomy {pool} ({report['variant']})", xlabel="labelled studies", ylabel="test Dice")
        ax.set_xticks(ns)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", choices=("2d", "3d"), default="2d")
    ap.add_argument("--seeds", type=int, help="seeds 0..n-1 (the protocol: 10 in 2D, 5 in 3D)")
    ap.add_argument("--pools", default="mixture,control")
    ap.add_argument("--strategy", help="the combined arm's strategy (default: the AL run's best)")
    ap.add_argument(
        "--al-report", type=Path, help="anatomy_al.py's report (default: results/anatomy_al_<v>.json)"
    )
    ap.add_argument("--al-jobs", type=Path, default=AL_JOBS, help="anatomy_al.py's job files")
    ap.add_argument("--workers", type=int, default=1, help="processes, one torch thread each")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes for CI, never a result")
    ap.add_argument("--cache", type=Path, default=JOBS)
    ap.add_argument("--pool-cache", type=Path, default=CACHE)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = ap.parse_args(argv)

    base = (SMOKE if args.smoke else DEFAULTS)[args.variant]
    sizes = {"pool": base.pool_size, "test": base.test_size} if args.smoke else SIZES[args.variant]
    seeds = args.seeds or (base.seeds if args.smoke else SEEDS[args.variant])
    labels = (4, 8) if args.smoke else LABELS
    cfg = replace(
        base,
        classes=3,
        seeds=seeds,
        labels=labels,
        arms=SEMI,
        workers=args.workers,
        pool_size=sizes["pool"],
        test_size=sizes["test"],
    )
    recipe = recipe_for(args.variant, args.smoke)
    strategy = args.strategy
    if strategy is None:
        al_report = args.al_report or REPO / "benchmarks" / "results" / f"anatomy_al_{args.variant}.json"
        strategy = json.loads(al_report.read_text())["goals"]["best_strategy"]
    kinds = [k for k in SETS if k in args.pools.split(",")]
    tasks: list[tuple[str, int, int, str, list[int] | None]] = []
    for kind in kinds:
        for seed in range(seeds):
            tasks.append((kind, seed, 0, "all_labelled", None))
            for n in labels:
                tasks += [(kind, seed, n, arm, None) for arm in ("labelled_only", *SEMI)]
                picks = al_picks(args.al_jobs, args.variant, kind, seed, strategy, n)
                tasks.append((kind, seed, n, COMBINED, picks))
    t0 = time.perf_counter()
    if args.workers > 1:
        with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as ex:
            futures = [ex.submit(cached, cfg, recipe, t, args.cache, args.pool_cache) for t in tasks]
            results = [f.result() for f in futures]
    else:
        results = [cached(cfg, recipe, t, args.cache, args.pool_cache) for t in tasks]
    wall = time.perf_counter() - t0
    summaries = {
        kind: summarise([r for r in results if r["pool"] == kind], list(range(seeds)), labels)
        for kind in kinds
    }
    report: dict[str, Any] = {
        "benchmark": "anatomy_pseudo",
        "variant": args.variant,
        "smoke": args.smoke,
        "command": "python benchmarks/anatomy_pseudo.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "recipe": asdict(recipe),
        "config": asdict(cfg),
        "combined_strategy": strategy,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__},
        "wall_s": round(wall, 1),
        "tasks_from_cache": sum(bool(r.get("from_cache")) for r in results),
        "summaries": summaries,
    }
    if "mixture" in kinds:
        report["goals"] = goals(summaries)
    report = rounded(report)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"anatomy_pseudo_{args.variant}"
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(report, args.out / f"{stem}.png")
    print(json.dumps(report, indent=2))
    for kind in kinds:
        print(table(f"anatomy {kind} ({args.variant})", summaries[kind]), file=sys.stderr)
    print(f"\nwall {wall:.0f} s; wrote {args.out / stem}.json", file=sys.stderr)
    return 0


CODE = code_of(run_task, train, test_dice, initial)

if __name__ == "__main__":
    sys.exit(main())
