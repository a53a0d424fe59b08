"""One typed settings object, built from CLI flags and ``LABELLOOP_*`` environment variables.

A pydantic-settings model: every field can come from ``LABELLOOP_<NAME>`` (keyword arguments win), and
values are read with the wire parsers of :mod:`server.wire` (``1``/``true``/``yes`` for flags). A wrong
value fails at start with the field and the reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from server.errors import ConfigError
from server.wire import LaxBool, LaxFloat, LaxInt

ENV_PREFIX = "LABELLOOP_"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", validate_default=False)

    app_dir: Path
    studies: Path
    db_url: str = ""
    data_dir: Path | None = None
    host: str = "127.0.0.1"
    port: LaxInt = 8000
    threads: LaxInt = 8
    lease_seconds: LaxInt = 600
    session_expiry_seconds: LaxInt = 3600
    session_max_expiry_seconds: LaxInt = 86400
    session_sweep_seconds: LaxInt = 300
    max_upload_mb: LaxInt = 2048
    infer_queue: LaxInt = 4
    infer_workers: LaxInt = 1
    dicom_port: LaxInt = 0
    dicom_aet: str = "LABELLOOP"
    dicom_allow: str = ""
    dicom_series_idle_seconds: LaxFloat = 5.0
    # C-STORE destination for DICOM SEG exports of final labels: "AET@host:port" (empty: none).
    dicom_export_node: str = ""
    # A DICOMweb PACS as the source (``--dicomweb`` or ``--studies http...``); ``studies`` caches it.
    dicomweb_url: str = ""
    dicomweb_prefetch: LaxInt = 4
    dicomweb_sync_seconds: LaxFloat = 300.0
    # /proxy/dicom/{qido,wado,stow}/...: a path added per operation (MONAI Label's *_PREFIX settings)
    dicomweb_qido_prefix: str = ""
    dicomweb_wado_prefix: str = ""
    dicomweb_stow_prefix: str = ""
    cors_origins: str = "*"
    # When set, every request needs ``Authorization: Bearer <token>`` (see server/api/auth.py).
    api_token: str = ""
    # Background jobs: "" = SqliteHuey in <data>/queue.db, or redis://host:port/db for remote workers.
    queue: str = ""
    embedded_worker: LaxBool = True  # start a job consumer child process with the server
    retrain_after: LaxInt = 0  # start training after this many new final labels (0: never); --conf wins
    # More job kinds: comma-separated module names, each defining KIND (see server/jobs/kinds/).
    job_kinds: str = ""
    conf: dict[str, str] = {}

    @model_validator(mode="after")
    def _resolve(self) -> Settings:
        self.app_dir = Path(self.app_dir).expanduser().resolve()
        self.studies = Path(self.studies).expanduser().resolve()
        if self.data_dir is None:
            self.data_dir = self.studies / ".labelloop"
        self.data_dir = Path(self.data_dir).expanduser().resolve()
        if not self.db_url:
            self.db_url = f"sqlite:///{self.data_dir / 'labelloop.db'}"
        self.db_url = normalise_db_url(self.db_url)
        return self

    @property
    def data(self) -> Path:
        assert self.data_dir is not None
        return self.data_dir

    def check(self) -> None:
        """Paths and ranges that must hold before the server starts; a ConfigError says what to do."""
        if not (self.app_dir / "main.py").is_file():
            raise ConfigError(
                f"--app {self.app_dir}: no main.py there; point --app at a folder like apps/segmentation"
            )
        if not self.studies.is_dir():
            raise ConfigError(
                f"--studies {self.studies}: not a folder; create it or omit --studies for a demo set"
            )
        if not 0 <= self.port < 65536:
            raise ConfigError(f"--port {self.port}: must be 0..65535")
        if self.lease_seconds <= 0:
            raise ConfigError("--lease-seconds must be positive")
        if self.dicomweb_url and not self.dicomweb_url.startswith(("http://", "https://")):
            raise ConfigError(f"--dicomweb {self.dicomweb_url}: expected http(s)://host:port/dicom-web")

    @property
    def extra_job_kinds(self) -> list[str]:
        return [name.strip() for name in self.job_kinds.split(",") if name.strip()]

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        """``LABELLOOP_<NAME>`` variables, then the overrides that are not None; errors as ConfigError."""
        try:
            return cls(**{k: v for k, v in overrides.items() if v is not None})
        except ValidationError as exc:
            raise ConfigError(describe_errors(exc, prefix=ENV_PREFIX)) from None


def describe_errors(exc: ValidationError, prefix: str = "") -> str:
    """``name: reason`` for each invalid field, on one line."""
    parts = []
    for error in exc.errors():
        name = ".".join(str(p) for p in error["loc"]) or "value"
        reason = "required (--app and --studies)" if error["type"] == "missing" else error["msg"]
        parts.append(f"{name} ({prefix}{name.upper()}): {reason}")
    return "; ".join(parts)


def settings_env(settings: Settings) -> dict[str, str]:
    """``LABELLOOP_*`` variables that rebuild ``settings`` (``conf`` aside) in a child process."""
    env: dict[str, str] = {}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if name != "conf" and value is not None:
            env[ENV_PREFIX + name.upper()] = str(value)
    return env


def normalise_db_url(url: str) -> str:
    """``postgres://`` (Heroku style) and bare ``postgresql://`` become the psycopg 3 driver URL."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url
