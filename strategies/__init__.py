"""Active-learning strategies (selection) and scoring methods, one small module each.

Selection strategies implement :class:`strategies.base.Strategy`; they read candidates through a
:class:`strategies.base.CandidatePool`, whose every method is one indexed query in the server, so a
strategy never scans the datastore.
"""

from strategies.base import Candidate, CandidatePool, Selection, SelectionContext, Strategy

__all__ = ["Candidate", "CandidatePool", "Selection", "SelectionContext", "Strategy"]
