from __future__ import annotations

import pytest
import torch
from monai.networks.nets import UNet
from torch import nn

from strategies.epistemic import (
    Epistemic,
    MCDropoutScoring,
    enable_mc_dropout,
    epistemic_scores,
    mc_dropout_probabilities,
)


def bn_dropout_net() -> nn.Module:
    """A MONAI UNet with BatchNorm and dropout, trained a few steps so its running stats are not defaults."""
    torch.manual_seed(0)
    net = UNet(2, 1, 2, (4, 8), (2,), norm="batch", dropout=0.3)
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    for _ in range(3):
        opt.zero_grad()
        net(torch.rand(2, 1, 16, 16)).mean().backward()
        opt.step()
    return net


def norm_state(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in net.state_dict().items() if "running" in k or "num_batches" in k}


def test_scoring_leaves_batchnorm_statistics_and_modes_untouched() -> None:
    net = bn_dropout_net()
    before = norm_state(net)
    assert before and any("num_batches_tracked" in k for k in before)
    net.train()
    net.model[1].eval()  # a mixed state, to check that each flag comes back as it was
    modes = {name: m.training for name, m in net.named_modules()}

    values = MCDropoutScoring(n_samples=4).score(net, torch.rand(1, 1, 16, 16) * 5.0)

    after = norm_state(net)
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key
    assert {name: m.training for name, m in net.named_modules()} == modes
    assert list(values) == ["mutual_information", "variance", "entropy"]
    assert values["mutual_information"] > 0.0


def test_naive_train_mode_would_change_running_stats() -> None:
    """The failure the context manager exists for: ``model.train()`` updates BatchNorm statistics."""
    net = bn_dropout_net()
    before = norm_state(net)
    net.train()
    with torch.no_grad():
        net(torch.rand(1, 1, 16, 16) * 5.0)
    assert any(not torch.equal(before[k], v) for k, v in norm_state(net).items())


def test_only_dropout_modules_sample_inside_the_context() -> None:
    net = bn_dropout_net()
    net.eval()
    with enable_mc_dropout(net):
        for m in net.modules():
            if isinstance(m, nn.Dropout):
                assert m.training
            elif isinstance(m, nn.BatchNorm2d):
                assert not m.training
    assert not any(m.training for m in net.modules())


def test_network_without_dropout_is_refused() -> None:
    with pytest.raises(ValueError, match="Dropout"):
        MCDropoutScoring().score(nn.Conv2d(1, 2, 1), torch.rand(1, 1, 8, 8))


def test_agreeing_samples_score_lower_than_disagreeing() -> None:
    sure = torch.tensor([0.99, 0.01]).view(1, 1, 2, 1, 1).expand(6, 1, 2, 4, 4)
    flip = torch.tensor([[0.99, 0.01], [0.01, 0.99]]).repeat(3, 1).view(6, 1, 2, 1, 1).expand(6, 1, 2, 4, 4)
    a, b = epistemic_scores(sure), epistemic_scores(flip)
    assert a["mutual_information"].item() < 1e-6 and a["variance"].item() < 1e-9
    assert b["mutual_information"].item() > 0.5
    assert b["variance"].item() > 0.2
    assert b["entropy"].item() > a["entropy"].item()


def test_mutual_information_measures_disagreement_not_entropy() -> None:
    """Uncertain but consistent (logit 0 in every pass): high entropy, no mutual information."""
    net = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False), nn.Dropout(0.5))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
    flat = epistemic_scores(mc_dropout_probabilities(net, torch.zeros(1, 1, 8, 8), 8))
    bright = epistemic_scores(mc_dropout_probabilities(net, torch.full((1, 1, 8, 8), 5.0), 8))
    assert flat["entropy"].item() > 0.69 and flat["mutual_information"].item() < 1e-6
    assert bright["mutual_information"].item() > 0.1


def test_seeded_sampling_is_reproducible_and_leaves_global_rng() -> None:
    net = bn_dropout_net()
    image = torch.rand(1, 1, 16, 16)
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a = mc_dropout_probabilities(net, image, 3, seed=7)
    assert torch.equal(torch.rand(1), expected_next)
    b = mc_dropout_probabilities(net, image, 3, seed=7)
    assert torch.equal(a, b)
    assert not torch.equal(a[0], a[1])


def test_epistemic_strategy_uses_its_scores(make_pool, context) -> None:
    pool = make_pool(["a", "b", "c"], {"epistemic": {"a": 0.3, "c": 0.7}, "entropy": {"b": 9.0}})
    assert [p.image_id for p in Epistemic().select(pool, 2, context())] == ["c", "a"]
