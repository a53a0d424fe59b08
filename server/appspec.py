"""What an app declares in its ``main.py``: models, trainers, strategies and scoring methods."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from strategies.base import Strategy
from strategies.first import First
from strategies.last import Last
from strategies.random import Random

MODEL_TYPES = (
    "segmentation",
    "annotation",
    "classification",
    "deepgrow",
    "deepedit",
    "scribbles",
    "detection",
    "others",
)


@dataclass
class ModelSpec:
    """A hosted model as ``/info/`` lists it. The inference service reads ``task`` to run it."""

    name: str
    type: str
    labels: list[str] | dict[str, int]
    dimension: int = 3
    description: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    task: Any = None  # an inference task object (see server.inference), set by apps that host a network

    def __post_init__(self) -> None:
        if self.type not in MODEL_TYPES:
            raise ValueError(f"model {self.name!r}: type must be one of {', '.join(MODEL_TYPES)}")
        if self.dimension not in (2, 3):
            raise ValueError(f"model {self.name!r}: dimension must be 2 or 3")


@dataclass
class TrainerSpec:
    name: str
    description: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    task: Any = None  # a training recipe (see server.training), set by apps that train


@dataclass
class ScoringSpec:
    name: str
    description: str = ""
    method: Any = None  # a strategies scoring method object


def default_strategies() -> dict[str, Strategy]:
    return {s.name: s for s in (Random(), First(), Last())}


@dataclass
class AppSpec:
    name: str
    description: str = ""
    version: str = "0.1.0"
    labels: list[str] | dict[str, int] | None = None
    models: dict[str, ModelSpec] = field(default_factory=dict)
    trainers: dict[str, TrainerSpec] = field(default_factory=dict)
    strategies: dict[str, Strategy] = field(default_factory=default_strategies)
    scoring: dict[str, ScoringSpec] = field(default_factory=dict)

    def all_labels(self) -> list[str] | dict[str, int]:
        if self.labels is not None:
            return self.labels
        names: dict[str, int] = {}
        for model in self.models.values():
            items = model.labels.items() if isinstance(model.labels, dict) else enumerate(model.labels, 1)
            for a, b in items:
                name, idx = (a, b) if isinstance(a, str) else (b, a)
                names.setdefault(str(name), int(idx))
        return list(names)
