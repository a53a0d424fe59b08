"""Classification recipe: a CNN classifier, cross-entropy, flips and intensity jitter; key metric accuracy.

A study's class is read from its final label with ``target``: by default the largest voxel value of the
label volume (0 for a label that marks nothing), i.e. a mask whose value names the class. An app that
stores classes differently overrides ``target``.

Transfer learning: with ``head`` (the classifier's parameter prefix) and ``freeze_backbone``, only the
head trains until ``unfreeze_epoch`` (never when <= 0); frozen batch norm stays in eval mode.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.transforms import (
    EnsureTyped,
    LoadImaged,
    NormalizeIntensityd,
    RandFlipd,
    RandScaleIntensityd,
    RandShiftIntensityd,
    Resized,
    ScaleIntensityRanged,
)
from torch import nn

from server.inference.transfer import freeze_backbone, train_mode, unfreeze
from server.inference.transforms import ChannelFirstd
from server.training.base import TrainContext, Trainer, TrainResult
from server.training.config import BadTrainParams, TrainConfig

NetworkFactory = Callable[[], nn.Module]
IntensityFactory = Callable[[str], Any]


class ClassificationTrainer(Trainer):
    key_metric_name = "val_accuracy"

    def __init__(
        self,
        model: str | None = None,
        description: str = "classification: CNN, cross-entropy",
        *,
        classes: Sequence[str] | dict[str, int] = ("negative", "positive"),
        network_factory: NetworkFactory | None = None,
        spatial_size: Sequence[int] = (64, 64, 64),
        in_channels: int = 1,
        intensity_range: tuple[float, float] | None = (-1000.0, 1000.0),
        intensity: IntensityFactory | None = None,
        head: str | None = None,
        freeze_backbone: bool = False,
        unfreeze_epoch: int = -1,
        **defaults: Any,
    ) -> None:
        super().__init__(model, description, **defaults)
        self.classes = dict(classes) if isinstance(classes, dict) else {n: i for i, n in enumerate(classes)}
        self.num_classes = max(self.classes.values(), default=0) + 1
        self.network_factory = network_factory
        self.spatial_size = tuple(int(s) for s in spatial_size)
        self.in_channels = in_channels
        self.intensity_range = intensity_range
        self.intensity = intensity
        self.head = head
        self.freeze = freeze_backbone and head is not None
        self.unfreeze_epoch = unfreeze_epoch

    def network(self) -> nn.Module:
        if self.network_factory is not None:
            return self.network_factory()
        from monai.networks.nets import DenseNet121

        return DenseNet121(
            spatial_dims=len(self.spatial_size), in_channels=self.in_channels, out_channels=self.num_classes
        )

    def loss(self) -> nn.Module:
        return nn.CrossEntropyLoss()

    def target(self, label_path: str) -> int:
        data = np.asanyarray(nib.load(label_path).dataobj)  # type: ignore[attr-defined]
        value = int(data.max()) if data.size else 0
        return min(max(value, 0), self.num_classes - 1)

    def load_transforms(self) -> list[Any]:
        transforms: list[Any] = [
            LoadImaged("image", image_only=True),
            ChannelFirstd("image", spatial_dims=len(self.spatial_size), channels=self.in_channels),
        ]
        if self.intensity is not None:
            scale = self.intensity("image")
            if scale is not None:
                transforms.append(scale)
        elif self.intensity_range is not None:
            transforms.append(ScaleIntensityRanged("image", *self.intensity_range, 0.0, 1.0, clip=True))
        else:
            transforms.append(NormalizeIntensityd("image"))
        return [
            *transforms,
            Resized("image", self.spatial_size, mode="area"),
            EnsureTyped("image", dtype=torch.float32, track_meta=False),
        ]

    def augmentations(self) -> list[Any]:
        return [
            RandFlipd("image", prob=0.5, spatial_axis=0),
            RandScaleIntensityd("image", factors=0.1, prob=0.5),
            RandShiftIntensityd("image", offsets=0.1, prob=0.5),
        ]

    def on_epoch_start(self, network: nn.Module, epoch: int, cfg: TrainConfig) -> None:
        if not self.freeze or self.head is None:
            return
        if epoch == 1:
            frozen = freeze_backbone(network, [self.head])
            print(f"backbone frozen ({len(frozen)} tensors); training the head {self.head!r}", flush=True)
        if epoch == self.unfreeze_epoch:
            unfreeze(network)
            print(f"epoch {epoch}: backbone unfrozen, fine-tuning everything", flush=True)

    def train_mode(self, model: nn.Module) -> None:
        train_mode(model)

    def check_params(self, params: dict[str, Any]) -> TrainConfig:
        cfg = super().check_params(params)
        if cfg.semi_supervised.perturbation == "copy_paste":  # mixes voxel labels: segmentation only
            raise BadTrainParams("semi_supervised.perturbation copy_paste is for segmentation trainers")
        return cfg

    def run(self, ctx: TrainContext) -> TrainResult:
        # Resolve each study's class once, before the cached datasets are built.
        items = [{"image": d["image"], "label": self.target(str(d["label"]))} for d in ctx.datalist]
        ctx.datalist = items
        return super().run(ctx)

    def unlabelled_item(self, image: str) -> dict[str, Any]:
        return {"image": image, "label": 0}  # a placeholder class; semi-supervised training never reads it

    def inputs(self, batch: dict[str, Any], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        return batch["image"].to(device), torch.as_tensor(batch["label"]).long().view(-1).to(device)

    def validate(self, network: nn.Module, loader: Any, device: torch.device) -> tuple[float, float]:
        correct, count = 0.0, 0
        for batch in loader:
            image, label = self.inputs(batch, device)
            pred = network(image).argmax(dim=1)
            correct += float((pred == label).sum())
            count += int(label.numel())
        return correct, count
