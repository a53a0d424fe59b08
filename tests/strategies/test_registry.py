from __future__ import annotations

from strategies.base import Strategy
from strategies.registry import BUILTIN_SCORING, BUILTIN_STRATEGIES
from strategies.scoring import ScoringMethod


def test_every_builtin_is_named_described_and_constructible() -> None:
    assert {"random", "stratified_random", "entropy", "epistemic", "tta", "hybrid"} <= set(BUILTIN_STRATEGIES)
    assert {"entropy", "epistemic", "tta", "novelty"} <= set(BUILTIN_SCORING)
    for name, cls in BUILTIN_STRATEGIES.items():
        strategy = cls()
        assert isinstance(strategy, Strategy) and strategy.name == name and strategy.description
    for name, scoring in BUILTIN_SCORING.items():
        method = scoring()
        assert isinstance(method, ScoringMethod) and method.name == name and method.description
