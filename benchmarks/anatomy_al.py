"""Active learning on the anatomy pool: the protocol of the label-efficiency issue, fixed before its run.

- Pools: ``benchmarks/anatomy_pool.py`` (fixed in advance, checked first by ``anatomy_headroom.py``):
  the mixture (sites A 65 %, B 20 %, C 10 %, traps 5 %) and the control (site A only, no traps), each
  with its own i.i.d. test set. 2D: the registered recipe (its headroom passed). 3D: the registered
  fallback (magnitude 150-450), the recipe the issue names once the first one failed; it failed too.
- Training: ``label_efficiency.py``'s, unchanged (from scratch each round, 600 iterations in 2D and 100
  in 3D, three outputs), the budget ``anatomy_headroom.py`` ran; the same training seed at a given label
  count in every arm of a seed.
- Campaign: 4 labels to start (the same random draw for every strategy of a seed), 4 per round, to 40
  (2D) or 20 (3D); 10 seeds in 2D, 5 in 3D. Strategies: random, stratified random, entropy, epistemic
  (BALD), tta and hybrid, run as the server runs them: each strategy class picks from a
  ``MemoryPool`` holding the round's scores and the embeddings a scoring job stores, with the labelled
  studies as the team's taken vectors and the skipped ones as skipped vectors.
- The oracle labels what it is given and skips every trap (a reason, never a label): a skipped study
  leaves the pool and the strategy is asked again for the rest of the round, with the skip known, as an
  annotator's next request would. A round always ends with 4 more labels; skips are counted as picks.
- Reported: mean Dice (grey and white matter) on the test set against labels, with 95 % t-intervals;
  nAUC; labels to 95 % of the full-pool Dice on the mean curve and per seed (the full-pool model is the
  headroom check's: every pool study labelled, traps included, iterations scaled by pool size / 40);
  paired nAUC differences to random and to stratified random with bootstrap 95 % intervals over seeds
  (10,000 resamples, percentile); the share of picks per site and of traps; Dice by test site; the
  control pool; and the mean-filter-plus-threshold baseline (5-voxel mean filter, then the two cut points
  with the best mean Dice on the whole labelled pool).
- Goals (the issue's): the best strategy (highest mean nAUC, picked after the fact among entropy,
  epistemic, tta and hybrid) above both randoms outside the interval and <= 0.60 of random's labels to
  95 % on the mean curve; no strategy below random on the control outside its interval; the best
  strategy's trap share at most twice random's.

Every finished (pool, seed) job is kept under ``benchmarks/results/anatomy_al_jobs/``, named by its
settings and the code that runs it: the raw data behind the report, and what lets an interrupted run
resume (a job whose settings or code changed is run again, never reused). Prints JSON and a table; writes
``benchmarks/results/anatomy_al_<variant>.json`` and ``.png``.

    .venv/bin/python benchmarks/anatomy_al.py --variant 2d --workers 2
    .venv/bin/python benchmarks/anatomy_al.py --smoke --out /tmp/al        # CI-sized, never a result
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import os
import platform
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from anatomy_headroom import evaluate, stack
from anatomy_pool import CACHE, SITES, SIZES, Recipe, Study, make_pools
from label_efficiency import (
    BASELINES,
    DEFAULTS,
    SMOKE,
    STRATEGIES,
    Config,
    bottleneck,
    chunks,
    labels_to_reach,
    nauc,
    plot,
    rounded,
    t_interval,
    train,
)

from strategies.base import SelectionContext
from strategies.diversity import forward_with_features
from strategies.entropy import entropy_scores
from strategies.epistemic import epistemic_scores, mc_dropout_probabilities
from strategies.memory_pool import MemoryPool
from strategies.scoring import evaluating, to_probabilities
from strategies.stratified import size_strata
from strategies.tta import augmented_probabilities, default_augmentations, tta_scores

REPO = Path(__file__).resolve().parent.parent
JOBS = REPO / "benchmarks" / "results" / "anatomy_al_jobs"  # each finished (pool, seed): committed raw data
KINDS = tuple(k for k, _ in SITES)  # A, B, C, trap
LEARNED = tuple(s for s in STRATEGIES if s not in BASELINES)
BOOTSTRAP = 10_000
SEEDS = {"2d": 10, "3d": 5}


def recipe_for(variant: str, smoke: bool) -> Recipe:
    """2D: the registered recipe. 3D: the registered fallback (its first recipe failed the headroom)."""
    fallback = variant == "3d" and not smoke
    return Recipe(
        variant=variant, magnitude=(150.0, 450.0) if fallback else (100.0, 300.0), shrink=4 if smoke else 1
    )


# ---------------------------------------------------------------- one campaign


def round_scores(
    cfg: Config,
    strategy: str,
    net: torch.nn.Module,
    images: torch.Tensor,
    ids: list[str],
    rest: set[str],
    seed: int,
) -> tuple[dict[str, dict[str, float]], dict[str, list[float]], dict[str, Any]]:
    """What a scoring job stores after a round: scores of the open studies for the strategy's method,
    and the bottleneck embeddings (of every study, so labelled and skipped ones have theirs)."""
    scores: dict[str, dict[str, float]] = {}
    embeddings: dict[str, list[float]] = {}
    fg: dict[str, float] = {}
    augs = default_augmentations(cfg.dims)
    for sl in chunks(len(images), 16):
        x, batch_ids = images[sl], ids[sl]
        logits, feats = forward_with_features(net, bottleneck(net), x)
        ent = entropy_scores(to_probabilities(logits))
        for i, e, f, v in zip(
            batch_ids,
            ent["entropy"].tolist(),
            ent["foreground_fraction"].tolist(),
            feats.tolist(),
            strict=True,
        ):
            embeddings[i] = v
            if i in rest:
                scores.setdefault("entropy", {})[i] = e
                fg[i] = f
        open_rows = [j for j, i in enumerate(batch_ids) if i in rest]
        if not open_rows:
            continue
        xo, open_ids = x[open_rows], [batch_ids[j] for j in open_rows]
        if strategy == "epistemic":
            samples = mc_dropout_probabilities(net, xo, cfg.mc_samples, seed=seed)
            values = epistemic_scores(samples)["mutual_information"].tolist()
            scores.setdefault("epistemic", {}).update(zip(open_ids, values, strict=True))
        elif strategy == "tta":
            with evaluating(net):
                probs = augmented_probabilities(net, xo, augs)
            values = tta_scores(probs)["variance"].tolist()
            scores.setdefault("tta", {}).update(zip(open_ids, values, strict=True))
    params: dict[str, Any] = {}
    if strategy == "stratified_random":
        params["strata"] = size_strata(fg, cfg.strata_bins)
    return scores, embeddings, params


def campaign(
    cfg: Config,
    strategy: str,
    pool: list[Study],
    test: tuple[torch.Tensor, torch.Tensor],
    seed: int,
    first: tuple[list[int], list[int], torch.nn.Module, np.ndarray],
) -> dict[str, Any]:
    """One strategy on one seed, from the seed's shared initial labels (and skips), model and Dice."""
    images, labels = stack(pool)
    ids = [f"s{i:04d}" for i in range(len(pool))]
    labelled, skipped, net, final = list(first[0]), list(first[1]), first[2], first[3]
    curve, picks, asks = [float(final.mean())], [], 0
    select = STRATEGIES[strategy]()
    for n in cfg.schedule[1:]:
        rest = {ids[i] for i in range(len(pool)) if i not in set(labelled) | set(skipped)}
        scores, vectors, params = round_scores(cfg, strategy, net, images, ids, rest, seed)
        while len(labelled) < n:
            open_ids = sorted(rest - {ids[i] for i in labelled + skipped})
            if not open_ids:
                raise RuntimeError(f"{strategy}: the pool ran out before {n} labels")
            asks += 1
            memory = MemoryPool(
                open_ids,
                scores,
                random.Random(seed * 104729 + n * 101 + asks),
                embeddings=vectors,
                taken=[vectors[ids[i]] for i in labelled],
                skipped=[vectors[ids[i]] for i in skipped],
            )
            ctx = SelectionContext(strategy, None, params, 0.0, random.Random(seed * 7919 + n * 101 + asks))
            chosen = [int(c.image_id[1:]) for c in select.select(memory, n - len(labelled), ctx)]
            if not chosen or len(set(chosen)) != len(chosen) or set(chosen) & set(labelled + skipped):
                raise RuntimeError(f"{strategy} returned {chosen}: not new studies")
            for i in chosen:
                picks.append(pool[i].kind)
                (skipped if pool[i].kind == "trap" else labelled).append(i)
        net = train(cfg, images[labelled], labels[labelled], cfg.iters, seed * 1000 + n)
        final = evaluate(net, *test, cfg.classes)
        curve.append(float(final.mean()))
    return {
        "curve": curve,
        "picks": picks,
        "labelled": [pool[i].kind for i in labelled],
        "labelled_ids": labelled,  # pool indices in the order they were labelled (the combined arm's)
        "skipped": len(skipped),
        "skipped_ids": skipped,
        "final_dice": final.tolist(),
    }


def initial(pool: list[Study], seed: int, start: int) -> tuple[list[int], list[int]]:
    """The seed's random first labels, as the oracle answers them: traps among them are skipped and the
    draw goes on until ``start`` are labelled."""
    labelled: list[int] = []
    skipped: list[int] = []
    for i in random.Random(seed).sample(range(len(pool)), len(pool)):
        if len(labelled) == start:
            break
        (skipped if pool[i].kind == "trap" else labelled).append(i)
    return labelled, skipped


def job_key(cfg: Config, recipe: Recipe, kind: str, seed: int) -> str:
    """Settings plus the code that runs a job: a change to either never reuses an old result."""
    code = CODE  # read once when the module loads: an edit of the file later must not change the key
    settings = json.dumps(
        [asdict(replace(cfg, workers=1, seeds=0)), asdict(recipe), kind, seed], sort_keys=True
    )
    return hashlib.sha256((settings + code).encode()).hexdigest()[:12]


def run_job(
    cfg: Config, recipe: Recipe, kind: str, seed: int, cache: Path | None, pools: Path = CACHE
) -> dict[str, Any]:
    path = (
        cache / f"{recipe.variant}_{kind}_{seed}_{job_key(cfg, recipe, kind, seed)}.json" if cache else None
    )
    return kept(path, lambda: _run_job(cfg, recipe, kind, seed, pools))


def kept(path: Path | None, make: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The result kept at ``path`` (marked ``from_cache``), or ``make()``'s, written there atomically."""
    if path is not None and path.exists():
        return {**json.loads(path.read_text()), "from_cache": True}
    out = make()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(out))
        tmp.replace(path)
    return out


def _run_job(cfg: Config, recipe: Recipe, kind: str, seed: int, pools: Path) -> dict[str, Any]:
    torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    names = ("pool", "test") if kind == "mixture" else ("control_pool", "control_test")
    sizes = {"pool": cfg.pool_size, "test": cfg.test_size}
    sets = make_pools(recipe, sizes, pools, sets=names)
    pool, test_studies = sets[names[0]], sets[names[1]]
    test = stack(test_studies)
    images, labels = stack(pool)
    labelled, skipped = initial(pool, seed, cfg.start)
    net0 = train(cfg, images[labelled], labels[labelled], cfg.iters, seed * 1000 + cfg.start)
    first_dice = evaluate(net0, *test, cfg.classes)
    full = evaluate(train(cfg, images, labels, cfg.full_iters, seed * 1000 + 999), *test, cfg.classes)
    out: dict[str, Any] = {
        "kind": kind,
        "seed": seed,
        "full_dice": float(full.mean()),
        "full_dice_by_image": full.tolist(),
        "test_kinds": [s.kind for s in test_studies],
        "initial": {"labelled": [pool[i].kind for i in labelled], "skipped": len(skipped)},
        "strategies": {},
    }
    for name in STRATEGIES:
        t = time.perf_counter()
        out["strategies"][name] = campaign(cfg, name, pool, test, seed, (labelled, skipped, net0, first_dice))
        out["strategies"][name]["seconds"] = round(time.perf_counter() - t, 1)
    out["seconds"] = time.perf_counter() - t0
    print(f"[{recipe.variant} {kind} seed {seed}] {out['seconds']:.0f} s", file=sys.stderr, flush=True)
    return out


# ---------------------------------------------------------------- the non-learned baseline


def mean_filter_baseline(pool: list[Study], test: list[Study], size: int = 5) -> dict[str, Any]:
    """5-voxel mean filter, then two cut points (0 below the first, 1 between, 2 above): the pair on a
    41-point grid over [0, 1] with the best mean Dice on the whole labelled pool, applied to the test."""
    grid = np.linspace(0.0, 1.0, 41)

    def counts(studies: list[Study]) -> np.ndarray:
        """(studies, bins, 3): voxels of each label per bin between grid points (digitize's bins)."""
        out = np.zeros((len(studies), len(grid) + 1, 3))
        for n, s in enumerate(studies):
            bins = np.digitize(ndimage.uniform_filter(s.image[0], size), grid)
            np.add.at(out[n], (bins.ravel(), s.label[0].ravel().astype(int)), 1)
        return out

    def dices(c: np.ndarray, a: int, b: int) -> np.ndarray:
        """Per-study mean Dice (labels 1, 2) with cut points grid[a] < grid[b] (a, b: bin indices)."""
        pred = [c[:, : a + 1].sum(1), c[:, a + 1 : b + 1].sum(1), c[:, b + 1 :].sum(1)]  # (studies, 3) each
        values = []
        for cls in (1, 2):
            tp, p, t = pred[cls][:, cls], pred[cls].sum(1), c[:, :, cls].sum(1)
            values.append(np.where(p + t > 0, 2 * tp / np.maximum(p + t, 1), 1.0))
        return np.mean(values, axis=0)

    fit, held = counts(pool), counts(test)
    pairs = [(a, b) for a in range(len(grid)) for b in range(a + 1, len(grid))]
    a, b = max(pairs, key=lambda p: float(dices(fit, *p).mean()))
    return {"cuts": [float(grid[a]), float(grid[b])], "test_dice_by_image": dices(held, a, b).tolist()}


# ---------------------------------------------------------------- statistics and report


def bootstrap(diff: Sequence[float], resamples: int = BOOTSTRAP) -> dict[str, Any]:
    """Mean of paired per-seed differences and its percentile bootstrap 95 % interval."""
    d = np.asarray(diff, dtype=np.float64)
    rng = np.random.default_rng(0)
    means = d[rng.integers(0, len(d), (resamples, len(d)))].mean(axis=1)
    return {
        "mean": float(d.mean()),
        "ci_low": float(np.percentile(means, 2.5)),
        "ci_high": float(np.percentile(means, 97.5)),
        "per_seed": d.tolist(),
    }


def by_test_site(jobs: list[dict[str, Any]], values: list[list[float]]) -> dict[str, float]:
    pooled: dict[str, list[float]] = {}
    for j, dices in zip(jobs, values, strict=True):
        for d, k in zip(dices, j["test_kinds"], strict=True):
            pooled.setdefault(k, []).append(d)
    return {k: float(np.mean(v)) for k, v in sorted(pooled.items())}


def summarise(cfg: Config, jobs: list[dict[str, Any]], baseline: dict[str, Any]) -> dict[str, Any]:
    schedule = cfg.schedule
    jobs = sorted(jobs, key=lambda j: j["seed"])
    full = [j["full_dice"] for j in jobs]
    target = 0.95 * float(np.mean(full))
    base = baseline["test_dice_by_image"]
    out: dict[str, Any] = {
        "seeds": [j["seed"] for j in jobs],
        "full_pool_dice": dict(zip(("mean", "ci_low", "ci_high"), t_interval(full), strict=True)),
        "full_pool_dice_per_seed": full,
        "full_pool_dice_by_test_site": by_test_site(jobs, [j["full_dice_by_image"] for j in jobs]),
        "target_dice_95": target,
        "baseline_mean_filter": {
            "cuts": baseline["cuts"],
            "test_dice": {"mean": float(np.mean(base))},
            "test_dice_by_site": by_test_site(jobs[:1], [base]),
        },
        "strategies": {},
    }
    aucs = {s: [nauc(j["strategies"][s]["curve"], schedule) for j in jobs] for s in STRATEGIES}
    for s in STRATEGIES:
        curves = np.asarray([j["strategies"][s]["curve"] for j in jobs])
        ci = [t_interval(curves[:, i]) for i in range(len(schedule))]
        mean_curve = [c[0] for c in ci]
        picks = [k for j in jobs for k in j["strategies"][s]["picks"]]
        counts = Counter(picks)
        entry: dict[str, Any] = {
            "dice_mean": mean_curve,
            "dice_ci95": [[c[1], c[2]] for c in ci],
            "dice_per_seed": curves.tolist(),
            "nauc": dict(zip(("mean", "ci_low", "ci_high"), t_interval(aucs[s]), strict=True)),
            "nauc_per_seed": aucs[s],
            "labels_to_95_mean_curve": labels_to_reach(mean_curve, schedule, target),
            "labels_to_95_per_seed": [
                labels_to_reach(j["strategies"][s]["curve"], schedule, 0.95 * j["full_dice"]) for j in jobs
            ],
            "picks": len(picks),
            "pick_share": {k: counts[k] / max(len(picks), 1) for k in KINDS},
            "final_dice_by_test_site": by_test_site(jobs, [j["strategies"][s]["final_dice"] for j in jobs]),
        }
        for b in BASELINES:
            if s != b:
                entry[f"nauc_minus_{b}"] = bootstrap([x - y for x, y in zip(aucs[s], aucs[b], strict=True)])
        out["strategies"][s] = entry
    return out


def ratio(n_best: int | None, n_random: int | None, max_labels: int) -> tuple[Any, bool]:
    if n_best is None:
        return None, False
    if n_random is None:  # random never got there: the ratio is below n_best / max_labels
        return f"< {n_best / max_labels:.2f}", n_best / max_labels <= 0.6
    return round(n_best / n_random, 3), n_best / n_random <= 0.6


def goals(cfg: Config, mixture: dict[str, Any], control: dict[str, Any] | None) -> dict[str, Any]:
    s = mixture["strategies"]
    best = max(LEARNED, key=lambda k: s[k]["nauc"]["mean"])
    e = s[best]
    beats = all(e[f"nauc_minus_{b}"]["ci_low"] > 0 for b in BASELINES)
    r, r_ok = ratio(e["labels_to_95_mean_curve"], s["random"]["labels_to_95_mean_curve"], cfg.max_labels)
    trap_best, trap_random = e["pick_share"]["trap"], s["random"]["pick_share"]["trap"]
    below = (
        [
            k
            for k in STRATEGIES
            if k != "random" and control["strategies"][k]["nauc_minus_random"]["ci_high"] < 0
        ]
        if control
        else None
    )
    traps_ok = trap_best <= 2 * trap_random
    out = {
        "best_strategy": best,
        "beats_both_randoms_outside_interval": beats,
        "labels_ratio_vs_random_mean_curve": r,
        "labels_ratio_at_most_0.6": r_ok,
        "control_strategies_below_random_outside_interval": below,
        "trap_share_best": trap_best,
        "trap_share_random": trap_random,
        "traps_at_most_twice_random": traps_ok,
    }
    out["met"] = bool(beats and r_ok and traps_ok and below == [])
    return out


def table(name: str, summary: dict[str, Any], schedule: Sequence[int]) -> str:
    show = [i for i, n in enumerate(schedule) if i == 0 or i == len(schedule) - 1 or n % 8 == 0]
    head = ["strategy", *(f"Dice@{schedule[i]}" for i in show), "nAUC", "d vs random", "d vs strat."]
    head += ["n@95%", *(f"{k}" for k in KINDS)]
    lines = [f"\n{name}", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def diff(e: dict[str, Any], base: str) -> str:
        d = e.get(f"nauc_minus_{base}")
        return "-" if d is None else f"{d['mean']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]"

    for s, e in summary["strategies"].items():
        cells = [s] + [f"{e['dice_mean'][i]:.3f}" for i in show]
        a = e["nauc"]
        cells += [f"{a['mean']:.3f} ±{(a['ci_high'] - a['ci_low']) / 2:.3f}", diff(e, "random")]
        cells.append(diff(e, "stratified_random"))
        n = e["labels_to_95_mean_curve"]
        cells.append(str(n) if n is not None else f">{schedule[-1]}")
        cells += [f"{e['pick_share'][k]:.0%}" for k in KINDS]
        lines.append("| " + " | ".join(cells) + " |")
    full = summary["full_pool_dice"]
    lines.append(
        f"full pool Dice {full['mean']:.3f}, 95% target {summary['target_dice_95']:.3f}; "
        f"mean filter + two cut points {summary['baseline_mean_filter']['test_dice']['mean']:.3f}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", choices=("2d", "3d"), default="2d")
    ap.add_argument("--seeds", type=int, help="seeds 0..n-1 (the protocol: 10 in 2D, 5 in 3D)")
    ap.add_argument("--pools", default="mixture,control", help="which pools to run (mixture, control)")
    ap.add_argument("--workers", type=int, default=1, help="processes, one torch thread each")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes for CI (< 3 min on 2 cores)")
    ap.add_argument("--cache", type=Path, default=JOBS, help="finished jobs, reused by a later run")
    ap.add_argument("--no-cache", action="store_true")
    ap.add_argument("--pool-cache", type=Path, default=CACHE, help="where the pools' studies are kept")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = ap.parse_args(argv)

    base = (SMOKE if args.smoke else DEFAULTS)[args.variant]
    sizes = {"pool": base.pool_size, "test": base.test_size} if args.smoke else SIZES[args.variant]
    seeds = args.seeds or (base.seeds if args.smoke else SEEDS[args.variant])
    threads = 1 if args.workers > 1 else 2
    cfg = replace(
        base,
        classes=3,
        seeds=seeds,
        workers=args.workers,
        threads=threads,
        **{"pool_size": sizes["pool"], "test_size": sizes["test"]},
    )
    recipe = recipe_for(args.variant, args.smoke)
    kinds = [k for k in ("mixture", "control") if k in args.pools.split(",")]
    cache = None if args.no_cache else args.cache

    t0 = time.perf_counter()
    names = {"mixture": ("pool", "test"), "control": ("control_pool", "control_test")}
    tasks = [(kind, seed) for kind in kinds for seed in range(seeds)]  # the mixture's seeds first
    if cfg.workers > 1:
        with ProcessPoolExecutor(cfg.workers, mp_context=get_context("spawn")) as ex:
            futures = [
                ex.submit(run_job, cfg, recipe, kind, seed, cache, args.pool_cache) for kind, seed in tasks
            ]
            jobs = [f.result() for f in futures]
    else:
        jobs = [run_job(cfg, recipe, kind, seed, cache, args.pool_cache) for kind, seed in tasks]
    wall = time.perf_counter() - t0

    report: dict[str, Any] = {
        "benchmark": "anatomy_al",
        "variant": cfg.variant,
        "smoke": args.smoke,
        "command": "python benchmarks/anatomy_al.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "recipe": asdict(recipe),
        "config": {**asdict(cfg), "full_pool_iters": cfg.full_iters},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__},
        "labels": cfg.schedule,
        "wall_s": round(wall, 1),
        "job_s": [round(j["seconds"], 1) for j in jobs],
        "jobs_from_cache": sum(bool(j.get("from_cache")) for j in jobs),
    }
    for kind in kinds:
        sets = make_pools(
            recipe, {"pool": cfg.pool_size, "test": cfg.test_size}, args.pool_cache, sets=names[kind]
        )
        baseline = mean_filter_baseline(sets[names[kind][0]], sets[names[kind][1]])
        report[kind] = summarise(cfg, [j for j in jobs if j["kind"] == kind], baseline)
    if "mixture" in kinds:
        report["goals"] = goals(cfg, report["mixture"], report.get("control"))
        for s, e in report["mixture"]["strategies"].items():
            e["skips_per_campaign"] = float(
                np.mean([j["strategies"][s]["skipped"] for j in jobs if j["kind"] == "mixture"])
            )
    report = rounded(report)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"anatomy_al_{cfg.variant}"
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    if kinds == ["mixture", "control"]:
        titles = ("anatomy mixture", "anatomy control (site A only)", "picks per site (traps skipped)")
        plot(report, args.out / f"{stem}.png", KINDS, titles, "bootstrap 95%")
    print(json.dumps({k: v for k, v in report.items() if k not in kinds}, indent=2))
    for kind in kinds:
        print(table(f"anatomy {kind} ({cfg.variant})", report[kind], cfg.schedule), file=sys.stderr)
    print(f"\nwall {wall:.0f} s; wrote {args.out / stem}.json", file=sys.stderr)
    return 0


def code_of(*functions: Any) -> str:
    return "".join(inspect.getsource(f) for f in functions)


CODE = code_of(round_scores, campaign, initial, _run_job, train, evaluate)

if __name__ == "__main__":
    sys.exit(main())
