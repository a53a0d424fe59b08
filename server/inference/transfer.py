"""Transfer learning: load a backbone from a local weights file, freeze it, train a new head.

Used by the classification app at start (its seed initialisation takes the pretrained backbone)
and meant for the trainer: ``freeze_backbone`` before the first epochs, ``unfreeze`` later (with
``param_groups`` giving the backbone a smaller learning rate), ``train_mode`` instead of
``net.train()`` so that frozen batch-norm layers keep their running statistics.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from server.inference.weights import read_state_dicts


@dataclass
class TransferReport:
    loaded: list[str] = field(default_factory=list)  # parameters and buffers taken from the file
    skipped: list[str] = field(default_factory=list)  # in the file but not used (head, shape mismatch)
    missing: list[str] = field(default_factory=list)  # in the network but not in the file (kept as is)


def _under(name: str, prefixes: Sequence[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def load_backbone(net: nn.Module, weights: Path, head: Sequence[str]) -> TransferReport:
    """Copy every tensor of ``weights`` whose name and shape match ``net``, except under ``head``.

    The head keeps its fresh initialisation (a new task usually has another number of classes).
    Raises ValueError when nothing matches: the file is for another architecture.
    """
    state = read_state_dicts(Path(weights))[0]
    own = net.state_dict()
    report = TransferReport()
    usable = {}
    for name, tensor in state.items():
        if _under(name, head) or name not in own or own[name].shape != tensor.shape:
            report.skipped.append(name)
        else:
            usable[name] = tensor
            report.loaded.append(name)
    if not usable:
        raise ValueError(f"{weights}: no tensor matches the network; is it for another architecture?")
    net.load_state_dict(usable, strict=False)
    report.missing = [n for n in own if n not in usable and not _under(n, head)]
    return report


def freeze_backbone(net: nn.Module, head: Sequence[str]) -> list[str]:
    """Stop gradients everywhere except under ``head``; returns the frozen parameter names."""
    frozen = []
    for name, param in net.named_parameters():
        trainable = _under(name, head)
        param.requires_grad_(trainable)
        if not trainable:
            frozen.append(name)
    return frozen


def unfreeze(net: nn.Module, prefixes: Sequence[str] | None = None) -> list[str]:
    """Let gradients flow again under ``prefixes`` (all parameters when None): fine-tuning."""
    thawed = []
    for name, param in net.named_parameters():
        if prefixes is None or _under(name, prefixes):
            if not param.requires_grad:
                thawed.append(name)
            param.requires_grad_(True)
    return thawed


def trainable_parameters(net: nn.Module) -> list[nn.Parameter]:
    return [p for p in net.parameters() if p.requires_grad]


def param_groups(
    net: nn.Module, head: Sequence[str], lr: float, backbone_lr: float
) -> list[dict[str, object]]:
    """Optimizer groups: the head at ``lr``, trainable backbone parameters at ``backbone_lr``."""
    head_params: list[nn.Parameter] = []
    backbone: list[nn.Parameter] = []
    for name, param in net.named_parameters():
        if param.requires_grad:
            (head_params if _under(name, head) else backbone).append(param)
    groups: list[dict[str, object]] = [{"params": head_params, "lr": lr}]
    if backbone:
        groups.append({"params": backbone, "lr": backbone_lr})
    return groups


_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.InstanceNorm2d, nn.InstanceNorm3d)


def train_mode(net: nn.Module) -> nn.Module:
    """``net.train()``, but normalisation layers whose parameters are all frozen stay in eval mode.

    Otherwise a frozen backbone would still drift: batch norm updates its running statistics in
    training mode even when no gradient reaches it.
    """
    net.train()
    for module in net.modules():
        if isinstance(module, _NORMS):
            params = list(module.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                module.eval()
    return net


def transfer_network(
    net: nn.Module, weights: Path, head: Sequence[str], freeze: bool = True
) -> tuple[nn.Module, TransferReport]:
    """Backbone from ``weights``, fresh head, backbone frozen unless ``freeze`` is False."""
    report = load_backbone(net, weights, head)
    if freeze:
        freeze_backbone(net, head)
    return net, report
