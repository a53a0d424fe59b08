"""The semi-supervised building blocks on constructed tensors: EMA, ramp-up, masks, loss, config."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from server.pseudo import least_uncertain
from server.training.config import BadTrainParams, TrainConfig
from server.training.semi import (
    SemiSupervision,
    confidence_mask,
    ema_update,
    make_teacher,
    pseudo_label_loss,
    sigmoid_rampup,
)


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1))


def test_ema_moves_the_teacher_a_share_of_the_way() -> None:
    student, teacher = small_net(), small_net()
    with torch.no_grad():
        for p in teacher.parameters():
            p.zero_()
        for p in student.parameters():
            p.fill_(1.0)
        student[1].running_mean.fill_(2.0)
        student[1].num_batches_tracked.fill_(7)
    assert ema_update(teacher, student, 0.9) == 0.9
    assert all(torch.allclose(p, torch.full_like(p, 0.1)) for p in teacher.parameters())
    assert torch.allclose(teacher[1].running_mean, torch.full((4,), 0.2))  # float buffers averaged
    assert int(teacher[1].num_batches_tracked) == 7  # integer buffers copied
    # Warm-up: at step 1 the teacher takes half of the student, whatever the decay.
    assert ema_update(teacher, student, 0.99, step=1) == pytest.approx(0.5)
    assert all(torch.allclose(p, torch.full_like(p, 0.55)) for p in teacher.parameters())


def test_ema_of_one_keeps_the_round_teacher_and_teacher_is_frozen() -> None:
    student = small_net()
    teacher = make_teacher(student)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    before = [p.clone() for p in teacher.parameters()]
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    assert ema_update(teacher, student, 1.0, step=5) == 1.0
    assert all(torch.equal(a, b) for a, b in zip(before, teacher.parameters(), strict=True))
    with pytest.raises(ValueError):
        ema_update(teacher, student, 1.5)


def test_sigmoid_rampup() -> None:
    assert sigmoid_rampup(0, 10) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(10, 10) == 1.0 and sigmoid_rampup(25, 10) == 1.0
    assert sigmoid_rampup(3, 0) == 1.0  # no ramp-up
    values = [sigmoid_rampup(t, 10) for t in range(11)]
    assert values == sorted(values) and values[5] == pytest.approx(math.exp(-5 * 0.25))


def test_confidence_mask_keeps_confident_voxels_only() -> None:
    # (B=1, C=2, 2x2): one confident foreground, one confident background, two uncertain voxels.
    fg = torch.tensor([[0.97, 0.02], [0.55, 0.45]])
    probs = torch.stack([1 - fg, fg])[None]
    mask = confidence_mask(probs, 0.9)
    assert mask.shape == (1, 2, 2)
    assert mask[0].tolist() == [[1.0, 1.0], [0.0, 0.0]]
    assert confidence_mask(probs, 0.0).sum() == 4  # threshold 0: no masking
    # classification: (B, C) -> (B,)
    cls = torch.tensor([[0.95, 0.05], [0.6, 0.4]])
    assert confidence_mask(cls, 0.9).tolist() == [1.0, 0.0]


def test_least_uncertain_drops_the_most_uncertain_studies() -> None:
    scores = {"a": 0.1, "b": 0.5, "c": 0.9, "d": 0.3, "nan": float("nan")}
    assert least_uncertain(scores, 0.5) == {"a", "d"}
    assert least_uncertain(scores, 1.0) == {"a", "b", "c", "d"}
    assert least_uncertain({}, 0.5) == set()
    with pytest.raises(ValueError):
        least_uncertain(scores, 0.0)


def test_pseudo_label_loss_is_masked_and_normalised_by_every_voxel() -> None:
    torch.manual_seed(1)
    logits = torch.randn(2, 3, 4, 4)
    teacher = torch.softmax(torch.randn(2, 3, 4, 4) * 3, dim=1)
    ones, zeros = torch.ones(2, 4, 4), torch.zeros(2, 4, 4)
    ce = F.cross_entropy(logits, teacher.argmax(dim=1))
    assert pseudo_label_loss(logits, teacher, ones, "pseudo_label") == pytest.approx(float(ce), rel=1e-5)
    assert float(pseudo_label_loss(logits, teacher, zeros, "pseudo_label")) == 0.0
    half = ones.clone()
    half[1] = 0
    per = F.cross_entropy(logits, teacher.argmax(dim=1), reduction="none")
    expected = float(per[0].sum() / per.numel())
    assert pseudo_label_loss(logits, teacher, half, "pseudo_label") == pytest.approx(expected, rel=1e-5)
    mse = (torch.softmax(logits, 1) - teacher).pow(2).sum(1).mean()
    assert pseudo_label_loss(logits, teacher, ones, "mean_teacher") == pytest.approx(float(mse), rel=1e-5)
    # A student that agrees with a confident teacher has (almost) no consistency loss.
    agree = torch.log(teacher)
    assert float(pseudo_label_loss(agree, teacher, ones, "mean_teacher")) < 1e-10
    with pytest.raises(ValueError):
        pseudo_label_loss(logits, teacher, ones, "nosuch")


def test_semi_supervision_step_trains_the_student_and_updates_the_teacher() -> None:
    student = small_net()
    batches = iter([torch.randn(2, 1, 8, 8) for _ in range(3)])
    semi = SemiSupervision(student, batches, method="pseudo_label", threshold=0.0, rampup=0.0, ema=0.5)
    opt = torch.optim.SGD(student.parameters(), lr=0.5)
    image, label = torch.randn(2, 1, 8, 8), torch.randint(0, 2, (2, 8, 8))
    before = [p.clone() for p in semi.teacher.parameters()]
    loss = semi.loss(student, lambda out, y: F.cross_entropy(out, y), image, label, progress=1.0)
    loss.backward()
    opt.step()
    semi.after_step(student)
    moved = [not torch.equal(a, b) for a, b in zip(before, semi.teacher.parameters(), strict=True)]
    assert any(moved)
    stats = semi.epoch_stats()
    assert stats["confident_fraction"] == 1.0 and stats["weight"] == 1.0 and stats["unlabelled_loss"] > 0


def test_config_merges_app_defaults_with_the_request() -> None:
    app = {"semi_supervised": {"enabled": False, "threshold": 0.8, "max_unlabelled": 10}}
    cfg = TrainConfig.build(app, {"semi_supervised": {"enabled": True, "method": "pseudo_label"}})
    semi = cfg.semi_supervised
    assert (semi.enabled, semi.method, semi.threshold, semi.max_unlabelled) == (True, "pseudo_label", 0.8, 10)
    assert TrainConfig.build(app, {"semi_supervised": "true"}).semi_supervised.enabled
    as_json = TrainConfig.build(app, {"semi_supervised": '{"enabled": "yes", "ema": 1}'}).semi_supervised
    assert as_json.enabled and as_json.ema == 1.0
    assert not TrainConfig.build({}, {}).semi_supervised.enabled
    assert TrainConfig.build({}, {}).as_dict()["semi_supervised"]["threshold"] == 0.9
    strong = TrainConfig.build(app, {"semi_supervised": {"perturbation": "strong"}}).semi_supervised
    assert (
        strong.perturbation == "strong" and TrainConfig.build({}, {}).semi_supervised.perturbation == "noise"
    )
    bads = (
        {"method": "nosuch"},
        {"threshold": 2},
        {"nosuch": 1},
        {"ema": "x"},
        {"perturbation": "x"},
        "maybe",
    )
    for bad in bads:
        with pytest.raises(BadTrainParams):
            TrainConfig.build(app, {"semi_supervised": bad})


def test_classification_trainer_trains_on_unlabelled_studies(tmp_path: Path) -> None:
    from monai.networks.nets import DenseNet121

    from server.training.base import TrainContext
    from server.training.classification import ClassificationTrainer
    from tests.conftest import write_label, write_volume

    items = [
        {
            "image": str(write_volume(tmp_path / f"i{i}.nii.gz", seed=i, size=32)),
            "label": str(write_label(tmp_path / f"l{i}.nii.gz", shape=(32, 32, 32), seed=i)),
        }
        for i in range(2)
    ]
    unlabelled = [str(write_volume(tmp_path / f"u{i}.nii.gz", seed=10 + i, size=32)) for i in range(3)]
    trainer = ClassificationTrainer(
        spatial_size=(32, 32, 32),
        intensity_range=(-500.0, 500.0),
        network_factory=lambda: DenseNet121(spatial_dims=3, in_channels=1, out_channels=2, init_features=8),
        max_epochs=1,
        val_split=0.5,
        train_batch_size=2,
        cache_bytes=64 * 2**20,
        semi_supervised={"enabled": True, "method": "pseudo_label", "threshold": 0.0},
    )
    epochs: list[dict[str, Any]] = []
    ctx = TrainContext(items, tmp_path / "out", unlabelled=unlabelled, on_epoch=epochs.append)
    result = trainer.run(ctx)
    assert result.metrics["unlabelled_studies"] == 3 and result.best_checkpoint is not None
    semi = epochs[-1]["semi_supervised"]
    assert (
        semi["unlabelled_studies"] == 3 and semi["confident_fraction"] == 1.0 and semi["unlabelled_loss"] > 0
    )


def test_segmentation_trainer_trains_with_copy_paste_and_classification_refuses_it(tmp_path: Path) -> None:
    from server.training.base import TrainContext
    from server.training.classification import ClassificationTrainer
    from tests.conftest import write_label, write_volume
    from tests.training.test_recipes import tiny_trainer

    items = [
        {
            "image": str(write_volume(tmp_path / f"i{i}.nii.gz", seed=i)),
            "label": str(write_label(tmp_path / f"l{i}.nii.gz", seed=i)),
        }
        for i in range(2)
    ]
    unlabelled = [str(write_volume(tmp_path / f"u{i}.nii.gz", seed=10 + i)) for i in range(2)]
    copy_paste = {"enabled": True, "method": "pseudo_label", "threshold": 0.0, "perturbation": "copy_paste"}
    trainer = tiny_trainer(max_epochs=1, val_split=0.5, cache_bytes=64 << 20, semi_supervised=copy_paste)
    epochs: list[dict[str, Any]] = []
    result = trainer.run(TrainContext(items, tmp_path / "out", unlabelled=unlabelled, on_epoch=epochs.append))
    semi = epochs[-1]["semi_supervised"]
    assert result.best_checkpoint is not None and semi["unlabelled_studies"] == 2
    assert semi["confident_fraction"] == 1.0 and semi["unlabelled_loss"] > 0

    with pytest.raises(BadTrainParams, match="segmentation"):
        ClassificationTrainer().check_params({"semi_supervised": {"perturbation": "copy_paste"}})
    with pytest.raises(BadTrainParams, match="segmentation"):  # an app default fails when the app loads
        ClassificationTrainer(semi_supervised={"perturbation": "copy_paste"})
