"""Label efficiency: a simulated annotation campaign with an oracle annotator, per selection strategy.

Each seed draws its own synthetic pool and test set (``benchmarks/synthetic_pool.py``): a
heterogeneous mixture (easy near-duplicates, hard, rare appearance, unlearnable traps) and a
homogeneous control. A campaign starts from the same random labels for every strategy, retrains a
small MONAI UNet from scratch each round with the same number of iterations (DiceCE loss, random
crops and flips, the same training seed for every strategy at a given label count), scores the
unlabelled studies with the library's scoring functions, lets the strategy class pick the next
studies through an in-memory ``CandidatePool``, and the oracle reveals their labels. Dice is measured
on the test set after every round.

Reported per strategy: Dice vs number of labels (mean and 95 % t-interval over seeds), the normalised
area under that curve, the labels needed to reach 95 % of the full-pool Dice (one model trained on
the whole pool with the iteration budget scaled by pool size / final label count), the per-seed
paired AUC difference to random and to stratified random (95 % t-interval), and what share of the
picks were traps (and easy, hard, rare). Also the homogeneous control and a non-learned baseline
(mean filter + the threshold that is best on the labelled pool). Prints JSON to stdout and a table to
stderr; writes ``benchmarks/results/label_efficiency_<variant>.json`` and ``.png``.

The pool and budget were calibrated strategy-blind with ``benchmarks/pool_headroom.py`` (random
labels and the full pool only); run it first to check the pool leaves headroom.

    .venv/bin/python benchmarks/label_efficiency.py --variant 2d --workers 2
    .venv/bin/python benchmarks/label_efficiency.py --smoke --out /tmp/le      # CI-sized, < 3 min
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.losses import DiceCELoss
from monai.networks.layers.simplelayers import SkipConnection
from monai.networks.nets import UNet
from scipy import ndimage, stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic_pool import KINDS, Study, make_pools

from strategies.base import SelectionContext, Strategy
from strategies.diversity import Hybrid, forward_with_features
from strategies.entropy import Entropy, entropy_scores
from strategies.epistemic import Epistemic, epistemic_scores, mc_dropout_probabilities
from strategies.memory_pool import MemoryPool
from strategies.random import Random
from strategies.scoring import evaluating, to_probabilities
from strategies.stratified import StratifiedRandom, size_strata
from strategies.tta import TTA, augmented_probabilities, default_augmentations, tta_scores

REPO = Path(__file__).resolve().parent.parent
STRATEGIES: dict[str, Callable[[], Strategy]] = {
    "random": Random,
    "stratified_random": StratifiedRandom,
    "entropy": Entropy,
    "epistemic": Epistemic,
    "tta": TTA,
    "hybrid": Hybrid,  # entropy candidates (top 4k), then k-center on bottleneck embeddings
}
BASELINES = ("random", "stratified_random")
NOTES = [
    "best_strategy is picked after the fact (highest mean nAUC of entropy, epistemic, tta, hybrid); a CI that"
    " excludes 0 for the best of four is weaker evidence than for one strategy named in advance.",
    "hybrid: the top 4k studies by mean entropy, then k-center greedy on the UNet bottleneck features"
    " (global average pooled); stratified_random: 4 equal-count bins of the current model's predicted"
    " foreground fraction; epistemic: BALD over 8 MC-dropout passes; tta: variance over identity, flips"
    " and rot90, each inverted.",
    "Each seed draws its own pool, test set and 4 initial labels; within a seed all strategies share the"
    " initial labels and model, and the training seed at each label count: differences come from the picks.",
    "labels_to_95: the first label count whose Dice reaches 95% of the full-pool Dice (None: not within the"
    " schedule); the full-pool model trains iters * pool_size / max_labels iterations.",
]


@dataclass(frozen=True)
class Config:
    variant: str = "2d"
    seeds: int = 5
    pool_size: int = 150
    test_size: int = 60
    start: int = 4
    step: int = 4
    max_labels: int = 40
    iters: int = 600  # calibrated with pool_headroom.py (random + full pool only)
    batch: int = 8
    crop: int = 48
    lr: float = 6e-3
    channels: tuple[int, ...] = (8, 16, 32)
    dropout: float = 0.1
    mc_samples: int = 8
    strata_bins: int = 4
    workers: int = 1
    threads: int = 1
    classes: int = 2  # network outputs, background included (the anatomy pool: 3)

    @property
    def dims(self) -> int:
        return 2 if self.variant == "2d" else 3

    @property
    def schedule(self) -> list[int]:
        return list(range(self.start, self.max_labels + 1, self.step))

    @property
    def full_iters(self) -> int:
        return round(self.iters * self.pool_size / self.max_labels)


# 3D at 48^3 costs ~10x 2D per step on CPU: a smaller pool, a shorter schedule (5 seeds, as in 2D).
DEFAULTS = {
    "2d": Config("2d"),
    "3d": Config("3d", pool_size=60, test_size=24, max_labels=20, iters=100, batch=2, crop=32),
}
SMOKE = {
    "2d": Config("2d", seeds=2, pool_size=24, test_size=12, max_labels=12, iters=20, channels=(4, 8, 16)),
    "3d": Config(
        "3d",
        seeds=2,
        pool_size=24,
        test_size=12,
        max_labels=12,
        iters=10,
        batch=2,
        crop=32,
        channels=(4, 8, 16),
    ),
}


# ---------------------------------------------------------------- training and evaluation


def stack(studies: Sequence[Study]) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.as_tensor(np.stack([s.image for s in studies]))
    labels = torch.as_tensor(np.stack([s.label for s in studies]).astype(np.int64))
    return images, labels


def build_net(cfg: Config) -> UNet:
    strides = (2,) * (len(cfg.channels) - 1)
    return UNet(cfg.dims, 1, cfg.classes, cfg.channels, strides, num_res_units=1, dropout=cfg.dropout)


def bottleneck(net: UNet) -> torch.nn.Module:
    """The deepest block: the submodule of the last (innermost) skip connection."""
    return [m for m in net.modules() if isinstance(m, SkipConnection)][-1].submodule


def train(cfg: Config, images: torch.Tensor, labels: torch.Tensor, iters: int, seed: int) -> UNet:
    """From scratch: ``iters`` Adam steps on random crops (and flips) of the labelled studies."""
    torch.manual_seed(seed)
    net = build_net(cfg)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(iters, 1))
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    gen = torch.Generator().manual_seed(seed)
    size = images.shape[2:]
    crop = [min(cfg.crop, s) for s in size]
    net.train()
    for _ in range(iters):
        idx = torch.randint(len(images), (cfg.batch,), generator=gen).tolist()
        xs, ys = [], []
        for i in idx:
            start = [
                int(torch.randint(s - c + 1, (1,), generator=gen)) for s, c in zip(size, crop, strict=True)
            ]
            window = (slice(None), *(slice(a, a + c) for a, c in zip(start, crop, strict=True)))
            x, y = images[i][window], labels[i][window]
            flips = [d + 1 for d in range(cfg.dims) if torch.rand(1, generator=gen).item() < 0.5]
            if flips:
                x, y = torch.flip(x, flips), torch.flip(y, flips)
            xs.append(x)
            ys.append(y)
        opt.zero_grad()
        loss = loss_fn(net(torch.stack(xs)), torch.stack(ys))
        loss.backward()
        opt.step()
        sched.step()
    net.eval()
    return net


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    total = int(pred.sum() + truth.sum())
    return 1.0 if total == 0 else 2.0 * float(np.logical_and(pred, truth).sum()) / total


def chunks(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def evaluate(net: UNet, images: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    out = []
    with evaluating(net):
        for sl in chunks(len(images), 16):
            pred = net(images[sl]).argmax(dim=1).numpy() > 0
            out += [dice(p, t[0] > 0) for p, t in zip(pred, labels[sl].numpy(), strict=True)]
    return np.asarray(out)


# ---------------------------------------------------------------- scoring and selection


def score_round(
    cfg: Config, strategy: str, net: UNet, images: torch.Tensor, ids: list[str], seed: int
) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    """Scores (method -> id -> value) and params the strategy needs, from the round's model."""
    values: dict[str, list[float]] = {}
    fg: list[float] = []
    embeddings: list[list[float]] = []
    augs = default_augmentations(cfg.dims)
    for sl in chunks(len(images), 16):
        x = images[sl]
        if strategy == "epistemic":
            samples = mc_dropout_probabilities(net, x, cfg.mc_samples, seed=seed)
            values.setdefault("epistemic", []).extend(
                epistemic_scores(samples)["mutual_information"].tolist()
            )
        elif strategy == "tta":
            with evaluating(net):
                probs = augmented_probabilities(net, x, augs)
            values.setdefault("tta", []).extend(tta_scores(probs)["variance"].tolist())
        elif strategy in ("entropy", "hybrid", "stratified_random"):
            logits, feats = forward_with_features(net, bottleneck(net), x)
            ent = entropy_scores(to_probabilities(logits))
            values.setdefault("entropy", []).extend(ent["entropy"].tolist())
            fg.extend(ent["foreground_fraction"].tolist())
            embeddings.extend(feats.tolist())
    scores = {m: dict(zip(ids, v, strict=True)) for m, v in values.items()}
    params: dict[str, Any] = {}
    if strategy == "stratified_random":
        params["strata"] = size_strata(dict(zip(ids, fg, strict=True)), cfg.strata_bins)
    if strategy == "hybrid":
        params["embeddings"] = dict(zip(ids, embeddings, strict=True))
    return scores, params


def campaign(
    cfg: Config,
    strategy: str,
    pool: list[Study],
    test: tuple[torch.Tensor, torch.Tensor],
    seed: int,
    first: tuple[list[int], UNet, np.ndarray],
) -> dict[str, Any]:
    """One strategy's campaign on one seed from the shared initial labels, model and test Dice."""
    images, labels = stack(pool)
    ids = [f"s{i:04d}" for i in range(len(pool))]
    labelled, net, final = list(first[0]), first[1], first[2]
    curve = [float(final.mean())]
    picks: list[str] = []
    select = STRATEGIES[strategy]()
    for n in cfg.schedule[1:]:
        taken = set(labelled)
        rest = [i for i in range(len(pool)) if i not in taken]
        rest_ids = [ids[i] for i in rest]
        scores, params = score_round(cfg, strategy, net, images[rest], rest_ids, seed)
        ctx = SelectionContext(strategy, None, params, 0.0, random.Random(seed * 7919 + n))
        chosen = select.select(MemoryPool(rest_ids, scores, random.Random(seed * 104729 + n)), cfg.step, ctx)
        new = [int(c.image_id[1:]) for c in chosen]
        if len(set(new)) != cfg.step or set(new) & taken:
            raise RuntimeError(f"{strategy} returned {new}: not {cfg.step} new studies")
        labelled += new
        picks += [pool[i].kind for i in new]
        net = train(cfg, images[labelled], labels[labelled], cfg.iters, seed * 1000 + n)
        final = evaluate(net, *test)
        curve.append(float(final.mean()))
    return {"curve": curve, "picks": picks, "final_dice": final.tolist()}


def run_job(cfg: Config, kind: str, seed: int, cache: Path | None = None) -> dict[str, Any]:
    """All strategies on one seed of one pool kind (``mixture`` or ``control``), plus the full pool.

    With ``cache``, a finished job is saved there and reused by a later run with the same config and
    the same ``synthetic_pool.py``.
    """
    settings = json.dumps(asdict(replace(cfg, workers=1)), sort_keys=True)
    # The pool's code is part of the key: a changed generator must not reuse another pool's results.
    pool_code = (Path(__file__).resolve().parent / "synthetic_pool.py").read_bytes()
    key = hashlib.sha256(settings.encode() + pool_code).hexdigest()[:12]
    path = cache / f"{cfg.variant}_{kind}_{seed}_{key}.json" if cache is not None else None
    if path is not None and path.exists():
        return {**json.loads(path.read_text()), "from_cache": True}
    out = _run_job(cfg, kind, seed)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out))
    return out


def _run_job(cfg: Config, kind: str, seed: int) -> dict[str, Any]:
    torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    data = make_pools(cfg.dims, seed, cfg.pool_size, cfg.test_size)
    pool = data["pool" if kind == "mixture" else "control_pool"]
    test_studies = data["test" if kind == "mixture" else "control_test"]
    test = stack(test_studies)
    images, labels = stack(pool)
    init = random.Random(seed).sample(range(len(pool)), cfg.start)
    net0 = train(cfg, images[init], labels[init], cfg.iters, seed * 1000 + cfg.start)
    first_dice = evaluate(net0, *test)
    full = evaluate(train(cfg, images, labels, cfg.full_iters, seed * 1000 + 999), *test)
    out: dict[str, Any] = {
        "kind": kind,
        "seed": seed,
        "full_dice": float(full.mean()),
        "test_kinds": [s.kind for s in test_studies],
        "full_dice_by_image": full.tolist(),
        "init_kinds": [pool[i].kind for i in init],
        "baseline": mean_filter_baseline(pool, test_studies),
        "strategies": {},
    }
    for name in STRATEGIES:
        out["strategies"][name] = campaign(cfg, name, pool, test, seed, (init, net0, first_dice))
    out["seconds"] = time.perf_counter() - t0
    print(f"[{kind} seed {seed}] {out['seconds']:.0f} s", file=sys.stderr, flush=True)
    return out


def mean_filter_baseline(pool: list[Study], test: list[Study]) -> dict[str, Any]:
    """Mean filter (5 voxels) + the global threshold with the best mean Dice on the labelled pool."""

    def scores(studies: list[Study], thr: float) -> list[float]:
        return [dice(ndimage.uniform_filter(s.image[0], 5) > thr, s.label[0] > 0) for s in studies]

    thresholds = np.linspace(0.2, 2.0, 37)
    best = max(thresholds, key=lambda t: float(np.mean(scores(pool, float(t)))))
    return {"threshold": float(best), "test_dice_by_image": scores(test, float(best))}


# ---------------------------------------------------------------- statistics and report


def t_interval(x: Sequence[float] | np.ndarray) -> tuple[float, float, float]:
    """Mean and its 95 % t-interval."""
    a = np.asarray(x, dtype=np.float64)
    m = float(a.mean())
    if len(a) < 2:
        return m, m, m
    half = float(stats.t.ppf(0.975, len(a) - 1) * a.std(ddof=1) / np.sqrt(len(a)))
    return m, m - half, m + half


def nauc(curve: Sequence[float], schedule: Sequence[int]) -> float:
    """Area under Dice vs labels divided by the label range: the curve's mean height, in [0, 1]."""
    if len(schedule) < 2:
        return float(curve[0])
    return float(np.trapezoid(curve, schedule) / (schedule[-1] - schedule[0]))


def labels_to_reach(curve: Sequence[float], schedule: Sequence[int], target: float) -> int | None:
    return next((n for n, d in zip(schedule, curve, strict=True) if d >= target), None)


def rounded(x: Any, nd: int = 4) -> Any:
    if isinstance(x, float):
        return round(x, nd)
    if isinstance(x, dict):
        return {k: rounded(v, nd) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [rounded(v, nd) for v in x]
    return x


def summarise(cfg: Config, jobs: list[dict[str, Any]]) -> dict[str, Any]:
    schedule = cfg.schedule
    jobs = sorted(jobs, key=lambda j: j["seed"])
    full = [j["full_dice"] for j in jobs]
    target = 0.95 * float(np.mean(full))
    out: dict[str, Any] = {
        "full_pool_dice": dict(zip(("mean", "ci_low", "ci_high"), t_interval(full), strict=True)),
        "full_pool_dice_per_seed": full,
        "full_pool_dice_by_test_kind": by_test_kind(jobs, [j["full_dice_by_image"] for j in jobs]),
        "target_dice_95": target,
        "baseline_mean_filter": baseline_summary(jobs),
        "strategies": {},
    }
    aucs = {s: [nauc(j["strategies"][s]["curve"], schedule) for j in jobs] for s in STRATEGIES}
    for s in STRATEGIES:
        curves = np.asarray([j["strategies"][s]["curve"] for j in jobs])
        ci = [t_interval(curves[:, i]) for i in range(len(schedule))]
        mean_curve = [c[0] for c in ci]
        per_seed_n = [
            labels_to_reach(j["strategies"][s]["curve"], schedule, 0.95 * j["full_dice"]) for j in jobs
        ]
        picks = [k for j in jobs for k in j["strategies"][s]["picks"]]
        counts = Counter(picks)
        final = [j["strategies"][s]["final_dice"] for j in jobs]
        entry: dict[str, Any] = {
            "dice_mean": mean_curve,
            "dice_ci95": [[c[1], c[2]] for c in ci],
            "dice_per_seed": curves.tolist(),
            "nauc": dict(zip(("mean", "ci_low", "ci_high"), t_interval(aucs[s]), strict=True)),
            "nauc_per_seed": aucs[s],
            "labels_to_95_mean_curve": labels_to_reach(mean_curve, schedule, target),
            "labels_to_95_per_seed": per_seed_n,
            "pick_share": {k: counts[k] / max(len(picks), 1) for k in sorted(set(picks) | {"trap"})},
            "final_dice_by_test_kind": by_test_kind(jobs, final),
        }
        for base in BASELINES:
            if s != base:
                diff = [a - b for a, b in zip(aucs[s], aucs[base], strict=True)]
                m, lo, hi = t_interval(diff)
                entry[f"nauc_minus_{base}"] = {"mean": m, "ci_low": lo, "ci_high": hi, "per_seed": diff}
        out["strategies"][s] = entry
    out["goal"] = goal(out, cfg)
    return out


def by_test_kind(jobs: list[dict[str, Any]], values: list[list[float]]) -> dict[str, float]:
    """Mean Dice per kind of test study, pooled over seeds; ``values``: per-image Dice per job."""
    pooled: dict[str, list[float]] = {}
    for j, dices in zip(jobs, values, strict=True):
        for d, k in zip(dices, j["test_kinds"], strict=True):
            pooled.setdefault(k, []).append(d)
    return {k: float(np.mean(v)) for k, v in sorted(pooled.items())}


def baseline_summary(jobs: list[dict[str, Any]]) -> dict[str, Any]:
    dices = [j["baseline"]["test_dice_by_image"] for j in jobs]
    per_seed = [float(np.mean(d)) for d in dices]
    return {
        "test_dice": dict(zip(("mean", "ci_low", "ci_high"), t_interval(per_seed), strict=True)),
        "test_dice_by_kind": by_test_kind(jobs, dices),
        "thresholds": [j["baseline"]["threshold"] for j in jobs],
    }


def goal(summary: dict[str, Any], cfg: Config) -> dict[str, Any]:
    """Issue 5's goal for the best (highest mean AUC) non-random strategy, chosen after the fact."""
    learned = [s for s in STRATEGIES if s not in BASELINES]
    best = max(learned, key=lambda s: summary["strategies"][s]["nauc"]["mean"])
    e = summary["strategies"][best]
    beats = all(e[f"nauc_minus_{b}"]["ci_low"] > 0 for b in BASELINES)
    n_best = e["labels_to_95_mean_curve"]
    n_random = summary["strategies"]["random"]["labels_to_95_mean_curve"]
    if n_best is None:
        ratio, ratio_ok = None, False
    elif n_random is None:  # random never got there: the ratio is below n_best / max_labels
        ratio, ratio_ok = f"< {n_best / cfg.max_labels:.2f}", n_best / cfg.max_labels <= 0.6
    else:
        ratio, ratio_ok = round(n_best / n_random, 3), n_best / n_random <= 0.6
    return {
        "best_strategy": best,
        "beats_both_randoms_outside_ci": beats,
        "labels_ratio_vs_random": ratio,
        "labels_ratio_at_most_0.6": ratio_ok,
        "met": beats and ratio_ok,
    }


def table(name: str, summary: dict[str, Any], schedule: Sequence[int]) -> str:
    show = [i for i, n in enumerate(schedule) if i == 0 or i == len(schedule) - 1 or n % 8 == 0]
    head = ["strategy", *(f"Dice@{schedule[i]}" for i in show), "nAUC", "d vs random", "d vs strat."]
    head += ["n@95%", "trap", "hard", "rare"]
    lines = [f"\n{name}", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def diff(e: dict[str, Any], base: str) -> str:
        d = e.get(f"nauc_minus_{base}")
        return "-" if d is None else f"{d['mean']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]"

    for s, e in summary["strategies"].items():
        cells = [s]
        for i in show:
            lo, hi = e["dice_ci95"][i]
            cells.append(f"{e['dice_mean'][i]:.3f} ±{(hi - lo) / 2:.3f}")
        a = e["nauc"]
        cells += [f"{a['mean']:.3f} ±{(a['ci_high'] - a['ci_low']) / 2:.3f}", diff(e, "random")]
        cells.append(diff(e, "stratified_random"))
        n = e["labels_to_95_mean_curve"]
        cells.append(str(n) if n is not None else f">{schedule[-1]}")
        share = e["pick_share"]
        cells += [f"{share.get(k, 0.0):.0%}" for k in ("trap", "hard", "rare")]
        lines.append("| " + " | ".join(cells) + " |")
    full, base = summary["full_pool_dice"], summary["baseline_mean_filter"]["test_dice"]
    lines.append(
        f"full pool Dice {full['mean']:.3f} [{full['ci_low']:.3f}, {full['ci_high']:.3f}], "
        f"95% target {summary['target_dice_95']:.3f}; mean filter + threshold {base['mean']:.3f}; "
        f"goal: {summary['goal']}"
    )
    return "\n".join(lines)


def plot(
    report: dict[str, Any],
    path: Path,
    kinds: Sequence[str] = KINDS,
    titles: Sequence[str] = ("heterogeneous pool", "homogeneous control", "what each strategy picked"),
    interval: str = "95% CI",
) -> None:
    """Dice against labels on both pools, the share of picks of each study ``kinds``, and the paired
    nAUC difference to random with its ``interval``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    schedule = report["labels"]
    fig, axes = plt.subplots(1, 4, figsize=(22, 5))
    for ax, key, title in ((axes[0], "mixture", titles[0]), (axes[1], "control", titles[1])):
        summ = report[key]
        for s, e in summ["strategies"].items():
            lo, hi = np.asarray(e["dice_ci95"]).T
            ax.plot(schedule, e["dice_mean"], marker="o", ms=3, label=s, ls="--" if s in BASELINES else "-")
            ax.fill_between(schedule, lo, hi, alpha=0.12)
        ax.axhline(summ["target_dice_95"], color="k", lw=0.8, ls=":", label="95% of full pool")
        ax.axhline(
            summ["baseline_mean_filter"]["test_dice"]["mean"], color="grey", lw=0.8, label="mean filter"
        )
        ax.set(title=f"{title} ({report['variant']})", xlabel="labelled studies", ylabel="test Dice")
        ax.legend(fontsize=7)
    shares = report["mixture"]["strategies"]
    bottom = np.zeros(len(shares))
    for k in kinds:
        v = np.asarray([e["pick_share"].get(k, 0.0) for e in shares.values()])
        axes[2].bar(list(shares), v, bottom=bottom, label=k)
        bottom += v
    axes[2].set(title=titles[2], ylabel="share of picks")
    axes[2].tick_params(axis="x", rotation=30)
    axes[2].legend(fontsize=7)
    others = [s for s in shares if s != "random"]
    for offset, key in ((-0.15, "mixture"), (0.15, "control")):
        d = [report[key]["strategies"][s]["nauc_minus_random"] for s in others]
        mean = np.asarray([x["mean"] for x in d])
        err = np.asarray([[x["mean"] - x["ci_low"] for x in d], [x["ci_high"] - x["mean"] for x in d]])
        axes[3].errorbar(np.arange(len(others)) + offset, mean, yerr=err, fmt="o", capsize=3, label=key)
    axes[3].axhline(0.0, color="k", lw=0.8)
    axes[3].set_xticks(np.arange(len(others)), others, rotation=30)
    axes[3].set(title=f"nAUC minus random (paired, {interval})", ylabel="difference in normalised AUC")
    axes[3].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=("2d", "3d"), default="2d")
    parser.add_argument("--seeds", type=int, help="number of seeds (0..n-1)")
    parser.add_argument("--pool-size", type=int)
    parser.add_argument("--test-size", type=int)
    parser.add_argument("--iters", type=int, help="training iterations per round")
    parser.add_argument("--max-labels", type=int)
    parser.add_argument("--workers", type=int, default=1, help="processes, one torch thread each")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes for CI (< 3 min on 2 cores)")
    parser.add_argument("--note", action="append", default=[], help="a note to record in the JSON")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--cache", type=Path, help="keep finished (pool, seed) jobs here and reuse them")
    args = parser.parse_args(argv)

    cfg = (SMOKE if args.smoke else DEFAULTS)[args.variant]
    overrides = {
        "seeds": args.seeds,
        "pool_size": args.pool_size,
        "test_size": args.test_size,
        "iters": args.iters,
        "max_labels": args.max_labels,
    }
    cfg = replace(cfg, workers=args.workers, **{k: v for k, v in overrides.items() if v is not None})

    t0 = time.perf_counter()
    tasks = [(kind, seed) for seed in range(cfg.seeds) for kind in ("mixture", "control")]
    if cfg.workers > 1:
        with ProcessPoolExecutor(cfg.workers, mp_context=get_context("spawn")) as ex:
            kinds, seeds = zip(*tasks, strict=True)
            jobs = list(ex.map(run_job, [cfg] * len(tasks), kinds, seeds, [args.cache] * len(tasks)))
    else:
        jobs = [run_job(cfg, kind, seed, args.cache) for kind, seed in tasks]
    wall = time.perf_counter() - t0

    report: dict[str, Any] = {
        "benchmark": "label_efficiency",
        "variant": cfg.variant,
        "command": "python benchmarks/label_efficiency.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "config": {**asdict(cfg), "full_pool_iters": cfg.full_iters, "smoke": args.smoke},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__},
        "labels": cfg.schedule,
        "wall_s": round(wall, 1),
        "job_s": [round(j["seconds"], 1) for j in jobs],
        "jobs_from_cache": sum(bool(j.get("from_cache")) for j in jobs),
        "mixture": summarise(cfg, [j for j in jobs if j["kind"] == "mixture"]),
        "control": summarise(cfg, [j for j in jobs if j["kind"] == "control"]),
        "notes": NOTES + args.note,
    }
    report = rounded(report)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"label_efficiency_{cfg.variant}"
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(report, args.out / f"{stem}.png")
    print(json.dumps(report, indent=2))
    print(table("heterogeneous pool", report["mixture"], cfg.schedule), file=sys.stderr)
    print(table("homogeneous control", report["control"], cfg.schedule), file=sys.stderr)
    print(f"\nwall {wall:.0f} s; wrote {args.out / stem}.json/.png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
