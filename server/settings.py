"""One typed settings object, built from CLI flags and ``LABELLOOP_*`` environment variables."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from server.errors import ConfigError

ENV_PREFIX = "LABELLOOP_"


@dataclass
class Settings:
    app_dir: Path
    studies: Path
    db_url: str = ""
    data_dir: Path | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    threads: int = 8
    lease_seconds: int = 600
    session_expiry_seconds: int = 3600
    session_max_expiry_seconds: int = 86400
    session_sweep_seconds: int = 300
    max_upload_mb: int = 2048
    infer_queue: int = 4
    infer_workers: int = 1
    dicom_port: int = 0
    dicom_aet: str = "LABELLOOP"
    dicom_allow: str = ""
    dicom_series_idle_seconds: float = 5.0
    # C-STORE destination for DICOM SEG exports of final labels: "AET@host:port" (empty: none).
    dicom_export_node: str = ""
    # A DICOMweb PACS as the source (``--dicomweb`` or ``--studies http...``); ``studies`` caches it.
    dicomweb_url: str = ""
    dicomweb_prefetch: int = 4
    dicomweb_sync_seconds: float = 300.0
    # /proxy/dicom/{qido,wado,stow}/...: a path added per operation (MONAI Label's *_PREFIX settings)
    dicomweb_qido_prefix: str = ""
    dicomweb_wado_prefix: str = ""
    dicomweb_stow_prefix: str = ""
    cors_origins: str = "*"
    # When set, every request needs ``Authorization: Bearer <token>`` (see server/api/auth.py).
    api_token: str = ""
    # Background jobs: "" = SqliteHuey in <data>/queue.db, or redis://host:port/db for remote workers.
    queue: str = ""
    embedded_worker: bool = True  # start a job consumer child process with the server
    retrain_after: int = 0  # start training after this many new final labels (0: never); --conf wins
    conf: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.app_dir = Path(self.app_dir).expanduser().resolve()
        self.studies = Path(self.studies).expanduser().resolve()
        if self.data_dir is None:
            self.data_dir = self.studies / ".labelloop"
        self.data_dir = Path(self.data_dir).expanduser().resolve()
        if not self.db_url:
            self.db_url = f"sqlite:///{self.data_dir / 'labelloop.db'}"
        self.db_url = normalise_db_url(self.db_url)

    @property
    def data(self) -> Path:
        assert self.data_dir is not None
        return self.data_dir

    def validate(self) -> None:
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

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """Fill unset values from ``LABELLOOP_<NAME>`` variables; explicit overrides win."""
        values: dict[str, object] = {}
        for f in fields(cls):
            env = os.environ.get(ENV_PREFIX + f.name.upper())
            if env is not None and f.name != "conf":
                values[f.name] = _coerce(f.type, env)
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "app_dir" not in values or "studies" not in values:
            raise ConfigError("app_dir and studies are required (--app, --studies)")
        return cls(**values)  # type: ignore[arg-type]


def settings_env(settings: Settings) -> dict[str, str]:
    """``LABELLOOP_*`` variables that rebuild ``settings`` (``conf`` aside) in a child process."""
    env: dict[str, str] = {}
    for f in fields(settings):
        value = getattr(settings, f.name)
        if f.name != "conf" and value is not None:
            env[ENV_PREFIX + f.name.upper()] = str(value)
    return env


def _coerce(type_name: object, raw: str) -> object:
    text = str(type_name)
    if text.startswith("bool"):
        return raw.strip().lower() in ("1", "true", "yes", "on")
    if text.startswith("int"):
        return int(raw)
    if text.startswith("float"):
        return float(raw)
    if "Path" in text:
        return Path(raw)
    return raw


def normalise_db_url(url: str) -> str:
    """``postgres://`` (Heroku style) and bare ``postgresql://`` become the psycopg 3 driver URL."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url
