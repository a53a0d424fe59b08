r"""Interactive segmentation: Dice per click and clicks to 85 % / 90 % Dice (NoC) against the automatic model.

Protocol (fixed before the first run; not tuned after it):

- Pool: synthetic 64^3 MR-like volumes (``make_study``), three structures: ``organ`` (a large
  ellipsoid), ``lesion`` (a small sphere inside the organ with low contrast: +0.25..0.6 on a noise of
  0.2) and ``vessel`` (a thin tube across the volume), with a smooth bias field, and in half of the
  studies an unlabelled lesion-like distractor outside the organ. 24 training studies (seeds 0-23),
  12 test studies (seeds 1000-1011).
- Models: the segmentation app's automatic U-Net (``light`` channels) and its DeepEdit model (the same
  U-Net with one guidance channel per label), ``preset mr``, native spacing, 64^3 windows; each
  trained with the product's trainers (``SegmentationTrainer``, ``DeepEditTrainer``) for the same
  ``--epochs`` (default 40), learning rate 1e-3, batch 1, seed 0, the last 4 training studies held out.
- Clicks (the standard protocol, per structure): the error region is where the prediction and the
  truth disagree about the structure; the click goes to the voxel of the largest connected error
  region farthest from its edge, labelled with what the truth says there (the structure, another
  structure, or background). Clicks accumulate; each is one call of the DeepEdit task on the study's
  file, the way ``/infer`` runs it. Dice of the structure after 0, 1, 3, 5 and 10 clicks; NoC@85 and
  NoC@90 are the clicks needed to reach that Dice (10 when never reached within 10, counted apart).
- Reported over all structure instances and over those where the automatic model is below 80 % Dice
  (the goal: NoC@90 <= 5 there). Two arms of the same trained DeepEdit model: ``network`` (param
  ``click_consistency`` off: the network alone) and ``consistent`` (param ``click_consistency`` on:
  each click the network ignored relabels its region, ``server/inference/click_consistency.py``, a rule fixed
  before its first run here). The goals are read on ``consistent`` (the third registered run below adds
  an arm and reads them on each). Seconds per click: the DeepEdit task on a 128^3 volume (file in, file
  out), median of 10 calls with one click more each, on this machine's CPU (2 threads) and on CUDA when
  present (per arm since the third registered run).

Prints JSON and a table; writes ``benchmarks/results/interactive.json``.

    .venv/bin/python benchmarks/interactive.py                 # about 25 minutes on 2 quiet CPU cores
    .venv/bin/python benchmarks/interactive.py --epochs 2 --train 6 --test 2 --out /tmp/i.json  # smoke

Registered run, 2026-12-03, fixed before its result: the default run's best checkpoints were both
from epoch 39 of 40 (the validation Dice still rising), so the training budget is the first suspect
for NoC@90; the same protocol at four times the epochs, nothing else changed, is

    .venv/bin/python benchmarks/interactive.py --epochs 160 --out benchmarks/results/interactive_e160.json

and is reported beside the default run, whatever it shows.

Registered run, 2026-12-03 (second), fixed before its result: on development studies outside the test
set (``interactive_probe.py --question clicks``, ``--question sigma``) the network ignores most clicks,
which sit in error regions one or two voxels thick, and a guidance Gaussian of sigma 1 voxel instead of
MONAI's 3 halved the ignored clicks at 40 epochs without raising the Dice there. The same protocol as
the 160-epoch run with the DeepEdit model trained and called with sigma 1 (``--sigma``), nothing else
changed (the automatic model is the 160-epoch run's; the consistency rule keeps its 12-voxel reach), is

    .venv/bin/python benchmarks/interactive.py --epochs 160 --sigma 1 \
        --out benchmarks/results/interactive_e160_sigma1.json

and is reported beside the 160-epoch run, whatever it shows.

Registered run, 2026-12-03 (third), fixed before its result: a third arm, ``bias`` (param ``click_bias``
on, ``click_consistency`` off: each click's label raised around it until it leads there,
``server/inference/click_bias.py``, its first setting, chosen on development studies outside the test
set), beside ``network`` and ``consistent``, at the default 40 epochs. The kept checkpoints of the first
default run were lost with its machine, so both models are trained again (same code, same settings: a
new training, whose network figures differ from the first run's by one training's spread). Goals are
reported for every arm. Product rule fixed with it: ``click_bias`` is on by default if, in this run,
``bias`` is at least ``network`` in Dice after 1, 3, 5 and 10 clicks on all structures and at most it
in NoC@90 on all structures; otherwise it stays off.

    .venv/bin/python benchmarks/interactive.py --out benchmarks/results/interactive_bias.json

Registered run, 2026-12-03 (fourth), fixed before its result: on the development studies the click bias
on a 160-epoch DeepEdit model (trained again as above) reached NoC@90 3.92 (``interactive_probe.py
--question refine --epochs 160``; the network alone 6.25), which meets the rule written before that
probe for a test-set run (NoC@90 <= 4 there). The 160-epoch protocol with the three arms, nothing else
changed (both models trained again: the 160-epoch run's checkpoints were lost with its machine); the
goal is read on ``bias``, the product's default, and reported whatever it shows:

    .venv/bin/python benchmarks/interactive.py --epochs 160 \
        --out benchmarks/results/interactive_e160_bias.json

Run after a fix, 2026-12-03 (fifth; not blind): a curve of the fourth run's test studies (a lesion flat for
six clicks) showed the click bias leaving a click unhonoured when two clicks of different labels sat a
few voxels apart (three rounds over the clicks were too few), and the fix (rounds until every click
leads) came from it. The same protocol on the fourth run's kept checkpoints, nothing else changed, to
report what the shipped code does; reported beside the fourth whatever it shows, and no goal is claimed
from it:

    .venv/bin/python benchmarks/interactive.py --epochs 160 \
        --out benchmarks/results/interactive_e160_bias_fix.json

Registered run, 2026-12-03 (sixth), fixed before its result: on the development studies the kept
160-epoch DeepEdit model trained 160 epochs more (``--more 160``: the product's retraining from the
published version; its best checkpoint by validation Dice came at epoch 52 of the 160 more) reached, with
the click bias, NoC@90 2.50 against 3.92 for the 160-epoch model (``interactive_probe.py --question refine
--epochs 160 --more 160``; the network alone 3.00 against 6.25), which meets the rule written before that
probe for a test-set run (at least 0.5 below the 160-epoch model's). The same protocol on that model, the
automatic model the kept 160-epoch one (so the goal's subset is the fourth and fifth runs' 14 structures),
nothing else changed; the goal is read on ``bias`` and reported whatever it shows:

    .venv/bin/python benchmarks/interactive.py --epochs 160 --more 160 \
        --out benchmarks/results/interactive_e160_more160.json

Registered run, 2026-12-03 (seventh), fixed before its development result and run only if that meets the
rule: the DeepEdit trainer simulates at most 3 click rounds per training step (``max_interactions``), where
MONAI Label's DeepEdit trainers simulate 10 to 20, so the network never meets the 5 to 10 accumulated
clicks of this protocol in training (the curves flatten after the third click). The kept 160-epoch model
trained 80 epochs more with 10 rounds (``--more 80 --interactions 10``: half the further epochs of the
sixth run's model). Rule: a test-set run if on the development studies (``interactive_probe.py --question
refine --epochs 160 --more 80 --interactions 10``) the click bias reaches NoC@90 <= 2.50 and Dice after 10
clicks >= 0.911 (the sixth run's model there: 2.50 and 0.921). The same protocol, the automatic model the
kept 160-epoch one, nothing else changed; the goal read on ``bias`` and reported whatever it shows:

    .venv/bin/python benchmarks/interactive.py --epochs 160 --more 80 --interactions 10 \
        --out benchmarks/results/interactive_e160_more80_i10.json

Its development result did not meet the rule (click bias NoC@90 3.42, Dice after 10 clicks 0.922), so
this run was not made.

``--interactions N`` trains the DeepEdit model with N simulated click rounds per step (the trainer's
``max_interactions``, 3 by default); with ``--more`` only the further training uses it.

``--click-loss W`` trains the DeepEdit model with the trainer's clicked-error loss at weight W; no
registered run uses it yet (its development figures: ``interactive_probe.py --question focus``).

``--more N`` evaluates the DeepEdit model trained N epochs more from its kept checkpoint (the product's
retraining from a model's published version, ``TrainContext.initial_weights``; the optimiser starts
afresh), kept beside it; the automatic model stays the kept one, so the goal's subset does not move.

Trained checkpoints are kept in ``--checkpoints`` and reused, so an inference-side change is measured
without training again. Each model's file is named by the epochs, the training studies and a hash of the
code that trains it (the pool, this script's training call, and that model's trainers, network,
intensity transforms and, for DeepEdit, the guidance signal's functions and its sigma:
:data:`TRAINING_CODE`): a change to any of these trains that model again; a change to the rest of the
inference code does not. ``--retrain`` trains both again regardless.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from scipy import ndimage

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from server.inference.deepedit import (  # noqa: E402
    GUIDANCE_SIGMA,
    DeepEditTask,
    guidance_channels,
    guidance_signal,
)
from server.inference.request import InferRequest  # noqa: E402
from server.inference.segmentation import SegmentationConfig, SegmentationTask  # noqa: E402
from server.inference.transforms import intensity_transform  # noqa: E402
from server.training.base import TrainContext, load_state_dict  # noqa: E402
from server.training.deepedit import DeepEditTrainer  # noqa: E402
from server.training.segmentation import SegmentationTrainer  # noqa: E402

LABELS = {"organ": 1, "lesion": 2, "vessel": 3}
CLICKS = (0, 1, 3, 5, 10)
EPOCHS, TRAIN_STUDIES = 40, 24  # the default run, whose checkpoints interactive_probe.py reuses
MAX_CLICKS = 10
# Each arm's params: the network alone, with the image rule, with the click bias.
ARMS = {
    "network": {"click_consistency": False, "click_bias": False},
    "consistent": {"click_consistency": True, "click_bias": False},
    "bias": {"click_consistency": False, "click_bias": True},
}
AUTO_BELOW = 0.80  # the goal's subset: structures the automatic model gets below 80 % Dice
GOAL_NOC90 = 5.0
GOAL_SECONDS = 1.0
# The DeepEdit trainer's simulated click rounds per training step unless --interactions says otherwise.
INTERACTIONS: int = inspect.signature(DeepEditTrainer).parameters["max_interactions"].default


def make_study(seed: int, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """An MR-like volume and its labels (0 background, 1 organ, 2 lesion, 3 vessel)."""
    r = np.random.default_rng(seed)
    s = size / 64
    g = np.mgrid[:size, :size, :size].astype(np.float32)
    label = np.zeros((size, size, size), np.uint8)
    image = np.zeros((size, size, size), np.float32)

    def ellipsoid(centre: np.ndarray, radii: np.ndarray) -> np.ndarray:
        return (((g - centre[:, None, None, None]) / radii[:, None, None, None]) ** 2).sum(0) <= 1.0

    body = ellipsoid(np.full(3, size / 2), np.full(3, size * 0.46))
    image[body] = 0.3
    organ_c = size / 2 + r.uniform(-6, 6, 3) * s
    organ = ellipsoid(organ_c, r.uniform(11, 17, 3) * s) & body
    image[organ] = 1.0
    label[organ] = 1
    inside = np.argwhere(ndimage.binary_erosion(organ, iterations=int(6 * s)))
    lesion_c = inside[r.integers(len(inside))].astype(np.float32) if len(inside) else organ_c
    lesion = ellipsoid(lesion_c, np.full(3, r.uniform(3, 6) * s))
    image[lesion] = 1.0 + r.uniform(0.25, 0.6)
    label[lesion] = 2
    if r.random() < 0.5:  # a lesion-like blob outside the organ, not labelled
        outside = np.argwhere(body & ~ndimage.binary_dilation(organ, iterations=int(4 * s)))
        if len(outside):
            c = outside[r.integers(len(outside))].astype(np.float32)
            image[ellipsoid(c, np.full(3, r.uniform(3, 6) * s)) & body] = 1.0 + r.uniform(0.25, 0.6)
    axis = int(r.integers(3))
    other = [a for a in range(3) if a != axis]
    offset = size / 2 + r.uniform(-12, 12, 2) * s
    tube = ((g[other[0]] - offset[0]) ** 2 + (g[other[1]] - offset[1]) ** 2) <= (r.uniform(1.5, 2.5) * s) ** 2
    tube &= body
    image[tube] = 1.4
    label[tube] = 3
    image = ndimage.gaussian_filter(image, 0.8)
    bias = 1.0 + 0.2 * (g[int(r.integers(3))] / size - 0.5) * r.choice([-1, 1])
    image = image * bias + r.normal(0, 0.2, image.shape).astype(np.float32)
    return image.astype(np.float32), label


def write_pool(folder: Path, seeds: range, size: int = 64) -> list[dict[str, str]]:
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for seed in seeds:
        image, label = make_study(seed, size)
        ipath, lpath = folder / f"s{seed}.nii.gz", folder / f"s{seed}_label.nii.gz"
        nib.save(nib.Nifti1Image(image, np.eye(4)), str(ipath))
        nib.save(nib.Nifti1Image(label, np.eye(4)), str(lpath))
        items.append({"image": str(ipath), "label": str(lpath)})
    return items


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    total = pred.sum() + truth.sum()
    return 1.0 if total == 0 else float(2.0 * (pred & truth).sum() / total)


def deepest_voxel(mask: np.ndarray) -> list[int] | None:
    """The voxel of the largest connected region of ``mask`` farthest from its edge; none when empty."""
    if not mask.any():
        return None
    regions, n = ndimage.label(mask)
    sizes = ndimage.sum(mask, regions, range(1, n + 1))
    largest = regions == (int(np.argmax(sizes)) + 1)
    depth = ndimage.distance_transform_edt(np.pad(largest, 1))[1:-1, 1:-1, 1:-1]
    return [int(v) for v in np.unravel_index(int(np.argmax(depth)), largest.shape)]


def next_click(pred: np.ndarray, truth: np.ndarray, value: int) -> list[int] | None:
    """The voxel of the largest error region (for structure ``value``) farthest from its edge."""
    return deepest_voxel((pred == value) != (truth == value))


def run_task(task: Any, net: torch.nn.Module, image: Path, params: dict[str, Any], work: Path) -> np.ndarray:
    request = InferRequest(task.__class__.__name__, image, ".nii.gz", work, params)
    result = task.run(request, [net], torch.device("cpu"))
    assert result.file is not None
    return np.asarray(nib.load(str(result.file)).dataobj)


def train(trainer: Any, items: list[dict[str, str]], out: Path, epochs: int) -> tuple[Path, float]:
    t = time.perf_counter()
    held = [d["image"] for d in items[-4:]]
    result = trainer.run(
        TrainContext(
            datalist=items,
            output_dir=out,
            params={"max_epochs": epochs, "early_stop_patience": -1, "learning_rate": 1e-3},
            validation=held,
        )
    )
    assert result.best_checkpoint is not None
    return result.best_checkpoint, time.perf_counter() - t


def loaded(task: Any, checkpoint: Path) -> torch.nn.Module:
    net: torch.nn.Module = task.network()
    net.load_state_dict(load_state_dict(checkpoint, torch.device("cpu")))
    return net.eval()


def evaluate(
    auto: tuple[Any, torch.nn.Module],
    edit: tuple[Any, torch.nn.Module],
    items: list[dict[str, str]],
    work: Path,
    flag: dict[str, bool],
) -> list[dict[str, Any]]:
    names = {v: k for k, v in LABELS.items()}
    rows = []
    for item in items:
        truth = np.asarray(nib.load(item["label"]).dataobj)
        auto_pred = run_task(*auto, Path(item["image"]), {}, work)
        for name, value in LABELS.items():
            if not (truth == value).any():
                continue
            clicks: dict[str, list[list[int]]] = {}
            pred = run_task(*edit, Path(item["image"]), flag, work)
            curve = [dice(pred == value, truth == value)]
            for _ in range(MAX_CLICKS):
                point = next_click(pred, truth, value)
                if point is None:
                    curve.append(curve[-1])
                    continue
                owner = int(truth[tuple(point)])
                clicks.setdefault(names.get(owner, "background"), []).append(point)
                pred = run_task(*edit, Path(item["image"]), {**clicks, "label": name, **flag}, work)
                curve.append(dice(pred == value, truth == value))
            rows.append(
                {
                    "study": Path(item["image"]).name,
                    "structure": name,
                    "auto_dice": dice(auto_pred == value, truth == value),
                    "dice_by_clicks": [round(d, 4) for d in curve],
                }
            )
    return rows


def noc(curve: list[float], target: float) -> tuple[int, bool]:
    for n, d in enumerate(curve):
        if d >= target:
            return n, True
    return MAX_CLICKS, False


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    if not rows:
        return {"instances": 0}
    out: dict[str, Any] = {
        "instances": len(rows),
        "auto_dice": round(statistics.mean(r["auto_dice"] for r in rows), 4),
        "dice_after": {
            str(n): round(statistics.mean(r["dice_by_clicks"][n] for r in rows), 4) for n in CLICKS
        },
    }
    for target in (0.85, 0.90):
        reached = [noc(r["dice_by_clicks"], target) for r in rows]
        key = f"noc@{int(target * 100)}"
        out[key] = round(statistics.mean(n for n, _ in reached), 3)
        out[f"{key}_not_reached"] = sum(1 for _, ok in reached if not ok)
    return out


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """All instances, those the automatic model gets below :data:`AUTO_BELOW`, and each structure."""
    return {
        "all": summarise(rows),
        "auto_below_80": summarise([r for r in rows if r["auto_dice"] < AUTO_BELOW]),
        "by_structure": {name: summarise([r for r in rows if r["structure"] == name]) for name in LABELS},
    }


def noc90_met(subset: dict[str, Any]) -> bool:
    """The NoC@90 goal on a summarised subset (false when it is empty)."""
    return bool(subset.get("instances", 0) > 0 and subset["noc@90"] <= GOAL_NOC90)


def seconds_per_click(
    task: DeepEditTask, net: torch.nn.Module, work: Path, device: str, flag: dict[str, bool], arm: str
) -> dict[str, Any]:
    image, label = make_study(4242, size=128)
    path = work / "big.nii.gz"
    nib.save(nib.Nifti1Image(image, np.eye(4)), str(path))
    dev = torch.device(device)
    net = net.to(dev)
    organ = np.argwhere(label == 1)
    times = []
    for n in range(11):
        points = [[int(v) for v in organ[i]] for i in np.linspace(0, len(organ) - 1, n + 1).astype(int)]
        request = InferRequest("deepedit", path, ".nii.gz", work, {"organ": points, **flag})
        t = time.perf_counter()
        task.run(request, [net], dev)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    median = round(statistics.median(times[1:]), 4)
    return {"device": device, "arm": arm, "volume": [128, 128, 128], "median_s": median}


# The code that trains each model: a change to any of these files trains that model again.
TRAINING_CODE = {
    "automatic": (
        "server/training/base.py",
        "server/training/segmentation.py",
        "server/inference/networks.py",
        "server/inference/transforms.py",
    ),
    "deepedit": (
        "server/training/base.py",
        "server/training/segmentation.py",
        "server/training/deepedit.py",
        "server/inference/networks.py",
        "server/inference/transforms.py",
    ),
}


def task_config() -> SegmentationConfig:
    """Both models' inference settings: preset ``mr``, native spacing, 64^3 windows."""
    return SegmentationConfig(preset="mr", spacing=None, roi_size=(64, 64, 64))


def trainer_settings(config: SegmentationConfig) -> dict[str, Any]:
    """What every trainer here is given besides its labels and network: the task's windows and
    intensity transform, native spacing, a fifth of the studies for validation."""
    return {
        "roi_size": config.roi_size,
        "spacing": None,
        "intensity": lambda key: intensity_transform(key, "mr", None),
        "val_split": 0.2,
    }


def checkpoint(
    root: Path,
    model: str,
    epochs: int,
    n_train: int,
    sigma: float | None = None,
    click_loss: float = 0.0,
    more: int = 0,
    interactions: int = INTERACTIONS,
) -> Path:
    """Where ``model`` (``automatic`` or ``deepedit``, with its guidance ``sigma``, ``click_loss`` and
    simulated click rounds ``interactions``) trained by this code at these settings is kept: named by a
    hash of the pool, :func:`train` and the model's :data:`TRAINING_CODE`, so a change to the DeepEdit
    code leaves the automatic model's checkpoint in use; with ``more``, that model trained ``more`` epochs
    further (:func:`starting_from`), ``interactions`` then the further training's. Its training seconds
    are kept beside it (``.json``)."""
    code = inspect.getsource(make_study) + inspect.getsource(train)
    code += "".join((REPO / f).read_text() for f in TRAINING_CODE[model])
    if model == "deepedit":  # its guidance signal, not the rest of the inference module
        code += inspect.getsource(guidance_channels) + inspect.getsource(guidance_signal)
        code += f"sigma={float(sigma if sigma is not None else GUIDANCE_SIGMA)}"
        code += f"click_loss={float(click_loss)}" if click_loss else ""
        code += f"interactions={interactions}" if interactions != INTERACTIONS and not more else ""
    name = f"{model}_{hashlib.sha256(code.encode()).hexdigest()[:12]}" + (f"_more{more}" if more else "")
    name += f"_i{interactions}" if more and interactions != INTERACTIONS else ""
    return root / f"e{epochs}_t{n_train}" / f"{name}.pt"


def trained(
    trainer: Any, path: Path, items: list[dict[str, str]], work: Path, epochs: int, again: bool
) -> float:
    """Train into ``path`` unless it is kept (or ``again``); the seconds its training took."""
    seconds = path.with_suffix(".json")
    if again or not (seconds.is_file() and path.is_file()):
        best, took = train(trainer, items, work, epochs)
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(best, path)
        seconds.write_text(json.dumps({"seconds": took}))
    return float(json.loads(seconds.read_text())["seconds"])


def starting_from(trainer: Any, start: Path) -> Any:
    """``trainer``, made to start from the kept checkpoint ``start`` instead of random weights: what the
    product's retraining does from a model's published version (``TrainContext.initial_weights``; the
    optimiser starts afresh, as it does there). :func:`train`'s code is part of the checkpoints' names,
    so the start is set on the trainer rather than passed through it."""
    load = trainer.load_initial
    trainer.load_initial = lambda network, _weights, device: load(network, start, device)
    return trainer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=EPOCHS)
    ap.add_argument("--train", type=int, default=TRAIN_STUDIES)
    ap.add_argument("--test", type=int, default=12)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "interactive.json")
    ap.add_argument("--checkpoints", type=Path, default=REPO / "benchmarks" / ".cache" / "interactive")
    ap.add_argument("--sigma", type=float, default=GUIDANCE_SIGMA, help="guidance Gaussian, voxels")
    ap.add_argument("--click-loss", type=float, default=0.0, help="DeepEdit's clicked-error loss weight")
    ap.add_argument(
        "--more", type=int, default=0, help="DeepEdit: train this many epochs more from its checkpoint"
    )
    ap.add_argument(
        "--interactions",
        type=int,
        default=INTERACTIONS,
        help="DeepEdit: simulated click rounds per training step (with --more: the further training's)",
    )
    ap.add_argument("--retrain", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(2)
    config = task_config()
    auto_task = SegmentationTask(LABELS, config)
    edit_task = DeepEditTask(LABELS, config, sigma=args.sigma)
    common = trainer_settings(config)
    with tempfile.TemporaryDirectory(prefix="ll-interactive-") as tmp:
        root = Path(tmp)
        train_items = write_pool(root / "train", range(args.train))
        test_items = write_pool(root / "test", range(1000, 1000 + args.test))
        work = root / "work"
        work.mkdir()
        first_rounds = INTERACTIONS if args.more else args.interactions  # --more: the further training's

        def deepedit_checkpoint(more: int, interactions: int) -> Path:
            return checkpoint(
                args.checkpoints,
                "deepedit",
                args.epochs,
                args.train,
                args.sigma,
                args.click_loss,
                more,
                interactions,
            )

        paths = {
            "automatic": checkpoint(args.checkpoints, "automatic", args.epochs, args.train),
            "deepedit": deepedit_checkpoint(0, first_rounds),
        }

        def deepedit_trainer(interactions: int) -> DeepEditTrainer:
            return DeepEditTrainer(
                labels=LABELS,
                network_factory=edit_task.network,
                guidance_sigma=args.sigma,
                click_loss=args.click_loss,
                max_interactions=interactions,
                **common,
            )

        trainers = {
            "automatic": SegmentationTrainer(labels=LABELS, network_factory=auto_task.network, **common),
            "deepedit": deepedit_trainer(first_rounds),
        }
        seconds = {
            name: trained(trainer, paths[name], train_items, root / name, args.epochs, args.retrain)
            for name, trainer in trainers.items()
        }
        if args.more:  # the DeepEdit model evaluated is the kept one trained further
            start = paths["deepedit"]
            paths["deepedit"] = deepedit_checkpoint(args.more, args.interactions)
            further = starting_from(deepedit_trainer(args.interactions), start)
            seconds["deepedit_more"] = trained(
                further, paths["deepedit"], train_items, root / "more", args.more, args.retrain
            )
        auto = (auto_task, loaded(auto_task, paths["automatic"]))
        edit = (edit_task, loaded(edit_task, paths["deepedit"]))
        arms = {arm: evaluate(auto, edit, test_items, work, flag) for arm, flag in ARMS.items()}
        timing = [seconds_per_click(edit_task, edit[1], work, "cpu", flag, arm) for arm, flag in ARMS.items()]
        if torch.cuda.is_available():
            net = loaded(edit_task, paths["deepedit"])
            timing += [seconds_per_click(edit_task, net, work, "cuda", f, arm) for arm, f in ARMS.items()]
    by_arm = {arm: summary(rows) for arm, rows in arms.items()}
    report = {
        "protocol": "benchmarks/interactive.py docstring",
        "machine": {"cpu_count": torch.get_num_threads(), "platform": platform.platform()},
        "epochs": args.epochs,
        "guidance_sigma": args.sigma,
        "click_loss": args.click_loss,
        "deepedit_more_epochs": args.more,
        "deepedit_interactions": args.interactions,
        "train_studies": args.train,
        "test_studies": args.test,
        "train_seconds": {k: round(v, 1) for k, v in seconds.items()},
        "arms": by_arm,
        "seconds_per_click": timing,
        "goals": {
            "noc90_auto_below_80": GOAL_NOC90,
            "noc90_met": {arm: noc90_met(summ["auto_below_80"]) for arm, summ in by_arm.items()},
            "seconds_per_click_cpu": GOAL_SECONDS,
            "seconds_met": {t["arm"]: t["median_s"] <= GOAL_SECONDS for t in timing if t["device"] == "cpu"},
        },
        "rows": arms,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "rows"}, indent=2))
    print(
        f"\n{'arm':<12}{'subset':<16}{'n':>4}{'auto':>8}"
        + "".join(f"{f'@{n}':>8}" for n in CLICKS)
        + f"{'NoC85':>8}{'NoC90':>8}"
    )
    for arm, summ in by_arm.items():
        subsets = {"all": summ["all"], "auto<80%": summ["auto_below_80"], **summ["by_structure"]}
        for name, s in subsets.items():
            if s.get("instances"):
                print(
                    f"{arm:<12}{name:<16}{s['instances']:>4}{s['auto_dice']:>8.3f}"
                    + "".join(f"{s['dice_after'][str(n)]:>8.3f}" for n in CLICKS)
                    + f"{s['noc@85']:>8.2f}{s['noc@90']:>8.2f}"
                )
    for t in timing:
        where = f"{t['device']}, {t['arm']}"
        print(f"seconds per click, 128^3 on {where}: {t['median_s']:.3f} (goal <= {GOAL_SECONDS})")


if __name__ == "__main__":
    main()
