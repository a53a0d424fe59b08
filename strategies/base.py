"""The selection interface: a name, a description, and one typed ``select`` method."""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Candidate:
    """An unlabelled study that no other annotator holds a lease on."""

    image_id: str
    last_served_ts: float = 0.0  # 0.0: never served
    score: float | None = None


@dataclass(frozen=True)
class Selection:
    """A chosen study; ``fields`` are merged into the reply (MONAI Label's ``weight``, a score...)."""

    image_id: str
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass
class SelectionContext:
    strategy: str
    client_id: str | None
    params: dict[str, Any]
    now: float
    rng: random.Random


class CandidatePool(Protocol):
    """Unlabelled studies that are not leased to another annotator. Each method is one indexed query."""

    def count(self) -> int: ...

    def least_recently_served(self, k: int) -> list[Candidate]:
        """Never-served studies first (in random order), then the least recently served."""
        ...

    def by_id(self, k: int, descending: bool = False) -> list[Candidate]:
        """The lexicographically first (or last) ids."""
        ...

    def score_version(self, method: str) -> str | None:
        """The model version of the newest stored ``method`` scores (None when there are none, or when
        the pool holds a single version). Scores and embeddings of one scoring run share it."""
        ...

    def top_scored(self, method: str, k: int, model_version: str | None = None) -> list[Candidate]:
        """The highest scores of ``method`` under ``model_version`` (the current one when None)."""
        ...

    def score_values(
        self, method: str, ids: Sequence[str], model_version: str | None = None
    ) -> dict[str, float]:
        """Stored ``method`` values of those ``ids`` that are open candidates and have one (the latest
        model version of ``method`` when None). Extra values of a scoring method are named
        ``<method>.<key>``, e.g. ``entropy.foreground_fraction``."""
        ...

    def embeddings(self, ids: Sequence[str], model_version: str | None = None) -> dict[str, list[float]]:
        """Stored embedding vectors of those ``ids`` that are open candidates and have one (the latest
        model version when None)."""
        ...

    def taken(self, model_version: str | None = None) -> list[list[float]]:
        """Stored embeddings of the studies already chosen: leased to another annotator now, and the
        labelled ones (the most recently served first, at most a few thousand). A batch-aware strategy
        counts them as chosen, so one annotator's pick keeps away from what the team already holds.
        Skipped studies are not among them (see ``skipped``)."""
        ...

    def skipped(self, model_version: str | None = None) -> list[list[float]]:
        """Stored embeddings of the studies annotators set aside as unreadable (the most recent first, at
        most a few thousand): what a strategy can learn to stay away from."""
        ...


class Strategy(ABC):
    """Chooses the next studies to annotate."""

    name: str = ""
    description: str = ""

    def needs(self) -> tuple[str, ...]:
        """The scoring methods whose stored values this strategy reads (an app must compute them)."""
        return ()

    @abstractmethod
    def select(self, pool: CandidatePool, k: int, context: SelectionContext) -> list[Selection]:
        """Return up to ``k`` selections, best first; an empty list when nothing is left."""
