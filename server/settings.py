"""One typed settings object, built from CLI flags and ``LABELLOOP_*`` environment variables.

A pydantic-settings model: every field can come from ``LABELLOOP_<NAME>`` (keyword arguments win), and
values are read with the wire parsers of :mod:`server.wire` (``1``/``true``/``yes`` for flags). A wrong
value fails at start with the field and the reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from server.errors import ConfigError
from server.wire import LaxBool, LaxFloat, LaxInt, describe

ENV_PREFIX = "LABELLOOP_"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", validate_default=False)

    app_dir: Path = Field(description="the app folder (its main.py declares models and trainers)")
    studies: Path = Field(description="the studies folder (or the DICOMweb source's local cache)")
    db_url: str = Field("", description="SQLAlchemy URL; empty: SQLite in the data folder")
    data_dir: Path | None = Field(
        None, description="state: database, models, jobs; default <studies>/.labelloop"
    )
    host: str = Field("127.0.0.1", description="the address to bind")
    port: LaxInt = Field(8000, description="the HTTP port")
    threads: LaxInt = Field(8, description="request threads")
    http_connection_limit: LaxInt = Field(1000, description="open HTTP connections before new ones wait")
    http_idle_seconds: LaxInt = Field(60, description="an HTTP connection idle this long is closed")
    lease_seconds: LaxInt = Field(600, description="how long a study handed out stays with its annotator")
    session_expiry_seconds: LaxInt = Field(3600, description="a /session/ upload's default lifetime")
    session_max_expiry_seconds: LaxInt = Field(86400, description="... and the longest one asked for")
    session_sweep_seconds: LaxInt = Field(300, description="how often expired sessions are removed")
    max_upload_mb: LaxInt = Field(2048, description="the largest request body")
    max_voxels: LaxInt = Field(1024 * 1024 * 2000, description="the most voxels one uploaded volume may hold")
    max_volume_mb: LaxInt = Field(8000, description="the largest decompressed voxel payload of one volume")
    infer_queue: LaxInt = Field(4, description="inference requests that may wait (more: 429)")
    infer_workers: LaxInt = Field(1, description="inference requests that run at once")
    dicom_port: LaxInt = Field(0, description="the DICOM Storage SCP's port (0: no listener)")
    dicom_aet: str = Field("LABELLOOP", description="the listener's AE title")
    dicom_allow: str = Field("", description="allowed callers, AET@host,...; empty: any")
    dicom_series_idle_seconds: LaxFloat = Field(5.0, description="a series converts after this quiet time")
    dicom_export_node: str = Field(
        "", description="C-STORE destination of final labels as SEG: AET@host:port"
    )
    dicomweb_url: str = Field("", description="a DICOMweb PACS as the source; studies caches it")
    dicomweb_prefetch: LaxInt = Field(4, description="DICOMweb series fetched ahead of the annotators")
    dicomweb_sync_seconds: LaxFloat = Field(300.0, description="how often the source is asked for new series")
    dicomweb_qido_prefix: str = Field("", description="a path added to /proxy/dicom/qido/ (as MONAI Label's)")
    dicomweb_wado_prefix: str = Field("", description="a path added to /proxy/dicom/wado/")
    dicomweb_stow_prefix: str = Field("", description="a path added to /proxy/dicom/stow/")
    cors_origins: str = Field("*", description="origins allowed by CORS")
    share_paths: LaxBool | None = Field(
        None,
        description="name server files in replies (an image's 'path', sessions), for a viewer on this host;"
        " default: only while bound to loopback",
    )
    auth: LaxBool = Field(False, description="require a login (also on whenever a user exists)")
    token_hours: LaxFloat = Field(12.0, description="how long a login's bearer token lasts")
    overlap: LaxFloat = Field(
        0.0, description="the share of studies labelled by two annotators independently (0..1)"
    )
    train_labels: Literal["final", "approved"] = Field(
        "final", description="what training uses: every final label, or approved labels only"
    )
    ohif_dir: Path | None = Field(
        None, description="an OHIF build to serve at /ohif/; default the monailabel wheel's"
    )
    audit_share: LaxFloat = Field(
        0.1, description="share of next-sample picks served uniformly at random to measure the model (0..1)"
    )
    log_json: LaxBool = Field(False, description="log lines as JSON with request, job and image ids")
    api_token: str = Field(
        "", description="when set, every request needs it as a bearer token (server/api/auth.py)"
    )
    queue: str = Field(
        "", description="job queue: empty for SQLite in the data folder, or redis://host:port/db"
    )
    embedded_worker: LaxBool = Field(True, description="start a job consumer child process with the server")
    retrain_after: LaxInt = Field(
        0, description="train after this many new final labels (0: never); --conf wins"
    )
    job_stale_seconds: LaxFloat = Field(
        60.0, description="a running job without a worker heartbeat this long ends ERROR"
    )
    chunk_size: LaxInt = Field(
        500,
        description="a rescore or batch inference over more studies than this is split into chunks that"
        " any worker takes (0: never split)",
    )
    job_kinds: str = Field(
        "", description="more job kinds: module names, comma-separated (server/jobs/kinds/)"
    )
    conf: dict[str, str] = Field(default_factory=dict, description="the app's --conf KEY VALUE settings")

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
        if self.chunk_size < 0:
            raise ConfigError(f"--chunk-size {self.chunk_size}: must be 0 (never split) or more")
        if self.job_stale_seconds < 10:
            raise ConfigError("--job-stale-seconds must be at least 10 (workers write a heartbeat every 5 s)")
        if not 0.0 <= self.audit_share <= 1.0:
            raise ConfigError(f"--audit-share {self.audit_share}: must be a share in 0..1")
        if self.ohif_dir is not None and not (Path(self.ohif_dir) / "index.html").is_file():
            raise ConfigError(f"--ohif {self.ohif_dir}: no index.html there (an OHIF build folder)")
        if not 0.0 <= self.overlap <= 1.0:
            raise ConfigError(f"--overlap {self.overlap}: must be a share in 0..1")
        if self.token_hours <= 0:
            raise ConfigError("--token-hours must be positive")
        if self.lease_seconds <= 0:
            raise ConfigError("--lease-seconds must be positive")
        if self.dicomweb_url and not self.dicomweb_url.startswith(("http://", "https://")):
            raise ConfigError(f"--dicomweb {self.dicomweb_url}: expected http(s)://host:port/dicom-web")

    @property
    def paths_shared(self) -> bool:
        if self.share_paths is not None:
            return self.share_paths
        return self.host in ("127.0.0.1", "localhost", "::1")

    @property
    def extra_job_kinds(self) -> list[str]:
        return [name.strip() for name in self.job_kinds.split(",") if name.strip()]

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        """``LABELLOOP_<NAME>`` variables, then the overrides that are not None; errors as ConfigError."""
        try:
            return cls(**{k: v for k, v in overrides.items() if v is not None})
        except ValidationError as exc:
            raise ConfigError(describe(exc, lambda name: f"{name} ({ENV_PREFIX}{name.upper()})")) from None


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
