"""Built-in selection strategies and scoring methods by name, for apps to pick from.

Apps instantiate what they declare (``{name: cls() for name, cls in BUILTIN_STRATEGIES.items()}``);
scoring methods that need arguments (spatial dims, an autoencoder) are built by the app.
"""

from __future__ import annotations

from strategies.base import Strategy
from strategies.diversity import Hybrid
from strategies.entropy import Entropy, EntropyScoring, ForegroundEntropyScoring
from strategies.epistemic import Epistemic, MCDropoutScoring
from strategies.first import First
from strategies.last import Last
from strategies.novelty import Novelty, NoveltyScoring
from strategies.random import Random
from strategies.scoring import ScoringMethod
from strategies.stratified import StratifiedRandom
from strategies.tta import TTA, TTAScoring

BUILTIN_STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (Random, First, Last, StratifiedRandom, Entropy, Epistemic, TTA, Hybrid, Novelty)
}

BUILTIN_SCORING: dict[str, type[ScoringMethod]] = {
    cls.name: cls
    for cls in (EntropyScoring, ForegroundEntropyScoring, MCDropoutScoring, TTAScoring, NoveltyScoring)
}
