"""A test app whose segmentation model sleeps before inferring (``--conf sleep SECONDS``)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from server.appspec import AppSpec, ModelSpec
from server.inference.conf import conf_float
from server.inference.request import InferRequest
from server.inference.segmentation import SegmentationConfig, SegmentationTask
from server.inference.task import Data


class SlowSegmentation(SegmentationTask):
    def __init__(self, labels: dict[str, int], config: SegmentationConfig, seconds: float) -> None:
        super().__init__(labels, config, "sleeps, then segments")
        self.seconds = seconds

    def inferer(
        self, data: Data, networks: Sequence[nn.Module], device: torch.device, request: InferRequest
    ) -> Data:
        time.sleep(self.seconds)
        return super().inferer(data, networks, device, request)


def build_app(app_dir: Path, conf: dict[str, str]) -> AppSpec:
    labels = {"organ": 1}
    config = SegmentationConfig(channels=(4, 8, 16, 32), num_res_units=0, roi_size=(32, 32, 32))
    task = SlowSegmentation(labels, config, conf_float(conf, "sleep", 2.0))
    return AppSpec(
        name="slow test app",
        models={"slow": ModelSpec(name="slow", type="segmentation", labels=labels, task=task)},
    )
