"""The strong student view: MONAI intensity transforms per study, CutMix that moves targets with voxels."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from server.training.perturb import CUTMIX_AREA, StrongView, box_share
from server.training.semi import SemiSupervision
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
