"""Typed training parameters: a trainer's defaults, overridden by the request's flat params."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class BadTrainParams(ValueError):
    """A request parameter has the wrong type or range; the message names it."""


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

    @classmethod
    def build(cls, defaults: dict[str, Any], params: dict[str, Any]) -> TrainConfig:
        """Defaults, then ``params`` (unknown keys such as ``client_id`` are ignored)."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            for source in (defaults, params):
                if f.name in source:
                    values[f.name] = _coerce(f.name, str(f.type), source[f.name])
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
        if self.cache_bytes < 0 or self.num_workers < -1:
            raise BadTrainParams("cache_bytes must be >= 0 and num_workers >= -1 (auto)")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _coerce(name: str, type_name: str, value: Any) -> Any:
    # A client sends the first element of a list-valued config (a choice list); accept one here too.
    if isinstance(value, list) and value:
        value = value[0]
    try:
        if type_name == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
                return value.lower() in _TRUE
            if isinstance(value, int) and value in (0, 1):
                return bool(value)
            raise ValueError(value)
        if type_name == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        if type_name == "float":
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
    except (TypeError, ValueError):
        raise BadTrainParams(f"{name} must be {type_name}, got {value!r}") from None
    return value
