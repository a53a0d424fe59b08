"""Transfer learning: a ResNet backbone from a local file, frozen, while a new head learns."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from server.inference.classification import ClassificationConfig, ClassificationTask
from server.inference.networks import CLASSIFIER_HEADS, classifier_network
from server.inference.transfer import (
    load_backbone,
    param_groups,
    train_mode,
    trainable_parameters,
    transfer_network,
    unfreeze,
)

HEAD = [CLASSIFIER_HEADS["resnet18"]]


@pytest.fixture
def pretrained(tmp_path: Path) -> Path:
    """A ResNet-18 'trained' for another task (10 classes), saved as a plain state dict."""
    torch.manual_seed(123)
    source = classifier_network("resnet18", 2, 3, 10)
    path = tmp_path / "resnet18_other_task.pt"
    torch.save(source.state_dict(), path)
    return path


def test_frozen_backbone_does_not_move_while_the_head_learns(pretrained: Path) -> None:
    torch.manual_seed(0)
    net, report = transfer_network(classifier_network("resnet18", 2, 3, 7), pretrained, HEAD, freeze=True)
    source = torch.load(pretrained, weights_only=True)
    assert report.loaded and all(name.startswith("fc.") for name in report.skipped)
    backbone = {k: v.clone() for k, v in net.state_dict().items() if not k.startswith("fc.")}
    for name, value in backbone.items():
        torch.testing.assert_close(value, source[name])  # weights and batch-norm statistics from the file
    head = {k: v.clone() for k, v in net.state_dict().items() if k.startswith("fc.")}
    assert head["fc.weight"].shape == (7, 512)

    trainable = trainable_parameters(net)
    assert {id(p) for p in trainable} == {id(p) for p in net.fc.parameters()}
    optimizer = torch.optim.SGD(trainable, lr=0.1)
    train_mode(net)
    x, y = torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    loss = nn.functional.cross_entropy(net(x), y)
    loss.backward()
    optimizer.step()

    after = net.state_dict()
    for name, value in backbone.items():
        assert torch.equal(after[name], value), f"{name} moved"
    assert not torch.equal(after["fc.weight"], head["fc.weight"])
    assert not torch.equal(after["fc.bias"], head["fc.bias"])


def test_unfreezing_and_parameter_groups(pretrained: Path) -> None:
    net, _ = transfer_network(classifier_network("resnet18", 2, 3, 7), pretrained, HEAD)
    groups = param_groups(net, HEAD, lr=1e-3, backbone_lr=1e-4)
    assert len(groups) == 1  # only the head trains while the backbone is frozen
    thawed = unfreeze(net, ["layer4"])
    assert thawed and all(name.startswith("layer4.") for name in thawed)
    groups = param_groups(net, HEAD, lr=1e-3, backbone_lr=1e-4)
    assert [g["lr"] for g in groups] == [1e-3, 1e-4]
    unfreeze(net)
    assert len(trainable_parameters(net)) == len(list(net.parameters()))


def test_weights_for_another_architecture_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.save(nn.Linear(3, 2).state_dict(), path)
    with pytest.raises(ValueError, match="another architecture"):
        load_backbone(classifier_network("resnet18", 2, 3, 7), path, HEAD)


def test_classification_task_starts_from_the_pretrained_backbone(pretrained: Path) -> None:
    config = ClassificationConfig(
        network="resnet18", dimension=2, in_channels=3, spatial_size=(32, 32), pretrained=pretrained
    )
    task = ClassificationTask(["a", "b", "c"], config)
    net = task.initial_network()
    torch.testing.assert_close(net.state_dict()["conv1.weight"], torch.load(pretrained)["conv1.weight"])
    assert "backbone from resnet18_other_task.pt" in task.initial_weights()
    # The same seed gives the same head: the initialisation is reproducible.
    torch.testing.assert_close(
        task.initial_network().state_dict()["fc.weight"], net.state_dict()["fc.weight"]
    )
