"""The Flask app factory: settings in, a wired app out.

``create_app`` = build the services (:func:`server.services.build_services`), register every blueprint
from :data:`server.api.BLUEPRINTS`, install CORS, the error handlers and (with a token) auth.
"""

from __future__ import annotations

import logging
from logging.handlers import RotatingFileHandler

from flask import Flask
from flask_cors import CORS

from server import __version__
from server.api import BLUEPRINTS, auth, loading, metrics, requestlog
from server.api.common import SERVICES_KEY
from server.api.errors import register_error_handlers
from server.api.jsonout import FiniteJSONProvider
from server.appspec import AppSpec
from server.services import build_services
from server.settings import Settings

log = logging.getLogger(__name__)


def create_app(settings: Settings, app_spec: AppSpec | None = None, *, background: bool = True) -> Flask:
    """Build the server. ``background=False`` starts no threads or processes (tests of the services)."""
    settings.check()
    settings.data.mkdir(parents=True, exist_ok=True)
    _setup_file_logging(settings)
    services = build_services(settings, app_spec, role="server", background=background)

    app = Flask("labelloop", static_folder=None)
    app.json_provider_class = FiniteJSONProvider
    app.json = FiniteJSONProvider(app)  # replies are valid JSON: NaN and infinities become null
    app.url_map.strict_slashes = False  # serve /info and /info/ alike, never a redirect
    app.config["MAX_CONTENT_LENGTH"] = settings.max_upload_mb * 1024 * 1024
    app.extensions[SERVICES_KEY] = services
    install_cors(app, settings.cors_origins)
    register_error_handlers(app)
    requestlog.install(app)  # an X-Request-ID on every request (and in JSON log lines)
    auth.install(app)  # who is calling, and may they (a no-op while auth is off)
    loading.install(app)  # after a restart, what needs the app waits while it loads
    metrics.install(app)
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)
    log.info("labelloop %s ready: app %s, studies %s", __version__, settings.app_dir, settings.studies)
    return app


def install_cors(app: Flask, origins: str) -> None:
    """CORS from a configured list. ``*`` (the default) allows every origin without credentials:
    a browser then sends no cookie, and no origin is ever reflected with credentials allowed. A list
    of origins (comma-separated) allows credentials for exactly those."""
    allowed = [o.strip() for o in origins.split(",") if o.strip()]
    if not allowed or "*" in allowed:
        CORS(app, origins="*", send_wildcard=True, supports_credentials=False)
    else:
        CORS(app, origins=allowed, supports_credentials=True)


def _setup_file_logging(settings: Settings) -> None:
    """Log to ``<data>/logs/app.log`` (what ``/logs/`` serves), once per file."""
    path = settings.data / "logs" / "app.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    if any(isinstance(h, RotatingFileHandler) and h.baseFilename == str(path) for h in root.handlers):
        return
    handler = RotatingFileHandler(path, maxBytes=10 * 1024 * 1024, backupCount=3)
    handler.setFormatter(logging.Formatter("[%(asctime)s] [%(levelname)s] (%(name)s) %(message)s"))
    if settings.log_json:
        requestlog.use_json_lines(handler)
        for other in root.handlers:  # the console too
            requestlog.use_json_lines(other)
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
