"""What an app declares in its ``main.py``: models, trainers, strategies and scoring methods.

Each slot is typed by a Protocol: :class:`InferenceTask` (what the inference service runs; the template
is :class:`server.inference.task.InferTask`), :class:`TrainingRecipe` (what a training job runs;
:class:`server.training.base.Trainer`) and :class:`ScoringMethodLike` (what a scoring job runs;
:class:`strategies.scoring.ScoringMethod`). A wrong object fails when the app loads, and the loader's
message names the app's ``main.py`` and what is missing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from strategies.base import Strategy
from strategies.first import First
from strategies.last import Last
from strategies.random import Random

if TYPE_CHECKING:
    import torch
    from torch import nn

    from server.inference.request import InferRequest, InferResult
    from server.inference.task import Transform
    from server.training.base import TrainContext, TrainResult
    from server.training.config import TrainConfig


@runtime_checkable
class InferenceTask(Protocol):
    """A hosted model's inference: what :class:`server.inference.service.InferenceService` calls."""

    def describe(self) -> dict[str, Any]: ...
    def bind(self, weights_info: Callable[[], dict[str, Any]]) -> None: ...
    def check_params(self, params: dict[str, Any], input_ext: str) -> None: ...
    def network(self) -> nn.Module: ...
    def initial_network(self, seed: int = ...) -> nn.Module: ...
    def initial_weights(self) -> str: ...
    def loader(self, request: InferRequest) -> Transform: ...
    def pre_transforms(self, request: InferRequest) -> Sequence[Transform]: ...
    def run(
        self, request: InferRequest, networks: Sequence[nn.Module], device: torch.device
    ) -> InferResult: ...


@runtime_checkable
class TrainingRecipe(Protocol):
    """A trainer: checks a request's params, and runs on a :class:`~server.training.base.TrainContext`."""

    model: str | None  # the hosted model whose next version it publishes (None: the trainer's name)
    key_metric_name: str

    def check_params(self, params: dict[str, Any]) -> TrainConfig: ...
    def config(self) -> dict[str, Any]: ...
    def run(self, ctx: TrainContext) -> TrainResult: ...


@runtime_checkable
class ScoringMethodLike(Protocol):
    """Scores (and optionally embeds) one study with a network."""

    name: str
    description: str
    embeds: bool

    def score_and_embed(
        self, network: nn.Module, image: torch.Tensor
    ) -> tuple[dict[str, float], list[float] | None]: ...


def check_slot(owner: str, value: object, protocol: type, what: str) -> None:
    """A TypeError naming the slot, the object's type and the methods it lacks."""
    if value is None or isinstance(value, protocol):
        return
    members = set(getattr(protocol, "__annotations__", {})) | {
        name for name, v in vars(protocol).items() if callable(v)
    }
    missing = sorted(name for name in members if not name.startswith("_") and not hasattr(value, name))
    raise TypeError(f"{owner}: {type(value).__name__} is not {what} (missing: {', '.join(missing) or '?'})")


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
INTERACTIVE_TYPES = ("deepgrow", "deepedit")  # models that take clicks (and score nothing alone)


@dataclass
class ModelSpec:
    """A hosted model as ``/info/`` lists it. The inference service reads ``task`` to run it."""

    name: str
    type: str
    labels: list[str] | dict[str, int]
    dimension: int = 3
    description: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    task: InferenceTask | None = None  # set by apps that host a network (see server.inference)

    def __post_init__(self) -> None:
        check_slot(f"model {self.name!r}", self.task, InferenceTask, "an inference task")
        if self.type not in MODEL_TYPES:
            raise ValueError(f"model {self.name!r}: type must be one of {', '.join(MODEL_TYPES)}")
        if self.dimension not in (2, 3):
            raise ValueError(f"model {self.name!r}: dimension must be 2 or 3")


@dataclass
class TrainerSpec:
    name: str
    description: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    task: TrainingRecipe | None = None  # set by apps that train (see server.training)

    def __post_init__(self) -> None:
        check_slot(f"trainer {self.name!r}", self.task, TrainingRecipe, "a training recipe")


@dataclass
class ScoringSpec:
    name: str
    description: str = ""
    method: ScoringMethodLike | None = None  # see strategies.scoring

    def __post_init__(self) -> None:
        check_slot(f"scoring {self.name!r}", self.method, ScoringMethodLike, "a scoring method")


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

    def __post_init__(self) -> None:
        """A strategy is exposed only with the scoring it reads: otherwise it would hand out studies
        at random under an uncertainty strategy's name."""
        for name, strategy in self.strategies.items():
            missing = [m for m in strategy.needs() if m not in self.scoring]
            if missing:
                have = ", ".join(sorted(self.scoring)) or "none"
                raise ValueError(
                    f"strategy {name!r} reads the {', '.join(map(repr, missing))} scores, which no scoring"
                    f" method of this app computes (it has: {have}); add the method or drop the strategy"
                )

    def read_scores(self) -> list[str]:
        """The scoring methods the exposed strategies read: all a rescore needs to compute."""
        return sorted({m for s in self.strategies.values() for m in s.needs()} & set(self.scoring))

    def label_max(self) -> int | None:
        """The highest label index a saved label may hold (None: the app declares no labels)."""
        labels = self.all_labels()
        if not labels:
            return None
        return max(labels.values()) if isinstance(labels, dict) else len(labels)

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
