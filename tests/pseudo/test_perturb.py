"""The student views: MONAI intensity transforms per study, CutMix that moves targets with voxels, and BCP's
copy-paste with the labelled batch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from server.training.perturb import (
    COPY_PASTE_PSEUDO_WEIGHT,
    COPY_PASTE_SIDE,
    CUTMIX_AREA,
    CopyPaste,
    StrongView,
    box_share,
)
from server.training.semi import SemiSupervision, one_hot_labels
from tests.pseudo.test_semi import small_net


def two_studies(shape: tuple[int, ...] = (32, 32)) -> torch.Tensor:
    """Study 0 in [0, 1], study 1 in [1000, 1001]: any intensity transform keeps them apart (scale and
    gamma work inside each study's own range, shifts and noise are below 1)."""
    gen = torch.Generator().manual_seed(0)
    return torch.stack(
        [torch.rand((1, *shape), generator=gen), 1000 + torch.rand((1, *shape), generator=gen)]
    )


def test_cutmix_moves_each_target_with_its_voxels() -> None:
    for shape in ((32, 32), (16, 16, 16)):
        batch = two_studies(shape)
        source = torch.stack([torch.full(shape, float(b)) for b in range(2)])  # (B, *spatial): whose voxel
        probs = F.one_hot(source.long(), 2).movedim(-1, 1).float()  # (B, 2, *spatial)
        view = StrongView(seed=3)
        mixed, mixed_probs, mixed_source = view(batch, probs, source)
        from_image = (mixed[:, 0] > 100).float()  # which study each voxel's intensity came from
        assert torch.equal(from_image, mixed_source)
        assert torch.equal(mixed_probs.argmax(dim=1).float(), mixed_source)
        for b in range(2):  # a box of the other study, the same box in both (rolled by one)
            share = float((mixed_source[b] != b).float().mean())
            assert CUTMIX_AREA[0] * 0.7 < share < CUTMIX_AREA[1] * 1.3, share
        assert torch.equal(mixed_source[0] != 0, mixed_source[1] != 1)
        assert torch.equal(probs, F.one_hot(source.long(), 2).movedim(-1, 1).float())  # inputs untouched


def test_intensity_transforms_change_values_reproducibly() -> None:
    batch = two_studies()
    a = StrongView(seed=5, cutmix=False)(batch)[0]
    b = StrongView(seed=5, cutmix=False)(batch)[0]
    c = StrongView(seed=6, cutmix=False)(batch)[0]
    assert a.shape == batch.shape and torch.equal(a, b) and not torch.equal(a, c)
    view = StrongView(seed=7, cutmix=False)
    changed = sum(not torch.allclose(view(batch)[0], batch) for _ in range(10))
    assert changed >= 8  # six transforms, each p 0.3-0.5: nearly every draw changes something


def test_no_cutmix_for_classification_targets_or_a_single_study() -> None:
    view = StrongView(seed=1)
    batch = two_studies()
    probs = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # (B, C): one class per study
    _, out = view(batch, probs)
    assert torch.equal(out, probs)
    single = batch[:1]
    mask = torch.zeros(1, 32, 32)
    image, out_mask = view(single, mask)
    assert float(image.max()) < 100 and torch.equal(out_mask, mask)


def test_box_covers_the_configured_share() -> None:
    view = StrongView(seed=2)
    for spatial in ((48, 48), (32, 32, 32), (7, 9)):
        for _ in range(20):
            share = box_share(view.box(spatial), spatial)
            assert 0.1 < share <= 0.75, (spatial, share)


def test_semi_supervision_with_the_strong_view_trains() -> None:
    student = small_net()
    batches = iter([torch.randn(2, 1, 8, 8) for _ in range(3)])
    semi = SemiSupervision(
        student, batches, method="pseudo_label", threshold=0.0, rampup=0.0, perturbation="strong"
    )
    image, label = torch.randn(2, 1, 8, 8), torch.randint(0, 2, (2, 8, 8))
    loss = semi.loss(student, lambda out, y: F.cross_entropy(out, y), image, label, progress=1.0)
    loss.backward()
    assert semi.epoch_stats()["unlabelled_loss"] > 0
    assert all(p.grad is not None for p in student.parameters())


def test_copy_paste_mixes_labelled_and_unlabelled_with_their_targets_and_weights() -> None:
    for shape in ((30, 30), (12, 12, 12)):
        gen = torch.Generator().manual_seed(0)
        image = torch.rand((2, 1, *shape), generator=gen)  # labelled: intensities in [0, 1]
        unlabelled = 1000 + torch.rand((3, 1, *shape), generator=gen)  # unlabelled: [1000, 1001]
        onehot = one_hot_labels(torch.ones((2, 1, *shape), dtype=torch.long), 2)  # truth: class 1
        probs = one_hot_labels(torch.zeros((3, 1, *shape), dtype=torch.long), 2)  # teacher: class 0
        mask = torch.ones(3, *shape)
        mask[2] = 0.0  # the third study's teacher is confident nowhere
        view, target, weight = CopyPaste(seed=4)(image, onehot, unlabelled, probs, mask)
        assert view.shape == unlabelled.shape and target.shape == probs.shape and weight.shape == mask.shape
        from_teacher = view[:, 0] > 100  # where each voxel's intensity came from
        assert torch.equal(target.argmax(dim=1) == 0, from_teacher)  # targets moved with their voxels
        expected = torch.where(from_teacher, COPY_PASTE_PSEUDO_WEIGHT * mask, torch.ones_like(mask))
        assert torch.equal(weight, expected)  # 1 on the true label, 1/2 x mask on the teacher's part
        box = COPY_PASTE_SIDE ** len(shape)  # the pasted core's share of the crop
        shares = [float(from_teacher[i].float().mean()) for i in range(3)]
        # Alternating directions: unlabelled around a labelled core, then the other way round.
        assert abs(shares[0] - (1 - box)) < 0.05 and abs(shares[1] - box) < 0.05, shares
        assert abs(shares[2] - (1 - box)) < 0.05, shares
        assert torch.equal(view[1][~from_teacher[1][None]], image[1][~from_teacher[1][None]])  # pairs i % n


def test_copy_paste_alternates_directions_for_a_batch_of_one() -> None:
    paste = CopyPaste(seed=1)
    image, onehot = torch.zeros(1, 1, 24, 24), one_hot_labels(torch.ones(1, 1, 24, 24, dtype=torch.long), 2)
    unlabelled = torch.full((1, 1, 24, 24), 1000.0)
    probs, mask = one_hot_labels(torch.zeros(1, 1, 24, 24, dtype=torch.long), 2), torch.ones(1, 24, 24)
    views = [paste(image, onehot, unlabelled, probs, mask)[0] for _ in range(4)]
    shares = [float((v > 100).float().mean()) for v in views]
    box = COPY_PASTE_SIDE**2
    assert [round(s, 2) for s in shares] == [round(1 - box, 2), round(box, 2)] * 2


def test_copy_paste_refuses_crops_of_different_shapes_or_class_labels() -> None:
    paste = CopyPaste()
    probs, mask = torch.rand(1, 2, 16, 16), torch.ones(1, 16, 16)
    with pytest.raises(ValueError, match="one shape"):
        paste(torch.rand(1, 1, 12, 12), torch.rand(1, 2, 12, 12), torch.rand(1, 1, 16, 16), probs, mask)
    with pytest.raises(ValueError, match="segmentation labels"):
        one_hot_labels(torch.tensor([0, 1]), 2)  # classification targets


def test_semi_supervision_with_copy_paste_trains_on_the_labelled_batch() -> None:
    student = small_net()
    batches = iter([torch.randn(2, 1, 8, 8) for _ in range(3)])
    semi = SemiSupervision(
        student, batches, method="pseudo_label", threshold=0.0, rampup=0.0, perturbation="copy_paste"
    )
    image, label = torch.randn(2, 1, 8, 8), torch.randint(0, 2, (2, 1, 8, 8))
    loss = semi.loss(student, lambda out, y: F.cross_entropy(out, y[:, 0]), image, label, progress=1.0)
    loss.backward()
    stats = semi.epoch_stats()
    assert stats["unlabelled_loss"] > 0
    assert stats["confident_fraction"] == 1.0  # the teacher's confidence, not the mixed weights
    assert all(p.grad is not None for p in student.parameters())
