"""Schemathesis hooks for the contract run (``SCHEMATHESIS_HOOKS=tests.spine.schemathesis_hooks``)."""

from __future__ import annotations

from typing import Any

import schemathesis


@schemathesis.hook
def map_query(context: Any, query: dict[str, Any] | None) -> dict[str, Any] | None:
    """The contract server runs no job consumer, so ``run_sync`` would wait for a job that never runs
    (MONAI Label's run_sync has no time limit either): every other parameter is generated as documented."""
    if query:
        query.pop("run_sync", None)
    return query
