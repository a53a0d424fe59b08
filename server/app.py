"""The Flask app factory: settings in, a wired app out. Services live in ``app.extensions``."""

from __future__ import annotations

import logging
from logging.handlers import RotatingFileHandler

from flask import Flask
from flask_cors import CORS

from server import __version__, pseudo, registry
from server.api import activelearning, auth, datastore, infer, info, logs, misc, model, proxy, session
from server.apploader import load_app
from server.appspec import AppSpec
from server.database import Database
from server.datastore.indexer import index_studies
from server.datastore.store import Datastore
from server.dicom.service import DicomService
from server.errors import register_error_handlers
from server.inference import service as inference
from server.jobs import ext as jobs
from server.sampling import Sampler
from server.sessions import SessionStore
from server.settings import Settings

log = logging.getLogger(__name__)


def create_app(settings: Settings, app_spec: AppSpec | None = None, *, background: bool = True) -> Flask:
    """Build the server. ``background=False`` skips sweeper threads (tests that only call services)."""
    settings.validate()
    settings.data.mkdir(parents=True, exist_ok=True)
    _setup_file_logging(settings)

    app = Flask("labelloop")
    app.url_map.strict_slashes = False  # serve /info and /info/ alike, never a redirect
    app.config["MAX_CONTENT_LENGTH"] = settings.max_upload_mb * 1024 * 1024
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["settings"] = settings

    db = Database(settings.db_url)
    db.migrate()
    app.extensions["db"] = db

    store = Datastore(db, settings.studies)
    app.extensions["datastore"] = store
    pseudo.init_app(app)  # a final label removes the study's pseudo-label
    report = index_studies(db, settings.studies)
    log.info("indexed %s: %s", settings.studies, report.as_dict())
    app.extensions["index_report"] = report

    app.extensions["labelloop_app"] = (
        app_spec if app_spec is not None else load_app(settings.app_dir, settings.conf)
    )
    app.extensions["sampler"] = Sampler(db, store, settings.lease_seconds)
    sessions = SessionStore(
        db, settings.data / "sessions", settings.session_expiry_seconds, settings.session_max_expiry_seconds
    )
    app.extensions["sessions"] = sessions
    registry.init_app(app)  # model versions (weights files); training publishes here
    inference.init_app(app)  # bounded inference queue and cached networks
    if background:
        sessions.sweep()
        sessions.start_sweeper(settings.session_sweep_seconds)
    if settings.dicom_port > 0 or settings.dicomweb_url:
        DicomService().init_app(app, start=background)  # stopped at exit (atexit) or by .stop()

    jobs.init_app(app, background=background)  # train/scoring/batch jobs, /train/ and /batch/ routes
    CORS(app, origins=settings.cors_origins, supports_credentials=True)
    register_error_handlers(app)
    if settings.api_token:
        auth.init_app(app, settings.api_token)
    for module in (misc, info, datastore, activelearning, session, logs, infer, model, proxy):
        app.register_blueprint(module.bp)
    log.info("labelloop %s ready: app %s, studies %s", __version__, settings.app_dir, settings.studies)
    return app


def _setup_file_logging(settings: Settings) -> None:
    """Log to ``<data>/logs/app.log`` (what ``/logs/`` serves), once per file."""
    path = settings.data / "logs" / "app.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    if any(isinstance(h, RotatingFileHandler) and h.baseFilename == str(path) for h in root.handlers):
        return
    handler = RotatingFileHandler(path, maxBytes=10 * 1024 * 1024, backupCount=3)
    handler.setFormatter(logging.Formatter("[%(asctime)s] [%(levelname)s] (%(name)s) %(message)s"))
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
