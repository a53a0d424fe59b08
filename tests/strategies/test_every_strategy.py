"""Every built-in strategy, enabled in turn in the segmentation app: either the app refuses to load it
(naming the scoring it lacks), or its picks carry a score, or say why not and what chose them."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.app import create_app
from server.apploader import AppLoadError
from server.settings import Settings
from strategies.registry import BUILTIN_STRATEGIES
from tests.conftest import SEG_APP


@pytest.mark.parametrize("name", sorted(BUILTIN_STRATEGIES))
def test_no_listed_strategy_answers_unscored_silently(studies: Path, name: str) -> None:
    settings = Settings(app_dir=SEG_APP, studies=studies, embedded_worker=False, conf={"strategies": name})
    try:
        app = create_app(settings, background=False)
    except AppLoadError as exc:
        assert name in str(exc) and "scores, which no scoring method of this app computes" in str(exc)
        assert BUILTIN_STRATEGIES[name]().needs()  # only a strategy that reads scores is refused
        return
    client = app.test_client()
    assert name in client.get("/info/").get_json()["strategies"]
    picks = client.post(f"/activelearning/{name}", json={"k": 2, "client_id": "a"}).get_json()["batch"]
    assert len(picks) == 2
    for pick in picks:
        if BUILTIN_STRATEGIES[name]().needs():
            # no scoring job has run: every pick says so, and what served it instead
            assert pick.get("score") is None and pick["score_reason"] and pick["fallback"], pick
        else:
            assert "score_reason" not in pick
