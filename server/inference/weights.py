"""Reading checkpoints and building networks from them (or from a fixed-seed initialisation)."""

from __future__ import annotations

import pickle
import threading
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

INIT_SEED = 0

# What a checkpoint that does not load raises (torch.load and load_state_dict).
CHECKPOINT_ERRORS: tuple[type[BaseException], ...] = (
    RuntimeError,
    ValueError,
    KeyError,
    TypeError,
    EOFError,
    OSError,
    pickle.UnpicklingError,
    zipfile.BadZipFile,
)

StateDict = dict[str, torch.Tensor]


def read_state_dicts(path: Path) -> list[StateDict]:
    """The state dicts in a checkpoint: one, or several for an ensemble.

    Accepted layouts: a bare ``state_dict``; ``{"state_dict": sd}`` or ``{"model": sd}`` (MONAI Label
    and ignite checkpoints); ``{"ensemble": [sd, ...]}``. Only tensors are unpickled (weights_only).
    A ``module.`` prefix (DataParallel) is dropped.
    """
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, Mapping) and "ensemble" in obj:
        members = obj["ensemble"]
        if not isinstance(members, (list, tuple)) or not members:
            raise ValueError("'ensemble' must be a non-empty list of state dicts")
    elif isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        members = [obj["state_dict"]]
    elif isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        members = [obj["model"]]
    else:
        members = [obj]
    return [_clean(m) for m in members]


def _clean(member: Any) -> StateDict:
    if not isinstance(member, Mapping) or not member:
        raise ValueError("a checkpoint member is not a state dict (a mapping of parameter names to tensors)")
    out: StateDict = {}
    for key, value in member.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise ValueError(f"checkpoint entry {key!r} is not a named tensor")
        out[key.removeprefix("module.")] = value
    return out


def seeded(factory: Callable[[], nn.Module], seed: int = INIT_SEED) -> nn.Module:
    """Build a network with a fixed seed, without touching the caller's random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory()


def load_networks(
    factory: Callable[[], nn.Module], states: list[StateDict], device: torch.device
) -> list[nn.Module]:
    """One network per state dict, loaded strictly, in eval mode on ``device``."""
    nets = []
    for state in states:
        net = factory()
        net.load_state_dict(state, strict=True)
        nets.append(net.to(device).eval())
    return nets


CacheKey = tuple[str, int, str]  # (model, version, device)


class NetworkCache:
    """Built networks per (model, version, device); building one key never blocks the others.

    When a newer version of a model is cached, older versions of that model on that device go.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[CacheKey, list[nn.Module]] = {}
        self._building: dict[CacheKey, threading.Lock] = {}

    def get(self, key: CacheKey, build: Callable[[], list[nn.Module]]) -> list[nn.Module]:
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                return found
            gate = self._building.setdefault(key, threading.Lock())
        with gate:
            with self._lock:
                found = self._entries.get(key)
                if found is not None:
                    return found
            nets = build()
            with self._lock:
                model, version, device = key
                for old in [k for k in self._entries if k[0] == model and k[2] == device and k[1] != version]:
                    del self._entries[old]
                self._entries[key] = nets
                self._building.pop(key, None)
            return nets

    def keys(self) -> list[CacheKey]:
        with self._lock:
            return list(self._entries)
