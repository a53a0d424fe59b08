"""After a restart the app loads in the background (server/services.py): requests that need it wait for
it here (503 when it failed to load). What answers without it: ``/info/`` (from the app's card), health
probes, metrics, login and the pages' shells."""

from __future__ import annotations

from flask import Flask, request

from server.api.common import services

WITHOUT_APP = frozenset(
    {
        "info.info",
        "health.live",
        "health.ready",
        "metrics.metrics",
        "auth.auth_info",
        "auth.auth_token",
        "auth.auth_valid",
        "login.page",
        "login.submit",
        "login.logout",
    }
)


def install(app: Flask) -> None:
    @app.before_request
    def _wait_for_app() -> None:
        if request.endpoint not in WITHOUT_APP and request.method != "OPTIONS":
            services().wait_for_app()  # raises Unavailable (503) when the app did not load
