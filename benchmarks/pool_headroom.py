"""Pool headroom: the label-efficiency benchmark's self-check, strategy-blind (random + full pool only).

Before any selection strategy is compared, the synthetic pool and the training budget must leave
something to find. This script trains only on random labels and on the whole pool (never calls a
strategy) and checks the pre-registered criteria, averaged over seeds (each seed its own pool and
test set from ``make_pools``):

- H1: the non-learned baseline (mean filter + best threshold) on the mixture test set < 0.90;
- H2 headroom: full-pool Dice - Dice with ``start`` random labels >= 0.08;
- H3 learnable: full-pool Dice on hard >= 0.6 and on rare >= 0.6, on trap <= 0.3;
- H4: Dice with ``max_labels`` random labels - Dice with ``start`` random labels >= 0.04;
- H5 cost: one training of ``iters`` iterations (one thread) takes <= 12 s;
- easy_only: a model trained on easy studies alone scores < 0.5 on the hard test studies.

Random labels are drawn as in ``label_efficiency.py`` (the same ``start`` initial labels per seed,
then the rest at random); training seeds match the campaign's. Prints JSON to stdout and a table to
stderr.

    .venv/bin/python benchmarks/pool_headroom.py --variant 2d --seeds 3
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
from label_efficiency import DEFAULTS, SMOKE, Config, evaluate, mean_filter_baseline, stack, train
from synthetic_pool import KINDS, make_pools

CRITERIA = {
    "H1_baseline_below_0.90": lambda r: r["baseline"] < 0.90,
    "H2_full_minus_start_ge_0.08": lambda r: r["full"] - r["random_start"] >= 0.08,
    "H3_hard_rare_ge_0.6_trap_le_0.3": lambda r: (
        r["full_by_kind"].get("hard", 0) >= 0.6
        and r["full_by_kind"].get("rare", 0) >= 0.6
        and r["full_by_kind"].get("trap", 0) <= 0.3
    ),
    "H4_max_minus_start_ge_0.04": lambda r: r["random_max"] - r["random_start"] >= 0.04,
    "H5_train_s_le_12": lambda r: r["train_s"] <= 12.0,
    "easy_only_on_hard_below_0.5": lambda r: r["easy_only_on_hard"] < 0.5,
}


def by_kind(dices: np.ndarray, kinds: list[str]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for d, k in zip(dices.tolist(), kinds, strict=True):
        out.setdefault(k, []).append(d)
    return out


def one_seed(cfg: Config, seed: int) -> dict[str, Any]:
    data = make_pools(cfg.dims, seed, cfg.pool_size, cfg.test_size)
    pool, test_studies = data["pool"], data["test"]
    kinds = [s.kind for s in test_studies]
    images, labels = stack(pool)
    test = stack(test_studies)
    init = random.Random(seed).sample(range(len(pool)), cfg.start)  # as label_efficiency.py
    rest = [i for i in range(len(pool)) if i not in set(init)]
    more = init + random.Random(seed * 31 + 7).sample(rest, cfg.max_labels - cfg.start)

    start_dice = evaluate(train(cfg, images[init], labels[init], cfg.iters, seed * 1000 + cfg.start), *test)
    t0 = time.perf_counter()
    net = train(cfg, images[more], labels[more], cfg.iters, seed * 1000 + cfg.max_labels)
    train_s = time.perf_counter() - t0
    max_dice = evaluate(net, *test)
    full = evaluate(train(cfg, images, labels, cfg.full_iters, seed * 1000 + 999), *test)
    easy = [i for i, s in enumerate(pool) if s.kind == "easy"][: cfg.max_labels]
    hard_test = [i for i, k in enumerate(kinds) if k == "hard"]
    easy_net = train(cfg, images[easy], labels[easy], cfg.iters, seed * 1000 + 998)
    easy_on_hard = evaluate(easy_net, test[0][hard_test], test[1][hard_test])
    base = mean_filter_baseline(pool, test_studies)["test_dice_by_image"]
    return {
        "seed": seed,
        "baseline": float(np.mean(base)),
        "random_start": float(start_dice.mean()),
        "random_max": float(max_dice.mean()),
        "full": float(full.mean()),
        "easy_only_on_hard": float(easy_on_hard.mean()),
        "train_s": train_s,
        "_full_by_kind": by_kind(full, kinds),
        "_start_by_kind": by_kind(start_dice, kinds),
        "_max_by_kind": by_kind(max_dice, kinds),
        "_baseline_by_kind": by_kind(np.asarray(base), kinds),
    }


def pooled(per_seed: list[dict[str, Any]], key: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for k in KINDS:
        vals = [v for r in per_seed for v in r[key].get(k, [])]
        if vals:
            out[k] = float(np.mean(vals))
    return out


def check(cfg: Config, seeds: list[int]) -> dict[str, Any]:
    torch.set_num_threads(cfg.threads)
    per_seed = []
    for seed in seeds:
        t0 = time.perf_counter()
        per_seed.append(one_seed(cfg, seed))
        print(f"[seed {seed}] {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    keys = ("baseline", "random_start", "random_max", "full", "easy_only_on_hard", "train_s")
    res: dict[str, Any] = {k: float(np.mean([r[k] for r in per_seed])) for k in keys}
    res["full_by_kind"] = pooled(per_seed, "_full_by_kind")
    res["random_start_by_kind"] = pooled(per_seed, "_start_by_kind")
    res["random_max_by_kind"] = pooled(per_seed, "_max_by_kind")
    res["baseline_by_kind"] = pooled(per_seed, "_baseline_by_kind")
    res["headroom"] = res["full"] - res["random_start"]
    res["labels_gain"] = res["random_max"] - res["random_start"]
    res["criteria"] = {name: bool(f(res)) for name, f in CRITERIA.items()}
    res["all_pass"] = all(res["criteria"].values())
    res["per_seed"] = [{k: v for k, v in r.items() if not k.startswith("_")} for r in per_seed]
    return res


def table(cfg: Config, res: dict[str, Any]) -> str:
    ok = res["criteria"]
    fk = res["full_by_kind"]
    rows = [
        ("H1 baseline", f"{res['baseline']:.3f} (< 0.90)", ok["H1_baseline_below_0.90"]),
        (
            "H2 headroom",
            f"full {res['full']:.3f} - random@{cfg.start} {res['random_start']:.3f} = "
            f"{res['headroom']:.3f} (>= 0.08)",
            ok["H2_full_minus_start_ge_0.08"],
        ),
        (
            "H3 learnable",
            f"hard {fk.get('hard', 0):.3f}, rare {fk.get('rare', 0):.3f} (>= 0.6); "
            f"trap {fk.get('trap', 0):.3f} (<= 0.3)",
            ok["H3_hard_rare_ge_0.6_trap_le_0.3"],
        ),
        (
            "H4 labels matter",
            f"random@{cfg.max_labels} {res['random_max']:.3f} - random@{cfg.start} = "
            f"{res['labels_gain']:.3f} (>= 0.04)",
            ok["H4_max_minus_start_ge_0.04"],
        ),
        (
            "H5 cost",
            f"{res['train_s']:.1f} s per training of {cfg.iters} iters (<= 12)",
            ok["H5_train_s_le_12"],
        ),
        (
            "easy-only on hard",
            f"{res['easy_only_on_hard']:.3f} (< 0.5)",
            ok["easy_only_on_hard_below_0.5"],
        ),
    ]
    lines = ["| criterion | value | result |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {'PASS' if c else 'FAIL'} |" for a, b, c in rows]
    lines.append("\n| Dice by test kind | " + " | ".join(KINDS) + " |")
    lines.append("|---|" + "---|" * len(KINDS))
    for name, key in (
        ("mean filter", "baseline_by_kind"),
        (f"random@{cfg.start}", "random_start_by_kind"),
        (f"random@{cfg.max_labels}", "random_max_by_kind"),
        ("full pool", "full_by_kind"),
    ):
        cells = " | ".join(f"{res[key].get(k, float('nan')):.3f}" for k in KINDS)
        lines.append(f"| {name} | {cells} |")
    lines.append(f"\nall pass: {res['all_pass']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=("2d", "3d"), default="2d")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (0..n-1)")
    parser.add_argument("--iters", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--batch", type=int)
    parser.add_argument("--crop", type=int)
    parser.add_argument("--channels", type=lambda s: tuple(int(c) for c in s.split(",")))
    parser.add_argument("--smoke", action="store_true", help="the SMOKE config (fast, not meant to pass)")
    args = parser.parse_args(argv)
    cfg = (SMOKE if args.smoke else DEFAULTS)[args.variant]
    overrides = {k: getattr(args, k) for k in ("iters", "lr", "batch", "crop", "channels")}
    cfg = replace(cfg, threads=1, **{k: v for k, v in overrides.items() if v is not None})
    res = check(cfg, list(range(args.seeds)))
    res = {"config": {**asdict(cfg), "full_pool_iters": cfg.full_iters}, **res}
    print(json.dumps(res, indent=2))
    print(table(cfg, res), file=sys.stderr)
    return 0 if res["all_pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
