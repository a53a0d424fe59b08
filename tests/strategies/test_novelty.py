from __future__ import annotations

import numpy as np
import torch
from monai.data import create_test_image_2d

from strategies.novelty import (
    Novelty,
    NoveltyScoring,
    fit_autoencoder,
    make_autoencoder,
    reconstruction_error,
)


def circles(n: int, seed: int) -> torch.Tensor:
    rs = np.random.RandomState(seed)
    images = [create_test_image_2d(32, 32, 4, 10, 3, num_seg_classes=1, random_state=rs)[0] for _ in range(n)]
    return torch.as_tensor(np.stack(images)[:, None], dtype=torch.float32)


def test_out_of_distribution_images_reconstruct_worse() -> None:
    train, held_out = circles(32, 0), circles(8, 1)
    ae = make_autoencoder(spatial_dims=2)
    losses = fit_autoencoder(ae, train, iters=150, seed=0)
    assert np.mean(losses[-10:]) < np.mean(losses[:10])
    inlier = reconstruction_error(ae, held_out)
    inverted = reconstruction_error(ae, 1.0 - held_out)
    noise = reconstruction_error(ae, torch.rand_like(held_out))
    assert inverted.min() > inlier.max()
    assert noise.min() > inlier.max()
    value = NoveltyScoring(ae).score(torch.nn.Identity(), held_out[:1])
    assert list(value) == ["reconstruction_error"]
    assert abs(value["reconstruction_error"] - inlier[0].item()) < 1e-6
    assert not ae.training


def test_fit_is_deterministic() -> None:
    data = circles(8, 2)
    a, b = make_autoencoder(2), make_autoencoder(2)
    b.load_state_dict(a.state_dict())
    assert fit_autoencoder(a, data, iters=5, seed=3) == fit_autoencoder(b, data, iters=5, seed=3)


def test_novelty_strategy(make_pool, context) -> None:
    pool = make_pool(["a", "b"], {"novelty": {"a": 1.0, "b": 2.0}})
    assert Novelty().select(pool, 1, context())[0].image_id == "b"
