"""Pseudo-labels: how much of the gap between few labels and all labels do the unlabelled studies close?

Each seed draws the label-efficiency benchmark's heterogeneous synthetic pool and i.i.d. test set
(``benchmarks/synthetic_pool.py``: easy near-duplicates, hard, rare appearance, unlearnable traps) and
N random studies to label (N = 4 and 8; the 4 are the first of the 8). A small MONAI UNet is trained
from scratch, with the same seed, the same iterations and 16 labelled crops per step in every arm:

- ``labelled_only``: 16 crops of the N labelled studies;
- ``pseudo_masked``: the same 16 labelled crops plus 8 unlabelled ones in the same forward pass, as
  the trainers do (until 2026-11-24 the benchmark split 16 crops 8 + 8, halving the supervision of
  the semi-supervised arms, unlike the product); hard pseudo-labels from an EMA teacher,
  cross-entropy only where the teacher's top probability reaches ``threshold`` (0.9);
- ``pseudo_unmasked``: the same with every voxel's pseudo-label (threshold 0);
- ``mean_teacher``: soft consistency (squared distance of probabilities) to the EMA teacher, masked;
- ``fixmatch``: ``pseudo_masked`` with the strong student view instead of noise (MONAI intensity
  transforms and CutMix, ``server.training.perturb``: the trainers' ``perturbation: "strong"``);
- ``labelled_strong``: the ablation for ``fixmatch``: its 8 extra crops come from the labelled
  studies, with their true labels, under the same strong view, loss and weight ramp. No unlabelled
  study is used: what ``fixmatch`` gains over this arm is what the unlabelled studies add, and what
  this arm gains over ``labelled_only`` is the augmentation's;
- ``bcp``: bidirectional copy-paste (Bai et al. 2023, the issue's strongest cited method): each of
  the 8 extra crops is an unlabelled crop mixed with a labelled one through a box of 2/3 of each side,
  in alternating directions; the target is the true label on the labelled part (weight 1) and the
  teacher's argmax on the unlabelled part (weight 1/2, no confidence mask, as published): the
  trainers' ``perturbation: "copy_paste"``. BCP's pre-training stage and its Dice term on the mixed
  crops are left out (every arm here starts from scratch with one loss recipe);
- ``labelled_copy_paste``: the ablation for ``bcp``: the same mixing, weights and ramp with extra
  labelled crops and their true labels in place of unlabelled crops and the teacher;
- ``all_labelled``: 16 crops of the whole pool, every label revealed (the ceiling).

The semi-supervised arms are ``server.training.semi.SemiSupervision``, the code the trainers run
(teacher on the clean crop, student on the crop plus Gaussian noise, one forward with the labelled
batch, sigmoid ramp-up of the weight, EMA update after each step). The protocol (iterations,
threshold, EMA, ramp-up, noise) was fixed before any result was seen and is not tuned per arm.
``fixmatch`` and ``labelled_strong`` were added later (2026-11-24), after the first three arms had
failed the goal; their strong view was fixed before their first run and is not tuned to it. The arm
named in advance for the goal stays ``pseudo_masked``; the report gives ``fixmatch`` against the same
goal as a second, post-hoc reading. ``bcp`` and ``labelled_copy_paste`` came after ``fixmatch`` had
failed as well (2026-11-24, fifth session), with BCP's published values fixed before their first run;
``bcp`` is read against the goal post hoc too.

Reported per N and arm: test Dice (mean and 95 % t-interval over seeds, and per kind of test study),
the paired difference to labelled-only (95 % t-interval), the gap itself (all labelled minus labelled
only, paired), and for the semi-supervised arms the share of the gap closed,
``(semi - labelled_only) / (all_labelled - labelled_only)``: the ratio of the seed means with a
95 % percentile bootstrap over seeds, and the per-seed ratios with their t-interval. The share only
means something when the gap is above zero outside its interval; the goal says so when it is not.
JSON on stdout, a table on stderr, ``benchmarks/results/pseudo_label.json`` and ``.png``
(``--pool control``: the homogeneous control pool, ``pseudo_label_control.*``).

    .venv/bin/python benchmarks/pseudo_label.py --workers 2          # the full run (5 seeds, 2D 128^2)
    .venv/bin/python benchmarks/pseudo_label.py --smoke --out /tmp/pl  # CI-sized, < 2 min
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.losses import DiceCELoss
from monai.networks.nets import UNet
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic_pool import Study, make_pools

from server.training.perturb import CopyPaste, StrongView
from server.training.semi import (
    SemiSupervision,
    confidence_mask,
    one_hot_labels,
    pseudo_label_loss,
    sigmoid_rampup,
    teacher_probabilities,
)

REPO = Path(__file__).resolve().parent.parent
SEMI_ARMS = {
    # arm: (method, confidence-masked at Config.threshold, the student's view)
    "pseudo_masked": ("pseudo_label", True, "noise"),
    "pseudo_unmasked": ("pseudo_label", False, "noise"),
    "mean_teacher": ("mean_teacher", True, "noise"),
    "fixmatch": ("pseudo_label", True, "strong"),
    "bcp": ("pseudo_label", False, "copy_paste"),  # as published: no confidence mask
}
# No unlabelled study: a semi arm's recipe on extra labelled crops with their true labels.
ABLATIONS = {"labelled_strong": "fixmatch", "labelled_copy_paste": "bcp"}
PRIMARY = "pseudo_masked"  # named in advance for the goal
POST_HOC = ("fixmatch", "bcp")  # added after PRIMARY failed the goal: reported against it, flagged post hoc


@dataclass(frozen=True)
class Config:
    variant: str = "2d"
    seeds: int = 5
    pool_size: int = 150
    test_size: int = 60
    labels: tuple[int, ...] = (4, 8)
    iters: int = 400
    crops: int = 16  # labelled crops per student step, in every arm
    unlabelled_crops: int = 8  # added to each step of the semi-supervised arms, as the trainers do
    crop: int = 48
    lr: float = 6e-3
    channels: tuple[int, ...] = (8, 16, 32)
    threshold: float = 0.9
    ema: float = 0.99
    weight: float = 1.0
    rampup: float = 0.4  # share of the iterations over which the unlabelled weight ramps up
    noise: float = 0.1
    pool: str = "mixture"  # or "control": the homogeneous control pool of the same benchmark
    arms: tuple[str, ...] = (*SEMI_ARMS, *ABLATIONS)
    workers: int = 1
    classes: int = 2  # network outputs, background included (the anatomy pool: 3)

    @property
    def dims(self) -> int:
        return 2 if self.variant == "2d" else 3


DEFAULTS = {
    "2d": Config("2d"),
    "3d": Config("3d", seeds=5, pool_size=60, test_size=24, iters=200, crops=4, unlabelled_crops=2, crop=32),
}
SMOKE = {
    "2d": Config("2d", seeds=2, pool_size=24, test_size=12, iters=20, channels=(4, 8, 16)),
    "3d": Config(
        "3d",
        seeds=2,
        pool_size=12,
        test_size=6,
        iters=6,
        crops=2,
        unlabelled_crops=1,
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
    return UNet(cfg.dims, 1, cfg.classes, cfg.channels, (2,) * (len(cfg.channels) - 1), num_res_units=1)


def sample(
    cfg: Config, images: torch.Tensor, labels: torch.Tensor | None, n: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``n`` random crops (and flips) of random studies; labels cropped alike when given."""
    size = images.shape[2:]
    crop = [min(cfg.crop, s) for s in size]
    xs, ys = [], []
    for i in torch.randint(len(images), (n,), generator=gen).tolist():
        start = [int(torch.randint(s - c + 1, (1,), generator=gen)) for s, c in zip(size, crop, strict=True)]
        window = (slice(None), *(slice(a, a + c) for a, c in zip(start, crop, strict=True)))
        flips = [d + 1 for d in range(cfg.dims) if torch.rand(1, generator=gen).item() < 0.5]
        x = images[i][window]
        xs.append(torch.flip(x, flips) if flips else x)
        if labels is not None:
            y = labels[i][window]
            ys.append(torch.flip(y, flips) if flips else y)
    return torch.stack(xs), (torch.stack(ys) if labels is not None else None)


def unlabelled_batches(cfg: Config, images: torch.Tensor, n: int, seed: int) -> Iterator[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    while True:
        yield sample(cfg, images, None, n, gen)[0]


def train(
    cfg: Config,
    arm: str,
    images: torch.Tensor,
    labels: torch.Tensor,
    unlabelled: torch.Tensor,
    seed: int,
) -> tuple[UNet, dict[str, Any]]:
    torch.manual_seed(seed)
    net = build_net(cfg)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(cfg.iters, 1))
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    gen = torch.Generator().manual_seed(seed)
    semi: SemiSupervision | None = None
    extra_view: StrongView | CopyPaste | None = None
    if arm in ABLATIONS:  # the view of the semi arm it ablates
        extra_view = {"strong": StrongView, "copy_paste": CopyPaste}[SEMI_ARMS[ABLATIONS[arm]][2]](seed + 3)
    if arm in SEMI_ARMS:
        method, masked, view = SEMI_ARMS[arm]
        semi = SemiSupervision(
            net,
            unlabelled_batches(cfg, unlabelled, cfg.unlabelled_crops, seed + 1),
            method=method,
            threshold=cfg.threshold if masked else 0.0,
            weight=cfg.weight,
            rampup=cfg.rampup * cfg.iters,
            ema=cfg.ema,
            noise=cfg.noise,
            perturbation=view,
            generator=torch.Generator().manual_seed(seed + 2),
        )
    net.train()
    for it in range(cfg.iters):
        x, y = sample(cfg, images, labels, cfg.crops, gen)
        assert y is not None
        opt.zero_grad()
        if semi is not None:
            loss = semi.loss(net, loss_fn, x, y, float(it))
        elif extra_view is not None:
            loss = ablation_loss(cfg, net, loss_fn, extra_view, images, labels, x, y, it, gen)
        else:
            loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
        sched.step()
        if semi is not None:
            semi.after_step(net)
    net.eval()
    info: dict[str, Any] = {}
    if semi is not None:
        info = semi.epoch_stats()  # means over the run
        info["teacher"] = semi.teacher
    return net, info


def ablation_loss(
    cfg: Config,
    net: torch.nn.Module,
    loss_fn: DiceCELoss,
    view: StrongView | CopyPaste,
    images: torch.Tensor,
    labels: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    it: int,
    gen: torch.Generator,
) -> torch.Tensor:
    """A semi arm's step with a perfect teacher on labelled crops: the same extra crop count, view,
    unlabelled loss (cross-entropy, every voxel) and weight ramp, the true labels as targets
    (``labelled_strong``: ``fixmatch``'s strong view; ``labelled_copy_paste``: ``bcp``'s copy-paste
    with the labelled batch, the extra crops' part weighted as BCP weights a teacher's)."""
    x2, y2 = sample(cfg, images, labels, cfg.unlabelled_crops, gen)
    assert y2 is not None
    onehot = one_hot_labels(y2, cfg.classes)
    weights = torch.ones_like(onehot[:, 0])
    if isinstance(view, CopyPaste):
        x2, onehot, weights = view(x, one_hot_labels(y, cfg.classes), x2, onehot, weights)
    else:
        x2, onehot = view(x2, onehot)
    logits = net(torch.cat([x, x2]))
    n = x.shape[0]
    extra = pseudo_label_loss(logits[n:], onehot, weights, "pseudo_label")
    return loss_fn(logits[:n], y) + cfg.weight * sigmoid_rampup(float(it), cfg.rampup * cfg.iters) * extra


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    total = int(pred.sum() + truth.sum())
    return 1.0 if total == 0 else 2.0 * float(np.logical_and(pred, truth).sum()) / total


def predict(net: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([teacher_probabilities(net, images[i : i + 8]) for i in range(0, len(images), 8)])


def evaluate(net: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> list[float]:
    """Per test study: the mean Dice of the foreground classes (with two outputs, the foreground's)."""
    probs = predict(net, images)
    pred, classes = probs.argmax(dim=1).numpy(), probs.shape[1]
    return [
        float(np.mean([dice(p == c, t[0] == c) for c in range(1, classes)]))
        for p, t in zip(pred, labels.numpy(), strict=True)
    ]


def pseudo_quality(
    teacher: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, threshold: float
) -> dict[str, float]:
    """The final teacher on the unlabelled pool: voxel accuracy of its pseudo-labels, everywhere and where
    confident, and the confident share (how good the targets the student learnt from were)."""
    probs = predict(teacher, images)
    right = (probs.argmax(dim=1) == labels[:, 0]).float()
    mask = confidence_mask(probs, threshold)
    return {
        "accuracy_all": float(right.mean()),
        "accuracy_confident": float((right * mask).sum() / mask.sum().clamp(min=1)),
        "confident_fraction": float(mask.mean()),
    }


def run_task(cfg: Config, seed: int, n: int, arm: str) -> dict[str, Any]:
    """One arm on one seed (``n`` labels; ``all_labelled`` ignores ``n``)."""
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    data = make_pools(cfg.dims, seed, cfg.pool_size, cfg.test_size)
    mixture = cfg.pool == "mixture"
    pool, test = (data["pool"], data["test"]) if mixture else (data["control_pool"], data["control_test"])
    images, labels = stack(pool)
    order = random.Random(seed).sample(range(len(pool)), max(cfg.labels))
    chosen = order[:n] if arm != "all_labelled" else list(range(len(pool)))
    rest = [i for i in range(len(pool)) if i not in set(chosen)]
    net, info = train(cfg, arm, images[chosen], labels[chosen], images[rest], seed * 1000 + n)
    out: dict[str, Any] = {
        "seed": seed,
        "n": n,
        "arm": arm,
        "test_dice": evaluate(net, *stack(test)),
        "test_kinds": [s.kind for s in test],
        "labelled_kinds": [pool[i].kind for i in chosen] if arm != "all_labelled" else [],
    }
    teacher = info.pop("teacher", None)
    if teacher is not None:
        out["semi"] = info
        out["pseudo_quality"] = pseudo_quality(teacher, images[rest], labels[rest], cfg.threshold)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    print(f"[seed {seed} n {n} {arm}] {out['seconds']:.0f} s", file=sys.stderr, flush=True)
    return out


# ---------------------------------------------------------------- statistics and report


def t_interval(x: Sequence[float] | np.ndarray) -> dict[str, float]:
    a = np.asarray(x, dtype=np.float64)
    m = float(a.mean())
    half = float(stats.t.ppf(0.975, len(a) - 1) * a.std(ddof=1) / np.sqrt(len(a))) if len(a) > 1 else 0.0
    return {"mean": m, "ci_low": m - half, "ci_high": m + half}


def bootstrap_gap(
    semi: np.ndarray, low: np.ndarray, high: np.ndarray, reps: int = 10000, seed: int = 0
) -> dict[str, float]:
    """``mean(semi - low) / mean(high - low)`` with a 95 % percentile bootstrap over seeds."""
    ratio = float((semi - low).mean() / (high - low).mean())
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(semi), size=(reps, len(semi)))
    num, den = (semi[idx] - low[idx]).mean(axis=1), (high[idx] - low[idx]).mean(axis=1)
    boots = num[den > 0] / den[den > 0]
    lo, hi = (
        (float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5)))
        if len(boots)
        else (ratio, ratio)
    )
    return {"mean": ratio, "ci_low": lo, "ci_high": hi}


def summarise(cfg: Config, results: list[dict[str, Any]]) -> dict[str, Any]:
    seeds = list(range(cfg.seeds))
    per_seed = {
        (r["seed"], r["n"] if r["arm"] != "all_labelled" else 0, r["arm"]): float(np.mean(r["test_dice"]))
        for r in results
    }
    high = np.asarray([per_seed[(s, 0, "all_labelled")] for s in seeds])
    out: dict[str, Any] = {"all_labelled": {**t_interval(high), "per_seed": high.tolist()}, "by_labels": {}}
    out["all_labelled"]["dice_by_test_kind"] = by_kind([r for r in results if r["arm"] == "all_labelled"])
    goal_rows = []
    measurable = {}
    for n in cfg.labels:
        low = np.asarray([per_seed[(s, n, "labelled_only")] for s in seeds])
        lows = [r for r in results if r["n"] == n and r["arm"] == "labelled_only"]
        entry: dict[str, Any] = {
            "labelled_only": {
                **t_interval(low),
                "per_seed": low.tolist(),
                "dice_by_test_kind": by_kind(lows),
            },
            # The gap to close: all labelled minus labelled only, paired by seed. Without a gap above zero
            # (its interval) the share of it closed is undefined, whatever the arithmetic gives.
            "gap": t_interval(high - low),
        }
        entry["gap_measurable"] = measurable[str(n)] = entry["gap"]["ci_low"] > 0
        for arm in cfg.arms:
            semi = np.asarray([per_seed[(s, n, arm)] for s in seeds])
            gap_per_seed = (semi - low) / np.where(np.abs(high - low) > 1e-9, high - low, np.nan)
            runs = [r for r in results if r["n"] == n and r["arm"] == arm]
            entry[arm] = {
                **t_interval(semi),
                "per_seed": semi.tolist(),
                "minus_labelled_only": t_interval(semi - low),
                "gap_closed": bootstrap_gap(semi, low, high),
                "gap_closed_per_seed": gap_per_seed.tolist(),
                "gap_closed_per_seed_t": t_interval(gap_per_seed[np.isfinite(gap_per_seed)])
                if np.isfinite(gap_per_seed).sum() > 1
                else None,
                "dice_by_test_kind": by_kind(runs),
            }
            if arm in SEMI_ARMS:  # a teacher and pseudo-labels (the ablations have neither)
                qs = [r["pseudo_quality"] for r in runs]
                entry[arm]["pseudo_quality"] = {k: float(np.mean([q[k] for q in qs])) for k in qs[0]}
                entry[arm]["train_confident_fraction"] = float(
                    np.mean([r["semi"]["confident_fraction"] for r in runs])
                )
                goal_rows.append((n, arm, entry[arm]))
        out["by_labels"][str(n)] = entry
    never_below = all(e["minus_labelled_only"]["ci_high"] >= 0 for _, _, e in goal_rows)
    closes = {str(n): e["gap_closed"]["mean"] for n, arm, e in goal_rows if arm == PRIMARY}
    # A share of a gap that is not there (ceiling not above the floor) is an artefact of the division.
    half = bool(closes) and all(measurable[n] and v >= 0.5 for n, v in closes.items())
    reasons = [
        f"no gap at N = {n}: the all_labelled - labelled_only interval reaches 0"
        for n, ok in measurable.items()
        if not ok
    ]
    reasons += [] if half else [f"{PRIMARY} closes < 50 % of the gap at some N (or did not run)"]
    reasons += [] if never_below else ["an arm is below labelled_only outside its interval"]
    out["goal"] = {
        "primary_arm": PRIMARY,
        "gap_measurable": measurable,
        "gap_closed_primary": closes,
        "primary_at_least_half_at_every_n": half,
        "no_arm_below_labelled_only_outside_ci": never_below,
        "met": all(measurable.values()) and half and never_below,
        "why_not": reasons,
    }
    # The same goal read on each arm added after the primary failed it; not the verdict.
    for late in POST_HOC:
        rows = {str(n): e for n, arm, e in goal_rows if arm == late}
        if not rows:
            continue
        out["goal"].setdefault("post_hoc", {})[late] = {
            "gap_closed": {n: e["gap_closed"]["mean"] for n, e in rows.items()},
            "at_least_half_at_every_n": all(
                measurable[n] and e["gap_closed"]["mean"] >= 0.5 for n, e in rows.items()
            ),
            "not_below_labelled_only_outside_ci": all(
                e["minus_labelled_only"]["ci_high"] >= 0 for e in rows.values()
            ),
        }
    return out


def by_kind(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Mean test Dice per kind of test study (over every seed's test set)."""
    values: dict[str, list[float]] = {}
    for r in runs:
        for d, k in zip(r["test_dice"], r["test_kinds"], strict=True):
            values.setdefault(k, []).append(d)
    return {k: float(np.mean(v)) for k, v in sorted(values.items())}


def table(cfg: Config, summary: dict[str, Any]) -> str:
    head = ["N", "arm", "test Dice", "vs labelled-only", "gap closed (bootstrap)", "gap closed (t, per seed)"]
    head += ["pseudo acc. (confident)", "confident"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def ci(e: dict[str, Any] | None, fmt: str = "{:.3f}", signed: bool = False) -> str:
        if e is None:
            return "-"
        f = fmt.replace("{:", "{:+") if signed else fmt
        return f"{f.format(e['mean'])} [{f.format(e['ci_low'])}, {f.format(e['ci_high'])}]"

    for n, entry in summary["by_labels"].items():
        lines.append(f"| {n} | labelled_only | {ci(entry['labelled_only'])} | - | - | - | - | - |")
        for arm in cfg.arms:
            e = entry[arm]
            q = e.get("pseudo_quality")
            quality = "-" if q is None else f"{q['accuracy_all']:.3f} ({q['accuracy_confident']:.3f})"
            confident = "-" if q is None else f"{q['confident_fraction']:.0%}"
            lines.append(
                f"| {n} | {arm} | {ci(e)} | {ci(e['minus_labelled_only'], signed=True)} | "
                f"{ci(e['gap_closed'], '{:.0%}') if entry['gap_measurable'] else 'n/a: no gap'} | "
                f"{ci(e['gap_closed_per_seed_t'], '{:.0%}') if entry['gap_measurable'] else 'n/a'} | "
                f"{quality} | {confident} |"
            )
        lines.append(
            f"| {n} | all_labelled | {ci(summary['all_labelled'])} | {ci(entry['gap'], signed=True)} "
            "(the gap) | - | - | - | - |"
        )
    lines.append(f"goal: {summary['goal']}")
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = report["summary"]
    ns = list(summary["by_labels"])
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    by = summary["by_labels"]
    seeds = len(by[ns[0]]["labelled_only"]["per_seed"])
    width = 0.8 / (len(report["config"]["arms"]) + 2)
    high = summary["all_labelled"]
    arms = ("labelled_only", *report["config"]["arms"])
    for k, arm in enumerate(arms):
        e = [by[n][arm] for n in ns]
        x = np.arange(len(ns)) + (k - (len(arms) - 1) / 2) * width
        err = np.asarray([[v["mean"] - v["ci_low"], v["ci_high"] - v["mean"]] for v in e]).T
        axes[0].bar(x, [v["mean"] for v in e], width, yerr=err, capsize=3, label=arm)
    axes[0].axhline(high["mean"], color="k", ls="--", lw=1, label="all labelled")
    axes[0].axhspan(high["ci_low"], high["ci_high"], color="k", alpha=0.08)
    axes[0].set(xticks=range(len(ns)), xticklabels=[f"N = {n}" for n in ns], ylabel="test Dice")
    axes[0].set_title(
        f"{report['config']['pool']} pool ({report['variant']}): test Dice, 95% CI over {seeds} seeds"
    )
    axes[0].legend(fontsize=7)
    shown = [*report["config"]["arms"], "all_labelled"]
    for k, arm in enumerate(shown):
        key = "minus_labelled_only"
        e = [by[n]["gap"] if arm == "all_labelled" else by[n][arm][key] for n in ns]
        x = np.arange(len(ns)) + (k - (len(shown) - 1) / 2) * width * 1.5
        err = np.clip(np.asarray([[v["mean"] - v["ci_low"], v["ci_high"] - v["mean"]] for v in e]).T, 0, None)
        axes[1].errorbar(x, [v["mean"] for v in e], yerr=err, fmt="o", capsize=4, label=arm)
    axes[1].axhline(0.0, color="k", lw=0.8)
    axes[1].set(
        xticks=range(len(ns)), xticklabels=[f"N = {n}" for n in ns], ylabel="test Dice - labelled only"
    )
    axes[1].set_title("paired by seed, 95% t-interval (all_labelled: the gap to close)")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def rounded(x: Any, nd: int = 4) -> Any:
    if isinstance(x, float):
        return None if not np.isfinite(x) else round(x, nd)
    if isinstance(x, dict):
        return {k: rounded(v, nd) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [rounded(v, nd) for v in x]
    return x


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=("2d", "3d"), default="2d")
    parser.add_argument("--seeds", type=int)
    parser.add_argument("--iters", type=int)
    parser.add_argument("--pool", choices=("mixture", "control"), default="mixture")
    parser.add_argument(
        "--arms", nargs="+", choices=(*SEMI_ARMS, *ABLATIONS), help="semi-supervised arms and ablations"
    )
    parser.add_argument("--workers", type=int, default=1, help="processes, one torch thread each")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes for CI (< 2 min on 2 cores)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args(argv)
    cfg = (SMOKE if args.smoke else DEFAULTS)[args.variant]
    overrides = {"seeds": args.seeds, "iters": args.iters, "arms": tuple(args.arms) if args.arms else None}
    cfg = replace(
        cfg, workers=args.workers, pool=args.pool, **{k: v for k, v in overrides.items() if v is not None}
    )

    # The slow arms first, so the pool's last tasks are short ones.
    tasks = [(s, 0, "all_labelled") for s in range(cfg.seeds)]
    tasks = [(s, n, arm) for s in range(cfg.seeds) for n in cfg.labels for arm in cfg.arms] + tasks
    tasks += [(s, n, "labelled_only") for s in range(cfg.seeds) for n in cfg.labels]
    t0 = time.perf_counter()
    if cfg.workers > 1:
        with ProcessPoolExecutor(cfg.workers, mp_context=get_context("spawn")) as ex:
            seeds, ns, arms = zip(*tasks, strict=True)
            results = list(ex.map(run_task, [cfg] * len(tasks), seeds, ns, arms))
    else:
        results = [run_task(cfg, s, n, arm) for s, n, arm in tasks]
    wall = time.perf_counter() - t0

    summary = summarise(cfg, results)
    suffix = ("" if cfg.variant == "2d" else "_3d") + ("" if cfg.pool == "mixture" else "_control")
    report: dict[str, Any] = {
        "benchmark": "pseudo_label",
        "variant": cfg.variant,
        "command": "python benchmarks/pseudo_label.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "config": {**asdict(cfg), "smoke": args.smoke},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__},
        "wall_s": round(wall, 1),
        "cpu_s_per_task": {f"{r['seed']}/{r['n']}/{r['arm']}": r["seconds"] for r in results},
        "tasks": results,  # per (seed, N, arm): test Dice per test study and its kind, semi-supervised stats
        "summary": summary,
        "notes": [
            "gap closed = (semi - labelled_only) / (all_labelled - labelled_only) on the seed-mean test Dice;"
            " its interval is a 95% percentile bootstrap over seeds (10k resamples). gap_closed_per_seed_t is"
            " the t-interval of the per-seed ratios (unstable when a seed's gap is small).",
            "pseudo_masked is the arm named in advance for the goal. The goal also needs a gap: all_labelled"
            " above labelled_only outside its paired interval; without one the share closed is undefined.",
            "Every arm: the same initial weights and crop sampler seed per (seed, N), the same iterations,"
            " 16 labelled crops per student step (semi arms and labelled_strong: plus 8 more crops in the"
            " same forward); the student is evaluated.",
            "fixmatch and labelled_strong were added after pseudo_masked (named in advance) had failed the"
            " goal; goal.post_hoc reads the goal on fixmatch and is not the verdict.",
            "bcp and labelled_copy_paste were added later still (2026-11-24, fifth session), after fixmatch"
            " had failed too; BCP's published values (box 2/3 of each side, teacher part weight 1/2, no"
            " confidence mask) were fixed before their first run. goal.post_hoc reads bcp the same way.",
            "pseudo_quality: the final EMA teacher's voxel accuracy on the unlabelled pool, everywhere and"
            " where its top probability reaches the threshold, and that confident share.",
        ],
    }
    report = rounded(report)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"pseudo_label{suffix}"
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(report, args.out / f"{stem}.png")
    print(json.dumps(report, indent=2))
    print(table(cfg, report["summary"]), file=sys.stderr)
    print(f"\nwall {wall:.0f} s; wrote {args.out / stem}.json/.png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
