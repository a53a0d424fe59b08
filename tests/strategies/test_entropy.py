from __future__ import annotations

import math

import torch
from monai.networks.nets import UNet
from torch import nn

from strategies.entropy import Entropy, EntropyScoring, ForegroundEntropyScoring, entropy_scores, mean_entropy
from strategies.scoring import predict_logits, to_probabilities


def logits_like(fg_logit: float, shape: tuple[int, ...] = (1, 16, 16)) -> torch.Tensor:
    """Two-class logits: background 0, foreground ``fg_logit`` everywhere."""
    return torch.stack([torch.zeros(shape), torch.full(shape, fg_logit)], dim=1)


def test_confident_prediction_has_lower_entropy_than_uncertain() -> None:
    confident = to_probabilities(logits_like(-8.0))
    uncertain = to_probabilities(logits_like(0.1))
    assert mean_entropy(confident).item() < 0.01
    assert mean_entropy(uncertain).item() > 0.68  # close to log(2)
    assert mean_entropy(uncertain).item() <= math.log(2) + 1e-6


def test_foreground_entropy_ignores_confident_background() -> None:
    logits = logits_like(-10.0)  # confident background everywhere ...
    logits[:, 1, :2, :2] = 0.0  # ... but a small uncertain object
    values = entropy_scores(to_probabilities(logits))
    assert values["entropy"].item() < 0.02  # averaged away over the empty field
    assert values["foreground_entropy"].item() > 0.69
    empty = entropy_scores(to_probabilities(logits_like(-10.0)))
    assert empty["foreground_entropy"].item() == 0.0


def test_single_channel_logits_are_a_sigmoid() -> None:
    probs = to_probabilities(torch.zeros(1, 1, 4, 4))
    assert probs.shape == (1, 2, 4, 4)
    assert torch.allclose(probs, torch.full_like(probs, 0.5))


class Scaled(nn.Module):
    """Foreground logit = scale * intensity; a trainable-looking net with BatchNorm for mode checks."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale
        self.norm = nn.BatchNorm2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.zeros_like(x), self.scale * x], dim=1)


def test_scoring_method_ranks_confident_network_lower_and_restores_mode() -> None:
    image = torch.ones(1, 1, 8, 8)
    sure, unsure = Scaled(10.0), Scaled(0.05)
    sure.train()
    a = EntropyScoring().score(sure, image)
    b = EntropyScoring().score(unsure, image)
    assert next(iter(a)) == "entropy"
    assert a["entropy"] < b["entropy"]
    assert sure.training and sure.norm.training  # modes restored
    assert next(iter(ForegroundEntropyScoring().score(unsure, image))) == "foreground_entropy"


def test_sliding_window_matches_whole_image_for_a_local_network() -> None:
    torch.manual_seed(0)
    net = nn.Conv2d(1, 2, 1)
    image = torch.rand(1, 1, 40, 24)
    with torch.no_grad():
        whole = net(image)
        windows = predict_logits(net, image, roi_size=(16, 16))
    assert windows.shape == whole.shape
    assert torch.allclose(windows, whole, atol=1e-5)


def test_entropy_strategy_ranks_by_stored_score_and_fills_unscored(make_pool, context) -> None:
    pool = make_pool(["a", "b", "c", "d"], {"entropy": {"a": 0.1, "b": 0.9, "c": 0.5}})
    picks = Entropy().select(pool, 2, context())
    assert [p.image_id for p in picks] == ["b", "c"]
    assert picks[0].fields["score"] == 0.9
    everything = Entropy().select(pool, 4, context())
    assert [p.image_id for p in everything][:3] == ["b", "c", "a"]
    assert everything[3].image_id == "d"


def test_score_and_embed_gives_the_same_values_and_a_bottleneck_vector() -> None:
    torch.manual_seed(0)
    net = UNet(3, 1, 2, (4, 8), (2,), num_res_units=0)
    image = torch.rand(1, 1, 24, 16, 16)
    method = EntropyScoring(roi_size=(16, 16, 16))  # sliding windows: the vector averages over them
    values, vector = method.score_and_embed(net, image)
    assert values == method.score(net, image)
    assert list(values) == ["entropy", "foreground_entropy", "foreground_fraction"]
    assert vector is not None and len(vector) == 12 and any(v != 0.0 for v in vector)
    other, _ = method.score_and_embed(net, torch.rand(1, 1, 24, 16, 16))
    assert method.score_and_embed(net, image)[1] == vector and other != values
    assert EntropyScoring().score_and_embed(Scaled(1.0), torch.ones(1, 1, 8, 8))[1] is None
