"""Typed training parameters: a trainer's defaults, overridden by the request's flat params."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from server.wire import parse_bool, parse_float, parse_int

# The names a request may use; their code is in server/training/semi.py and perturb.py (torch and MONAI,
# imported only where training runs: the web process checks requests without them).
METHODS = ("mean_teacher", "pseudo_label")
PERTURBATIONS = ("noise", "strong", "copy_paste")


class BadTrainParams(ValueError):
    """A request parameter has the wrong type or range; the message names it."""


@dataclass
class SemiSupervisedConfig:
    """``semi_supervised``: train on the unlabelled studies too (:mod:`server.training.semi`).

    Given as an object (keys merge over the app's defaults), ``true``/``false`` (just ``enabled``) or
    the object as a JSON string (what form clients send)."""

    enabled: bool = False
    method: str = "mean_teacher"  # or "pseudo_label" (hard labels, cross-entropy)
    threshold: float = 0.9  # voxel-wise: only where the teacher's top probability reaches it; 0: all
    weight: float = 1.0  # of the unlabelled loss, after the ramp-up
    rampup_epochs: float = 5.0  # sigmoid ramp-up of the weight
    ema: float = 0.99  # teacher = EMA of the student; 1.0: the version the run started from
    noise: float = 0.1  # Gaussian noise on the student's view of an unlabelled batch ("noise" view)
    perturbation: str = "noise"  # "strong": intensity + CutMix (FixMatch); "copy_paste": BCP (segmentation)
    max_unlabelled: int = 64  # studies without a final label used per run (and given pseudo-labels)
    uncertainty_method: str = ""  # a scoring method: leave out the most uncertain studies by its scores
    uncertainty_keep: float = 1.0  # ... keeping this least-uncertain fraction
    pseudo_labels: bool = True  # store the new version's predictions under the ``pseudo`` tag

    @classmethod
    def build(cls, base: SemiSupervisedConfig | None, value: Any) -> SemiSupervisedConfig:
        values = asdict(base) if base is not None else {}
        if isinstance(value, str) and value.strip().startswith("{"):
            try:
                value = json.loads(value)
            except ValueError:
                raise BadTrainParams(f"semi_supervised: not a JSON object: {value!r}") from None
        if isinstance(value, dict):
            unknown = set(value) - {f.name for f in fields(cls)}
            if unknown:
                raise BadTrainParams(f"semi_supervised: unknown keys {', '.join(sorted(unknown))}")
            for f in fields(cls):
                if f.name in value:
                    values[f.name] = coerce_param(f"semi_supervised.{f.name}", str(f.type), value[f.name])
        else:
            values["enabled"] = coerce_param("semi_supervised", "bool", value)
        cfg = cls(**values)
        cfg.check()
        return cfg

    def check(self) -> None:
        if self.method not in METHODS:
            raise BadTrainParams(f"semi_supervised.method must be one of {', '.join(METHODS)}")
        if self.perturbation not in PERTURBATIONS:
            raise BadTrainParams(f"semi_supervised.perturbation must be one of {', '.join(PERTURBATIONS)}")
        if not 0.0 <= self.threshold <= 1.0:
            raise BadTrainParams("semi_supervised.threshold must be in [0, 1]")
        if self.weight < 0 or self.rampup_epochs < 0 or self.noise < 0:
            raise BadTrainParams("semi_supervised weight, rampup_epochs and noise must be >= 0")
        if not 0.0 <= self.ema <= 1.0:
            raise BadTrainParams("semi_supervised.ema must be in [0, 1]")
        if self.max_unlabelled < 1:
            raise BadTrainParams("semi_supervised.max_unlabelled must be at least 1")
        if not 0.0 < self.uncertainty_keep <= 1.0:
            raise BadTrainParams("semi_supervised.uncertainty_keep must be in (0, 1]")
        if not isinstance(self.uncertainty_method, str):
            raise BadTrainParams("semi_supervised.uncertainty_method must be a scoring method's name")


@dataclass
class TrainConfig:
    max_epochs: int = 50
    val_split: float = 0.2  # fraction of the labelled studies held out for validation
    train_batch_size: int = 1
    val_batch_size: int = 1
    learning_rate: float = 1e-4
    weight_decay: float = 1e-5
    early_stop_patience: int = 10  # stop after this many epochs without a better key metric; <= 0: never
    val_interval: int = 1
    amp: bool = True  # mixed precision; only ever used on CUDA
    cache_bytes: int = 0  # memory budget of the cached dataset; 0: a quarter of the available memory
    num_workers: int = -1  # DataLoader processes; -1: auto (0 on CPU, up to 4 on CUDA)
    seed: int = 0
    multi_gpu: bool = True  # DDP (torchrun) over every visible GPU when there is more than one
    pretrained: bool = True  # start from the model's current published version when there is one
    # Publish only a version at least as good as the current one on the same validation studies, when
    # there are at least this many of them (fewer: published, and the job says it could not compare).
    compare_min_studies: int = 2
    always_publish: bool = False  # publish whatever the comparison says
    semi_supervised: SemiSupervisedConfig = field(default_factory=SemiSupervisedConfig)

    @classmethod
    def build(cls, defaults: dict[str, Any], params: dict[str, Any]) -> TrainConfig:
        """Defaults, then ``params`` (unknown keys such as ``client_id`` are ignored)."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            for source in (defaults, params):
                if f.name == "semi_supervised" and f.name in source:
                    values[f.name] = SemiSupervisedConfig.build(values.get(f.name), source[f.name])
                elif f.name in source:
                    values[f.name] = coerce_param(f.name, str(f.type), source[f.name])
        cfg = cls(**values)
        cfg.check()
        return cfg

    def check(self) -> None:
        if self.max_epochs < 1:
            raise BadTrainParams("max_epochs must be at least 1")
        if not 0.0 <= self.val_split < 1.0:
            raise BadTrainParams("val_split must be in [0, 1)")
        if self.train_batch_size < 1 or self.val_batch_size < 1:
            raise BadTrainParams("batch sizes must be at least 1")
        if self.learning_rate <= 0:
            raise BadTrainParams("learning_rate must be positive")
        if self.val_interval < 1:
            raise BadTrainParams("val_interval must be at least 1")
        if self.compare_min_studies < 1:
            raise BadTrainParams("compare_min_studies must be at least 1")
        if self.cache_bytes < 0 or self.num_workers < -1:
            raise BadTrainParams("cache_bytes must be >= 0 and num_workers >= -1 (auto)")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_PARSERS = {"bool": parse_bool, "int": parse_int, "float": parse_float}


def coerce_param(name: str, type_name: str, value: Any) -> Any:
    """The wire forms of :mod:`server.wire` (a choice list counts as its first element)."""
    parse = _PARSERS.get(type_name)
    if parse is None:
        return value
    try:
        return parse(value)
    except ValueError:
        raise BadTrainParams(f"{name} must be {type_name}, got {value!r}") from None
