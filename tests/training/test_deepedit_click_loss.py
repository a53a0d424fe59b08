"""DeepEdit's clicked-error loss: which voxels it weighs, what it adds to a step, and that a training
run with it computes it from the clicks it simulates."""

from __future__ import annotations

import json
import random
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from server.inference.click_consistency import REACH
from server.inference.deepedit import DeepEditTask
from server.inference.segmentation import SegmentationConfig
from server.training.base import Supervised, TrainContext
from server.training.deepedit import CLICK_BAND, DeepEditTrainer, clicked_errors, focused_cross_entropy

NAMES = {"background": 0, "lesion": 1, "vessel": 2}


def ball(shape: tuple[int, int, int], centre: tuple[int, int, int], radius: float) -> np.ndarray:
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    return sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)) <= radius**2


def test_the_clicked_error_is_the_missed_region_at_the_click_and_a_band_around_it_within_reach() -> None:
    shape = (48, 48, 48)
    truth = np.zeros(shape, np.uint8)
    truth[ball(shape, (24, 24, 24), 6)] = 1
    truth[4:44, 40, 40] = 2  # a thin vessel, all of it missed
    pred = np.zeros(shape, np.uint8)
    pred[ball(shape, (24, 24, 24), 4)] = 1  # the lesion's shell missed
    shell = (truth == 1) & (pred != 1)

    focus = clicked_errors(truth, pred, {"lesion": [[0, 24, 24, 29]]}, NAMES)  # MONAI's [d, i, j, k]
    assert focus[shell].all()  # the whole shell: connected to the click, within reach
    assert CLICK_BAND == 2
    assert focus[24, 24, 24 + 6 + 2] and not focus[24, 24, 24 + 6 + 3]  # the band past the truth's edge
    assert focus[24, 24, 24 + 5 - 2] and not focus[24, 24, 24 + 5 - 3]  # and inside, where pred is right
    assert not focus[:, :, 36:].any()  # the vessel, unclicked, weighs nothing

    vessel = clicked_errors(truth, pred, {"vessel": [[24, 40, 40]]}, NAMES)
    assert vessel[24 - REACH : 24 + REACH + 1, 40, 40].all()  # the missed vessel, cut to the reach
    assert not vessel[24 + REACH + 1 :].any() and not vessel[: 24 - REACH].any()
    assert vessel[24, 42, 40] and not vessel[24, 43, 40]

    honoured = clicked_errors(truth, pred, {"lesion": [[24, 24, 24]], "background": [[2, 2, 2]]}, NAMES)
    assert not honoured.any()  # clicks the prediction already agrees with weigh nothing
    both = clicked_errors(truth, pred, {"lesion": [[24, 24, 29]], "vessel": [[24, 40, 40]]}, NAMES)
    np.testing.assert_array_equal(both, focus | vessel)

    # A background click in a false positive weighs the false positive it stands in, and its band.
    pred[30:34, 8:12, 8:12] = 1
    blob = clicked_errors(truth, pred, {"background": [[31, 9, 9]]}, NAMES)
    assert blob[30:34, 8:12, 8:12].all() and blob[28, 9, 9] and not blob[27, 9, 9]


def test_the_focused_cross_entropy_averages_over_the_clicked_errors_only() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, 8, generator=gen)
    label = torch.randint(0, 3, (2, 1, 8, 8, 8), generator=gen)
    focus = torch.zeros(2, 1, 8, 8, 8, dtype=torch.bool)
    focus[0, 0, :2] = True
    focus[1, 0, 5, 5, 5] = True
    per_voxel = F.cross_entropy(logits, label[:, 0], reduction="none")
    expected = per_voxel[focus[:, 0]].mean()
    assert float(focused_cross_entropy(logits, label, focus)) == pytest.approx(float(expected), rel=1e-6)
    assert float(focused_cross_entropy(logits, label, torch.zeros_like(focus))) == 0.0


def test_a_step_adds_the_weighted_clicked_error_term_to_the_objective() -> None:
    task = DeepEditTask({"lesion": 1, "vessel": 2}, SegmentationConfig(roi_size=(16, 16, 16)))
    trainer = DeepEditTrainer(labels={"lesion": 1, "vessel": 2}, network_factory=task.network, click_loss=2.5)
    torch.manual_seed(0)
    model = task.network().eval()
    state = SimpleNamespace(model=model, objective=Supervised(), loss_fn=trainer.loss())
    image = torch.randn(1, 4, 16, 16, 16)
    label = torch.randint(0, 3, (1, 1, 16, 16, 16))
    focus = torch.zeros(1, 1, 16, 16, 16, dtype=torch.bool)
    focus[0, 0, 4:8, 4:8, 4:8] = True
    with torch.no_grad():
        plain = trainer.step_loss(state, {}, image, label, 0.0)  # type: ignore[arg-type]
        weighed = trainer.step_loss(state, {"focus": focus}, image, label, 0.0)  # type: ignore[arg-type]
        term = focused_cross_entropy(model(image), label, focus)
        assert float(plain) == pytest.approx(float(trainer.loss()(model(image), label)), rel=1e-6)
    assert float(weighed) == pytest.approx(float(plain) + 2.5 * float(term), rel=1e-5)
    assert trainer.config()["click_loss"] == 2.5
    assert DeepEditTrainer(labels={"lesion": 1}, network_factory=task.network).config()["click_loss"] == 0.0
    for bad in (-1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="click loss"):
            DeepEditTrainer(labels={"lesion": 1}, network_factory=task.network, click_loss=bad)


def test_training_with_the_click_loss_weighs_the_errors_of_its_simulated_clicks(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A short real run: every step with simulated clicks carries their error regions to the loss (what
    they hold: the simulated round's test below)."""
    labels = {"lesion": 1}
    task = DeepEditTask(labels, SegmentationConfig(preset="mr", spacing=None, roi_size=(24, 24, 24)))
    trainer = DeepEditTrainer(
        labels=labels,
        network_factory=task.network,
        click_loss=1.0,
        interaction_probability=1.0,
        roi_size=(24, 24, 24),
        spacing=None,
    )
    seen: list[int] = []
    step_loss = DeepEditTrainer.step_loss

    def spy(self: DeepEditTrainer, state: object, batch: dict, *args: object) -> torch.Tensor:
        assert batch["focus"].shape == batch["label"].shape and batch["focus"].dtype == torch.bool
        seen.append(int(batch["focus"].sum()))
        return step_loss(self, state, batch, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(DeepEditTrainer, "step_loss", spy)
    items = []
    for i in range(4):
        image = np.random.default_rng(i).normal(0, 0.1, (24, 24, 24)).astype(np.float32)
        label = ball((24, 24, 24), (12, 12, 12), 5).astype(np.uint8)
        image[label == 1] += 1.0
        for kind, data in (("image", image), ("label", label)):
            path = tmp_path / f"{kind}{i}.nii.gz"
            nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
        items.append(
            {"image": str(tmp_path / f"image{i}.nii.gz"), "label": str(tmp_path / f"label{i}.nii.gz")}
        )
    result = trainer.run(
        TrainContext(
            datalist=items,
            output_dir=tmp_path / "out",
            params={"max_epochs": 1, "early_stop_patience": -1},
            validation=[items[-1]["image"]],
        )
    )
    assert result.best_checkpoint is not None
    assert len(seen) == 3  # every training study's step had clicks, and their errors went to the loss


class Constant(torch.nn.Module):
    """A network that labels every voxel ``label`` (of ``classes``)."""

    def __init__(self, label: int, classes: int) -> None:
        super().__init__()
        self.label, self.classes = label, classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(x.shape[0], self.classes, *x.shape[2:])
        logits[:, self.label] = 1.0
        return logits


@pytest.mark.parametrize("predicted", [0, 1])
def test_a_simulated_round_weighs_the_errors_of_clicks_on_labels_not_on_background(predicted: int) -> None:
    """All background predicted: the lesion's clicks stand in a missed lesion, weighed. All lesion
    predicted: only background clicks stand in errors, and they are not weighed.

    MONAI's ``AddRandomGuidanceDeepEditd`` keeps a random number of clicks per round (Python's
    ``random``) and may drop a label's clicks altogether, so the rounds are seeded and each is checked
    for what it kept."""
    task = DeepEditTask({"lesion": 1}, SegmentationConfig(roi_size=(24, 24, 24)))
    trainer = DeepEditTrainer(labels={"lesion": 1}, network_factory=task.network, click_loss=1.0)
    lesion = ball((24, 24, 24), (12, 12, 12), 5)
    label = torch.from_numpy(lesion.astype(np.uint8))[None, None]
    batch = {
        "image": torch.zeros(1, 3, 24, 24, 24),
        "label": label,
        "guidance": [json.dumps({"background": [[2, 2, 2]], "lesion": [[12, 12, 12]]})],
    }
    state = SimpleNamespace(model=Constant(predicted, 2), device=torch.device("cpu"), use_amp=False)
    random.seed(0)
    rounds = [trainer.interact(state, batch, 1.0) for _ in range(10)]  # type: ignore[arg-type]
    clicked = [json.loads(out["guidance"][0]) for out in rounds]
    focus = [out["focus"][0, 0].numpy() for out in rounds]
    if predicted == 0:
        kept = [f for f, clicks in zip(focus, clicked, strict=True) if clicks["lesion"]]
        assert kept, "no round kept the lesion's clicks"
        for f in kept:
            assert f[lesion].all() and not f[ball((24, 24, 24), (12, 12, 12), 7) == 0].any()
    else:
        kept = [clicks["background"] for clicks in clicked if clicks["background"]]
        assert kept, "no round kept the background clicks"
        for points in kept:
            assert len(points) > 1  # a click was added on the false positives, beside the seed
        assert not any(f.any() for f in focus)  # and no round weighs them
