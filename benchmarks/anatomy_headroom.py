"""Headroom of the anatomy pool: the first step of the label-efficiency issue, before any strategy runs.

Pre-registered in the issue: on the anatomy pool (``benchmarks/anatomy_pool.py``), the mean over seeds
of the test Dice (mean of grey and white matter) of a model trained on

- the full pool, minus that of 4 random labels: at least 0.08;
- 40 random labels (2D; 20 in 3D), minus that of 4 random labels: at least 0.04.

If they fail, the one fallback fixed in the issue is the elastic magnitude 150-450 (``--fallback``);
both runs are reported. Training is ``label_efficiency.py``'s (from scratch, the same iterations per
training, the full pool's scaled by pool size / 40), with three outputs. Also reported: a non-learned
reference for three classes (two intensity cut points, the best pair on the 4 labelled studies) and the
Dice by site.

    .venv/bin/python benchmarks/anatomy_headroom.py --variant 2d --seeds 10
    .venv/bin/python benchmarks/anatomy_headroom.py --smoke            # CI-sized, never a result
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from anatomy_pool import CACHE, SIZES, Recipe, Study, make_pools
from label_efficiency import DEFAULTS, SMOKE, Config, chunks, train

from strategies.scoring import evaluating

THRESHOLDS = {"full_minus_start": 0.08, "max_minus_start": 0.04}
RESULTS = Path(__file__).resolve().parent / "results"


def stack(studies: list[Study]) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.as_tensor(np.stack([s.image for s in studies]))
    labels = torch.as_tensor(np.stack([s.label for s in studies]).astype(np.int64))
    return images, labels


def mean_dice(pred: np.ndarray, truth: np.ndarray, classes: int) -> float:
    values = []
    for c in range(1, classes):
        p, t = pred == c, truth == c
        total = int(p.sum() + t.sum())
        values.append(1.0 if total == 0 else 2.0 * float((p & t).sum()) / total)
    return float(np.mean(values))


def evaluate(net: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, classes: int) -> np.ndarray:
    out = []
    with evaluating(net), torch.no_grad():
        for sl in chunks(len(images), 16):
            pred = net(images[sl]).argmax(dim=1).numpy()
            out += [mean_dice(p, t[0], classes) for p, t in zip(pred, labels[sl].numpy(), strict=True)]
    return np.asarray(out)


def threshold_baseline(labelled: list[Study], test: list[Study]) -> float:
    """Two intensity cut points fitted on the labelled studies (the best pair on a grid), applied to the
    test studies: 0 below the first, 1 between, 2 above. A floor a model has to clear."""
    grid = np.linspace(0.0, 1.0, 41)
    best, cut = -1.0, (0.3, 0.6)
    for a in grid:
        for b in grid[grid > a]:
            score = np.mean([mean_dice(np.digitize(s.image[0], [a, b]), s.label[0], 3) for s in labelled])
            if score > best:
                best, cut = float(score), (float(a), float(b))
    return float(np.mean([mean_dice(np.digitize(s.image[0], cut), s.label[0], 3) for s in test]))


def by_site(dices: np.ndarray, kinds: list[str]) -> dict[str, float]:
    return {
        k: float(np.mean([d for d, kk in zip(dices, kinds, strict=True) if kk == k]))
        for k in sorted(set(kinds))
    }


def one_seed(cfg: Config, pools: dict[str, list[Study]], seed: int) -> dict[str, Any]:
    pool, test_studies = pools["pool"], pools["test"]
    images, labels = stack(pool)
    test = stack(test_studies)
    kinds = [s.kind for s in test_studies]
    init = random.Random(seed).sample(range(len(pool)), cfg.start)  # as label_efficiency.py draws them
    rest = [i for i in range(len(pool)) if i not in set(init)]
    more = init + random.Random(seed * 31 + 7).sample(rest, cfg.max_labels - cfg.start)
    start = evaluate(
        train(cfg, images[init], labels[init], cfg.iters, seed * 1000 + cfg.start), *test, cfg.classes
    )
    t0 = time.perf_counter()
    top = evaluate(
        train(cfg, images[more], labels[more], cfg.iters, seed * 1000 + cfg.max_labels), *test, cfg.classes
    )
    train_s = time.perf_counter() - t0
    full = evaluate(train(cfg, images, labels, cfg.full_iters, seed * 1000 + 999), *test, cfg.classes)
    return {
        "seed": seed,
        "random_start": float(start.mean()),
        "random_max": float(top.mean()),
        "full": float(full.mean()),
        "baseline": threshold_baseline([pool[i] for i in init], test_studies),
        "train_s": train_s,
        "full_by_site": by_site(full, kinds),
        "start_by_site": by_site(start, kinds),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variant", choices=("2d", "3d"), default="2d")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--fallback", action="store_true")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--device", default="cpu", help="where the pool's warps run (the training is on CPU)")
    ap.add_argument("--workers", type=int, default=1, help="processes building the pool")
    ap.add_argument("--cache", type=Path, default=CACHE)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    base = (SMOKE if args.smoke else DEFAULTS)[args.variant]
    sizes = {"pool": base.pool_size, "test": base.test_size} if args.smoke else dict(SIZES[args.variant])
    cfg = replace(base, classes=3, threads=2, pool_size=sizes["pool"], test_size=sizes["test"])
    torch.set_num_threads(cfg.threads)
    recipe = Recipe(
        variant=args.variant,
        magnitude=(150.0, 450.0) if args.fallback else (100.0, 300.0),
        shrink=4 if args.smoke else 1,
    )
    t0 = time.perf_counter()
    pools = make_pools(recipe, sizes, args.cache, args.device, args.workers, sets=("pool", "test"))
    built_s = time.perf_counter() - t0
    per_seed = []
    for seed in range(args.seeds):
        t = time.perf_counter()
        per_seed.append(one_seed(cfg, pools, seed))
        print(f"[seed {seed}] {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
    keys = ("random_start", "random_max", "full", "baseline", "train_s")
    res: dict[str, Any] = {k: float(np.mean([r[k] for r in per_seed])) for k in keys}
    res["full_minus_start"] = res["full"] - res["random_start"]
    res["max_minus_start"] = res["random_max"] - res["random_start"]
    res["criteria"] = {k: bool(res[k] >= v) for k, v in THRESHOLDS.items()}
    report = {
        "smoke": args.smoke,
        "recipe": asdict(recipe),
        "config": {**asdict(cfg), "full_pool_iters": cfg.full_iters},
        "pool_build_seconds": round(built_s, 1),
        **res,
        "all_pass": all(res["criteria"].values()),
        "per_seed": per_seed,
    }
    name = f"anatomy_headroom_{args.variant}{'_fallback' if args.fallback else ''}.json"
    out = args.out or (RESULTS / name)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "per_seed"}, indent=2))
    print(
        f"full {res['full']:.3f}, random@{cfg.max_labels} {res['random_max']:.3f}, random@{cfg.start} "
        f"{res['random_start']:.3f}: full-start {res['full_minus_start']:.3f} (>= 0.08), "
        f"max-start {res['max_minus_start']:.3f} (>= 0.04); thresholds baseline {res['baseline']:.3f}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
