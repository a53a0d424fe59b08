"""Segmentation app: declares its models, trainers and strategies in one place."""

from __future__ import annotations

from pathlib import Path

from server.appspec import AppSpec, ModelSpec


def build_app(app_dir: Path, conf: dict[str, str]) -> AppSpec:
    labels = [s.strip() for s in conf.get("labels", "liver,tumour").split(",") if s.strip()]
    return AppSpec(
        name="labelloop segmentation",
        description="3D segmentation of CT/MR volumes with active learning",
        labels=labels,
        models={
            "segmentation": ModelSpec(
                name="segmentation",
                type="segmentation",
                labels={name: i for i, name in enumerate(labels, 1)},
                dimension=3,
                description="3D U-Net segmentation",
            )
        },
    )
