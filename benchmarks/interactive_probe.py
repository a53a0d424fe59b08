"""Exploratory probe for ``interactive.py`` (never a result, never on its test set): does a click on one
label, with the other labels unclicked, hurt because training always seeds every label at once?

Training (``server/training/deepedit.py``) starts every crop with a seed click for each label present
(MONAI's ``AddInitialSeedPointMissingLabelsd``), so the network never sees one label clicked and the
rest not, which is what an annotator's first click is. Arm ``seeded`` gives each unclicked label (and
``background``) a seed at the deepest voxel of the largest region the 0-click prediction gives it, so
the input looks like training; arm ``plain`` sends the clicks alone, as ``interactive.py`` does. Both
use the kept checkpoint of ``interactive.py``'s default run and its click protocol, on development
studies (seeds 2000-2003) outside its test set, for the lesion and the vessel (the organ is at 0.96
without clicks). Prints the mean Dice after 0-5 clicks per arm.

    .venv/bin/python benchmarks/interactive_probe.py      # a few minutes; run interactive.py first

Second question (``--question clicks``): which clicks does the network ignore? For each click of the
same protocol (5 per structure, network alone, development seeds 2000-2005): whether the clicked voxel
has the clicked label after the call, and how deep the click sits in its error region (the distance to
the region's edge, in voxels: 1 is a region one voxel thick, a boundary shell). Prints one line per
structure and the share of clicks ignored. ``--epochs`` picks which kept checkpoint (``160`` for the
registered longer run).

    .venv/bin/python benchmarks/interactive_probe.py --question clicks --epochs 160

Third question (``--question sigma``): does a narrower guidance (a Gaussian of sigma 1 voxel instead of
3) make the network take boundary clicks? Trains the DeepEdit model as ``interactive.py`` does (same
studies, ``--epochs``, kept beside its checkpoints) with sigma 1 in training and inference, and prints
for both models the mean Dice after 0-5 clicks and the share of ignored clicks on the development
studies above.

    .venv/bin/python benchmarks/interactive_probe.py --question sigma   # about 15 minutes (training)

Fourth question (``--question ceiling``): is NoC@90 <= 5 within reach of this click protocol at all? Arm
``network`` is the kept model alone (10 clicks, development seeds 2000-2005, lesion and vessel); arm
``local fix`` makes the same calls and then, for every click whose voxel is still wrong, sets the
connected error region around it, within 12 voxels (the consistency rule's ``REACH``), to the
truth: what a click would give if the model corrected the region it was made in and nothing else.
Prints the mean Dice after 0, 1, 3, 5 and 10 clicks and the mean NoC@85 / NoC@90 of both.

    .venv/bin/python benchmarks/interactive_probe.py --question ceiling --epochs 160   # 2 minutes

Fifth question (``--question studies``): does the network take clicks better when it has seen more
studies rather than the same studies more often? Trains the DeepEdit model as ``interactive.py`` does
(sigma 3) on :data:`MORE_STUDIES` training studies (seeds 0-95, the last 4 held out) for as many steps
as the kept ``--epochs`` model had on 24 (20 trained on), and prints for both the mean Dice after 0-5
clicks and the share of ignored clicks on the development studies of ``--question clicks``.

    .venv/bin/python benchmarks/interactive_probe.py --question studies   # about 15 minutes (training)

Sixth question (``--question focus``): does the network take clicks when its loss weighs the clicked
errors? Trains the DeepEdit model as ``interactive.py`` does (sigma 3, same studies, ``--epochs``) with
the trainer's ``click_loss`` at :data:`FOCUS` (the cross-entropy on the error regions the clicks of each
simulated round stand in and a band of 2 voxels around them, averaged over them, added to the
segmentation loss), and prints for both the mean Dice after 0-5 clicks and the share of ignored clicks
on the development studies above. Its first version (weight 1, the error regions without the band, 40
epochs) took clicks (10 of 60 ignored, against 35) but painted past the truth and lost the automatic
mode (Dice after 0 / 5 clicks 0.052 / 0.516 against 0.743 / 0.817; it never predicted a lesion without
a click); its second (weight 0.5, with the band) neither took clicks nor kept it (0.295 / 0.618, 36
of 60 ignored). Both
weighed the false positives that background clicks stand in, which in half the studies are an
unlabelled lesion look-alike: a suspect for the lost automatic mode (BatchNorm's running statistics are
not: with batch statistics instead the figures stay). The third version (weight 0.5, the band, the
clicks on labels only) clears that suspect and still loses it (0.327 / 0.742, 27 of 60 ignored), and
so does the third version at weight 0.1 (0.350 / 0.699, 38 of 60 ignored). A control at weight 1e-6
(the same code, the loss all but unchanged) gives 0.674 / 0.771, 30 of 60 ignored: how far one training
of this model moves from another (0.07 without clicks, 0.05 after 5 against the kept model), so the
lost automatic mode is the loss's doing, and no version raised the Dice after clicks.

    .venv/bin/python benchmarks/interactive_probe.py --question focus   # about 15 minutes (training)
    .venv/bin/python benchmarks/interactive_probe.py --question focus --click-loss 0.1
    .venv/bin/python benchmarks/interactive_probe.py --question focus --click-loss 1e-6   # the control

Seventh question (``--question refine``): can the kept model's clicks be honoured after it predicts,
without training? The same 10 clicks (development seeds 2000-2005, lesion and vessel) on four arms:
``network`` alone; ``consistent``, the image rule (param ``click_consistency``); ``bias``, each click's
label raised around it until it leads there (param ``click_bias``, ``--bias-width`` / ``--bias-margin``
to try other settings); ``brs`` (with ``--brs``, several minutes), the backpropagating refinement of
Jang & Kim (CVPR 2019): the guidance channels optimised (L-BFGS, at most :data:`BRS_ITERATIONS` steps,
until every click is honoured) for the cross-entropy at the clicked voxels plus :data:`BRS_INERTIA` times
their summed squared change. Prints the mean Dice after 0, 1, 3, 5 and 10 clicks, NoC@85 / NoC@90 and
the seconds per call with clicks.

    .venv/bin/python benchmarks/interactive_probe.py --question refine --brs   # 8 minutes

``--fbrs`` adds the feature backpropagating refinement (f-BRS-B, Sofiiuk et al., CVPR 2020): a scale and a
bias per channel of the features entering the U-Net's top up-layer, optimised the same way (L-BFGS, at most
:data:`BRS_ITERATIONS` steps, :data:`BRS_INERTIA` times their squared change), then the click bias. A
correction for the whole volume: on the 160-epoch model it flips whole structures within a few clicks
(Dice after 10 clicks 0.235 against the click bias's 0.906, NoC@90 5.67 against 3.92, 5.1 s per call).

``--layer`` adds an arm where, before the bias, a click the network did not honour that stands on a
boundary layer (a 6-neighbour has the clicked label already) relabels that layer: the voxels connected
to it with its label and the clicked label on the same side, within the consistency rule's reach of 12
voxels (a boundary drawn a voxel off along a vessel, mended in one click). Explored on the model of
``--more 160``: worse than the bias alone (Dice after 10 clicks 0.882 against 0.921, NoC@90 3.25 against
2.50): the layer reaches past the error into boundary the network had right.

``--more N`` runs the arms on the kept model trained N epochs more (``interactive.py --more``: the
product's retraining from a model's published version), trained first unless it is kept;
``--interactions R`` has that further training simulate R click rounds per step instead of the trainer's 3
(the seventh registered run's rule in ``interactive.py`` reads this on ``--more 80 --interactions 10``).

    .venv/bin/python benchmarks/interactive_probe.py --question refine --fbrs --epochs 160   # 12 minutes
    .venv/bin/python benchmarks/interactive_probe.py --question refine --epochs 160 --more 160   # 35 minutes
    .venv/bin/python benchmarks/interactive_probe.py --question refine --layer --epochs 160 --more 160
    .venv/bin/python benchmarks/interactive_probe.py --question refine --epochs 160 --more 80 \
        --interactions 10
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from interactive import (
    EPOCHS,
    INTERACTIONS,
    LABELS,
    MAX_CLICKS,
    REPO,
    TRAIN_STUDIES,
    checkpoint,
    deepest_voxel,
    dice,
    loaded,
    next_click,
    noc,
    run_task,
    starting_from,
    task_config,
    trained,
    trainer_settings,
    write_pool,
)

from server.inference import click_bias
from server.inference.click_consistency import region_at
from server.inference.deepedit import GUIDANCE_SIGMA, DeepEditTask
from server.inference.segmentation import SegmentationConfig
from server.training.deepedit import DeepEditTrainer

DEV_SEEDS = range(2000, 2004)
CLICK_SEEDS = range(2000, 2006)  # the development studies of --question clicks and sigma
STRUCTURES = ("lesion", "vessel")
CLICKS = 5
NARROW = 1  # voxels: the narrower guidance of --question sigma (MONAI's DeepEdit default is 3)
MORE_STUDIES = 96  # --question studies: four times interactive.py's training studies
FOCUS = 0.5  # --question focus: the clicked errors weigh half the whole crop's segmentation loss
BRS_ITERATIONS = 20  # --question refine: BRS's L-BFGS steps at most (the paper's setting)
BRS_INERTIA = 1e-3  # and the weight of the guidance's summed squared change (the paper's lambda)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--question",
        choices=("seeds", "clicks", "sigma", "ceiling", "studies", "focus", "refine"),
        default="seeds",
    )
    ap.add_argument("--epochs", type=int, default=EPOCHS)
    ap.add_argument("--click-loss", type=float, default=FOCUS, help="--question focus: the loss weight")
    ap.add_argument("--brs", action="store_true", help="--question refine: add the BRS arm (slow)")
    ap.add_argument("--fbrs", action="store_true", help="--question refine: add the f-BRS arm")
    ap.add_argument("--layer", action="store_true", help="--question refine: add the layer arm")
    ap.add_argument("--more", type=int, default=0, help="the kept model trained this many epochs more")
    ap.add_argument(
        "--interactions", type=int, default=INTERACTIONS, help="--more: the further training's click rounds"
    )
    ap.add_argument("--bias-width", type=float, default=click_bias.WIDTH, help="--question refine")
    ap.add_argument("--bias-margin", type=float, default=click_bias.MARGIN, help="--question refine")
    args = ap.parse_args()
    torch.set_num_threads(2)
    config = task_config()
    bias = {"bias_width": args.bias_width, "bias_margin": args.bias_margin}  # --question refine's
    task = DeepEditTask(LABELS, config, **bias)
    kept = REPO / "benchmarks" / ".cache" / "interactive"
    path = checkpoint(kept, "deepedit", args.epochs, TRAIN_STUDIES, GUIDANCE_SIGMA)
    if args.more:  # the kept model trained further (interactive.py --more), trained here unless kept
        start = path
        path = checkpoint(
            kept,
            "deepedit",
            args.epochs,
            TRAIN_STUDIES,
            GUIDANCE_SIGMA,
            more=args.more,
            interactions=args.interactions,
        )
        trainer = DeepEditTrainer(
            labels=LABELS,
            network_factory=task.network,
            max_interactions=args.interactions,
            **trainer_settings(config),
        )
        seconds = train_kept(starting_from(trainer, start), path, TRAIN_STUDIES, args.more)
        print(f"{start.stem} trained {args.more} epochs more in {seconds:.0f} s", flush=True)
    net = loaded(task, path)
    if args.question == "clicks":
        ignored_clicks(task, net, verbose=True)
    elif args.question == "sigma":
        narrow_guidance(task, net, config, kept, args.epochs)
    elif args.question == "ceiling":
        local_fix_ceiling(task, net)
    elif args.question == "studies":
        more_studies(task, net, config, kept, args.epochs)
    elif args.question == "focus":
        clicked_loss(task, net, config, kept, args.epochs, args.click_loss)
    elif args.question == "refine":
        brs = BrsTask(LABELS, config, **bias) if args.brs else None
        fbrs = FbrsTask(LABELS, config, **bias) if args.fbrs else None
        refinements(task, net, brs, fbrs, LayerTask(LABELS, config, **bias) if args.layer else None)
    else:
        seeded_labels(task, net)


def dev_studies(seeds: range) -> Iterator[tuple[Path, np.ndarray, Path]]:
    """Each development study's image file and its truth, with a scratch folder for the calls."""
    with tempfile.TemporaryDirectory(prefix="ll-probe-") as tmp:
        work = Path(tmp) / "work"
        work.mkdir()
        for item in write_pool(Path(tmp) / "dev", seeds):
            yield Path(item["image"]), np.asarray(nib.load(item["label"]).dataobj), work


def narrow_guidance(
    task: DeepEditTask, net: torch.nn.Module, config: SegmentationConfig, kept: Path, epochs: int
) -> None:
    """The kept model (guidance sigma 3) against one trained the same way with sigma :data:`NARROW`."""
    narrow = DeepEditTask(LABELS, config, sigma=NARROW)
    path = checkpoint(kept, "deepedit", epochs, TRAIN_STUDIES, NARROW)
    trainer = DeepEditTrainer(
        labels=LABELS, network_factory=narrow.network, guidance_sigma=NARROW, **trainer_settings(config)
    )
    seconds = train_kept(trainer, path, TRAIN_STUDIES, epochs)
    print(f"sigma {NARROW} trained in {seconds:.0f} s")
    print_clicks(f"sigma {task.sigma:g}", task, net)
    print_clicks(f"sigma {narrow.sigma:g}", narrow, loaded(narrow, path))


def more_studies(
    task: DeepEditTask, net: torch.nn.Module, config: SegmentationConfig, kept: Path, epochs: int
) -> None:
    """The kept model against one trained for as many steps on :data:`MORE_STUDIES` studies."""
    held = 4  # interactive.train holds the last 4 studies out for validation
    steps = epochs * (TRAIN_STUDIES - held)
    more_epochs = max(1, round(steps / (MORE_STUDIES - held)))
    path = checkpoint(kept, "deepedit", more_epochs, MORE_STUDIES, task.sigma)
    trainer = DeepEditTrainer(labels=LABELS, network_factory=task.network, **trainer_settings(config))
    seconds = train_kept(trainer, path, MORE_STUDIES, more_epochs)
    print(f"{MORE_STUDIES} studies x {more_epochs} epochs trained in {seconds:.0f} s")
    print_clicks(f"{TRAIN_STUDIES} studies x {epochs} epochs ({steps} steps)", task, net)
    more_steps = more_epochs * (MORE_STUDIES - held)
    print_clicks(
        f"{MORE_STUDIES} studies x {more_epochs} epochs ({more_steps} steps)", task, loaded(task, path)
    )


def clicked_loss(
    task: DeepEditTask,
    net: torch.nn.Module,
    config: SegmentationConfig,
    kept: Path,
    epochs: int,
    weight: float,
) -> None:
    """The kept model against one trained the same way with ``click_loss`` ``weight``."""
    path = checkpoint(kept, "deepedit", epochs, TRAIN_STUDIES, task.sigma, weight)
    trainer = DeepEditTrainer(
        labels=LABELS, network_factory=task.network, click_loss=weight, **trainer_settings(config)
    )
    seconds = train_kept(trainer, path, TRAIN_STUDIES, epochs)
    print(f"click loss {weight:g} trained in {seconds:.0f} s")
    print_clicks("click loss 0", task, net)
    print_clicks(f"click loss {weight:g}", task, loaded(task, path))


def train_kept(trainer: DeepEditTrainer, path: Path, studies: int, epochs: int) -> float:
    """Train on the pool's first ``studies`` into ``path`` unless it is kept; the seconds training took."""
    with tempfile.TemporaryDirectory(prefix="ll-probe-") as tmp:
        items = write_pool(Path(tmp) / "train", range(studies))
        return trained(trainer, path, items, Path(tmp) / "deepedit", epochs, again=False)


def print_clicks(name: str, task: DeepEditTask, net: torch.nn.Module) -> None:
    """One line: the mean Dice after 0-5 clicks on the development studies and the clicks ignored."""
    curve, ignored, total = ignored_clicks(task, net, verbose=False)
    scores = " ".join(f"@{i}:{d:.3f}" for i, d in enumerate(curve))
    print(f"{name}: {scores}  ignored {ignored} of {total} clicks", flush=True)


def ignored_clicks(task: DeepEditTask, net: torch.nn.Module, verbose: bool) -> tuple[list[float], int, int]:
    """Per click: honoured or ignored, and its depth in the error region. Returns the mean Dice after
    0-5 clicks and how many clicks were ignored, of how many."""
    names = {v: k for k, v in LABELS.items()}
    ignored = total = 0
    curves = []
    for image, truth, work in dev_studies(CLICK_SEEDS):
        for name in STRUCTURES:
            value = LABELS[name]
            clicks: dict[str, list[list[int]]] = {}
            pred = run_task(task, net, image, {}, work)
            curve = [dice(pred == value, truth == value)]
            line = [f"{curve[0]:.3f}"]
            for _ in range(CLICKS):
                error = (pred == value) != (truth == value)
                point = deepest_voxel(error)  # next_click's choice, with the error kept for its depth
                if point is None:
                    curve.append(curve[-1])
                    continue
                depth = ndimage.distance_transform_edt(np.pad(error, 1))[1:-1, 1:-1, 1:-1][tuple(point)]
                owner = int(truth[tuple(point)])
                clicks.setdefault(names.get(owner, "background"), []).append(point)
                pred = run_task(task, net, image, {**clicks, "label": name}, work)
                honoured = int(pred[tuple(point)]) == owner
                ignored, total = ignored + (not honoured), total + 1
                kind = "inside" if owner == value else "outside"
                verdict = "honoured" if honoured else "IGNORED"
                curve.append(dice(pred == value, truth == value))
                line.append(f"{kind} depth {depth:.1f} {verdict} {curve[-1]:.3f}")
            curves.append(curve)
            if verbose:
                print(image.name, name, " | ".join(line), flush=True)
    if verbose:
        print(f"ignored {ignored} of {total} clicks")
    return [float(v) for v in np.mean(curves, axis=0)], ignored, total


def local_fix_ceiling(task: DeepEditTask, net: torch.nn.Module) -> None:
    """The network alone against the same calls followed by a perfect local correction of each click."""
    names = {v: k for k, v in LABELS.items()}
    curves: dict[str, list[list[float]]] = {"network": [], "local fix": []}
    for image, truth, work in dev_studies(CLICK_SEEDS):
        for name in STRUCTURES:
            value = LABELS[name]
            for arm, rows in curves.items():
                clicks: dict[str, list[list[int]]] = {}
                made: list[list[int]] = []
                pred = run_task(task, net, image, {}, work)
                curve = [dice(pred == value, truth == value)]
                for _ in range(MAX_CLICKS):
                    point = next_click(pred, truth, value)
                    if point is not None:
                        made.append(point)
                        owner = names.get(int(truth[tuple(point)]), "background")
                        clicks.setdefault(owner, []).append(point)
                        pred = run_task(task, net, image, {**clicks, "label": name}, work)
                        if arm == "local fix":
                            for clicked in made:
                                fix_region(pred, truth, value, clicked)
                    curve.append(dice(pred == value, truth == value))
                rows.append(curve)
                print(image.name, name, f"{arm:<10}", " ".join(f"{d:.3f}" for d in curve), flush=True)
    print_curves(curves)


def print_curves(curves: dict[str, list[list[float]]], seconds: dict[str, list[float]] | None = None) -> None:
    """One line per arm: the mean Dice after 0, 1, 3, 5 and 10 clicks, NoC@85 / NoC@90 and, when timed,
    the median seconds per call."""
    for arm, rows in curves.items():
        mean = np.mean(rows, axis=0)
        nocs = {t: np.mean([noc(r, t)[0] for r in rows]) for t in (0.85, 0.90)}
        timed = f"  {np.median(seconds[arm]):.3f} s per call" if seconds else ""
        print(
            f"{arm:<10} n={len(rows)} "
            + " ".join(f"@{n}:{mean[n]:.3f}" for n in (0, 1, 3, 5, 10))
            + f"  NoC@85 {nocs[0.85]:.2f}  NoC@90 {nocs[0.90]:.2f}{timed}"
        )


def refinements(
    task: DeepEditTask,
    net: torch.nn.Module,
    brs: DeepEditTask | None,
    fbrs: DeepEditTask | None,
    layer: DeepEditTask | None = None,
) -> None:
    """The same clicks on the network alone and on each way of honouring them after it predicts."""
    names = {v: k for k, v in LABELS.items()}
    arms: dict[str, tuple[DeepEditTask, dict[str, bool]]] = {
        "network": (task, {"click_bias": False}),
        "consistent": (task, {"click_consistency": True, "click_bias": False}),
        "bias": (task, {"click_bias": True}),
    }
    if brs is not None:
        arms["brs"] = (brs, {"click_bias": False})
    if fbrs is not None:
        arms["fbrs"] = (fbrs, {"click_bias": True})
    if layer is not None:
        arms["layer"] = (layer, {"click_bias": True})
    curves: dict[str, list[list[float]]] = {arm: [] for arm in arms}
    seconds: dict[str, list[float]] = {arm: [] for arm in arms}
    for image, truth, work in dev_studies(CLICK_SEEDS):
        for name in STRUCTURES:
            value = LABELS[name]
            for arm, (arm_task, flag) in arms.items():
                clicks: dict[str, list[list[int]]] = {}
                pred = run_task(arm_task, net, image, flag, work)
                curve = [dice(pred == value, truth == value)]
                for _ in range(MAX_CLICKS):
                    point = next_click(pred, truth, value)
                    if point is not None:
                        owner = names.get(int(truth[tuple(point)]), "background")
                        clicks.setdefault(owner, []).append(point)
                        t = time.perf_counter()
                        pred = run_task(arm_task, net, image, {**clicks, "label": name, **flag}, work)
                        seconds[arm].append(time.perf_counter() - t)
                    curve.append(dice(pred == value, truth == value))
                curves[arm].append(curve)
                print(image.name, name, f"{arm:<10}", " ".join(f"{d:.3f}" for d in curve), flush=True)
    print(f"bias width {task.bias_width:g} voxels, margin {task.bias_margin:g}")
    print_curves(curves, seconds)


class BrsTask(DeepEditTask):
    """The DeepEdit task with backpropagating refinement (Jang & Kim, CVPR 2019) of its guidance."""

    def network_scores(
        self, x: torch.Tensor, networks: Sequence[torch.nn.Module], guidance: dict[str, list[list[int]]]
    ) -> torch.Tensor:
        made = self.channel_clicks(guidance)
        scores = super().network_scores(x, networks, guidance)
        if not made:
            return scores
        net = networks[0]
        start = x[:, 1:].clone()
        change = torch.zeros_like(start, requires_grad=True)
        return refined(
            scores,
            made,
            net,
            [change],
            lambda: net(torch.cat([x[:, :1], start + change], 1)),
            lambda: (change**2).sum(),
        )


class FbrsTask(DeepEditTask):
    """The DeepEdit task with feature backpropagating refinement (f-BRS-B, Sofiiuk et al., CVPR 2020): a
    scale and a bias per channel of the features entering the U-Net's top up-layer, optimised so that
    the clicks lead, then the click bias as shipped (the arm's flag)."""

    def network_scores(
        self, x: torch.Tensor, networks: Sequence[torch.nn.Module], guidance: dict[str, list[list[int]]]
    ) -> torch.Tensor:
        made = self.channel_clicks(guidance)
        net = networks[0]
        head = net.get_submodule("model.2")  # MONAI's UNet: down-layer, skip connection, top up-layer
        kept: dict[str, torch.Tensor] = {}
        hook = head.register_forward_pre_hook(lambda _m, args: kept.update(features=args[0].detach()))
        try:
            scores = super().network_scores(x, networks, guidance)
        finally:
            hook.remove()
        if not made or scores.shape[2:] != x.shape[2:]:  # one window over the whole volume only
            return scores
        features = kept["features"].clone()  # made in inference mode: a copy autograd can use
        shape = (1, features.shape[1], 1, 1, 1)
        scale = torch.ones(shape, requires_grad=True)
        shift = torch.zeros(shape, requires_grad=True)
        return refined(
            scores,
            made,
            net,
            [scale, shift],
            lambda: head(features * scale + shift),
            lambda: ((scale - 1) ** 2).sum() + (shift**2).sum(),
        )


class LayerTask(DeepEditTask):
    """Before the click bias, a click the network did not honour that stands on a boundary layer (a
    6-neighbour has the clicked label already) relabels that layer: the voxels connected to it with its
    label and the clicked label on the same side, within the consistency rule's reach (12 voxels)."""

    def network_scores(
        self, x: torch.Tensor, networks: Sequence[torch.nn.Module], guidance: dict[str, list[list[int]]]
    ) -> torch.Tensor:
        scores = super().network_scores(x, networks, guidance)
        out = scores[0].clone()
        for label, point in self.channel_clicks(guidance):
            labels = out.argmax(0).numpy()
            at = tuple(int(v) for v in point)
            layer = same_side_layer(labels, at, label)
            if layer is not None:
                where = torch.from_numpy(layer)
                out[label][where] = out.max(0).values[where] + 1.0
        return out[None]


def same_side_layer(labels: np.ndarray, at: tuple[int, ...], label: int) -> np.ndarray | None:
    """The voxels connected to ``at`` within the consistency rule's reach (:func:`region_at`) that have
    its label and a 6-neighbour of ``label`` on a side where ``at`` has one; none when ``at`` has
    ``label`` or no such neighbour."""
    here = int(labels[at])
    if here == label:
        return None
    facing = np.zeros(labels.shape, bool)
    for axis in range(3):
        for step in (-1, 1):
            neighbour = np.full(labels.shape, -1)
            to, source = [slice(None)] * 3, [slice(None)] * 3
            to[axis], source[axis] = (
                (slice(0, -1), slice(1, None)) if step == 1 else (slice(1, None), slice(0, -1))
            )
            neighbour[tuple(to)] = labels[tuple(source)]
            if neighbour[at] == label:  # a side where the click has the clicked label
                facing |= neighbour == label
    found = region_at((labels == here) & facing, at)
    if found is None:
        return None
    box, _, region = found
    layer = np.zeros(labels.shape, bool)
    layer[box] = region
    return layer


def refined(
    scores: torch.Tensor,
    made: list[tuple[int, list[int]]],
    net: torch.nn.Module,
    variables: list[torch.Tensor],
    logits: Callable[[], torch.Tensor],
    change: Callable[[], torch.Tensor],
) -> torch.Tensor:
    """BRS's optimisation, for both arms: ``variables`` (``logits()`` the network's output with them)
    optimised with L-BFGS, at most :data:`BRS_ITERATIONS` steps and until every click leads, for the
    cross-entropy at the clicked voxels plus :data:`BRS_INERTIA` times ``change()``; ``scores`` (the
    network's output as it was) when the clicks lead already."""
    labels = torch.tensor([label for label, _ in made])
    points = torch.tensor([p for _, p in made])

    def at_clicks(out: torch.Tensor) -> torch.Tensor:
        return out[0][:, points[:, 0], points[:, 1], points[:, 2]].T

    if bool((at_clicks(scores).argmax(1) == labels).all()):
        return scores
    for p in net.parameters():
        p.requires_grad_(False)
    optimiser = torch.optim.LBFGS(variables, lr=1, max_iter=1, line_search_fn="strong_wolfe")
    last: dict[str, Any] = {}

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        out = logits()
        clicked = at_clicks(out)
        loss = F.cross_entropy(clicked, labels) + BRS_INERTIA * change()
        loss.backward()
        last["scores"], last["honoured"] = out.detach(), bool((clicked.argmax(1) == labels).all())
        return loss

    with torch.enable_grad():
        for _ in range(BRS_ITERATIONS):
            optimiser.step(closure)
            if last["honoured"]:
                break
    result: torch.Tensor = last["scores"]
    return result


def fix_region(pred: np.ndarray, truth: np.ndarray, value: int, point: list[int]) -> None:
    """Set the error region (for structure ``value``) around ``point``, within the consistency rule's
    reach, to the truth."""
    found = region_at((pred == value) != (truth == value), point)
    if found is not None:
        box, _, region = found
        pred[box][region] = truth[box][region]


def seeded_labels(task: DeepEditTask, net: torch.nn.Module) -> None:
    """Mean Dice after 0-5 clicks, unclicked labels seeded or not."""
    names = {v: k for k, v in LABELS.items()}
    curves: dict[str, list[list[float]]] = {"plain": [], "seeded": []}
    for image, truth, work in dev_studies(DEV_SEEDS):
        start = run_task(task, net, image, {}, work)
        centres = {"background": deepest_voxel(start == 0)}
        centres.update({n: deepest_voxel(start == v) for n, v in LABELS.items()})
        seeds = {n: [p] if p else [] for n, p in centres.items()}  # a seed per label the prediction has
        for name in STRUCTURES:
            value = LABELS[name]
            for arm, curve_list in curves.items():
                clicks: dict[str, list[list[int]]] = {}
                pred, curve = start, [dice(start == value, truth == value)]
                for _ in range(CLICKS):
                    point = next_click(pred, truth, value)
                    if point is not None:
                        owner = names.get(int(truth[tuple(point)]), "background")
                        clicks.setdefault(owner, []).append(point)
                        sent = dict(clicks)
                        if arm == "seeded":
                            sent.update({n: s for n, s in seeds.items() if n not in sent})
                        pred = run_task(task, net, image, {**sent, "label": name}, work)
                    curve.append(dice(pred == value, truth == value))
                curve_list.append(curve)
                print(image.name, name, arm, [round(c, 3) for c in curve], flush=True)
    for arm, rows in curves.items():
        mean = np.mean(rows, axis=0)
        print(f"{arm:<8} n={len(rows)} " + " ".join(f"@{i}:{d:.3f}" for i, d in enumerate(mean)))


if __name__ == "__main__":
    main()
