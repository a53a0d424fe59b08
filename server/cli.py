"""The ``labelloop`` command: ``start`` the server, make a ``demo`` studies folder, ``index`` one."""

from __future__ import annotations

import argparse
import gc
import hashlib
import logging
import os
import signal
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import Progress

from server import __version__
from server.errors import ConfigError

console = Console(stderr=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="labelloop", description="Active-learning annotation server")
    parser.add_argument("--version", action="version", version=f"labelloop {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    start = sub.add_parser("start", help="run the server")
    start.add_argument(
        "--app", type=Path, default=None, help="app folder with main.py (default: apps/segmentation)"
    )
    start.add_argument(
        "--studies",
        default=None,
        help="studies folder, or a DICOMweb URL such as http://host:8042/dicom-web (default: a demo folder)",
    )
    start.add_argument("--db", default=None, help="SQLAlchemy URL (default: SQLite in <studies>/.labelloop)")
    start.add_argument("--data-dir", type=Path, default=None, help="where the database, sessions and logs go")
    start.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    start.add_argument("--port", type=int, default=None, help="port (default 8000)")
    start.add_argument("--threads", type=int, default=None, help="request threads (default 8)")
    start.add_argument(
        "--lease-seconds", type=int, default=None, help="how long a served study stays reserved"
    )
    start.add_argument(
        "--dicom-port", type=int, default=None, help="also run a DICOM Storage SCP on this port"
    )
    start.add_argument("--dicom-aet", default=None, help="the SCP's AE title (default LABELLOOP)")
    start.add_argument("--dicom-allow", default=None, help="callers let in: AET, AET@HOST, @HOST, ...")
    start.add_argument("--dicom-export", default=None, help="send DICOM SEG of final labels to AET@HOST:PORT")
    start.add_argument("--dicomweb", default=None, help="DICOMweb PACS URL to take studies from")
    start.add_argument(
        "--queue",
        default=None,
        help="job queue: sqlite:///PATH (default <data>/queue.db) or redis://HOST:PORT/DB",
    )
    start.add_argument(
        "--no-worker", action="store_true", help="run no job consumer here (jobs wait for `labelloop worker`)"
    )
    start.add_argument("--retrain-after", type=int, default=None, help="train after N new final labels")
    start.add_argument(
        "--chunk-size",
        type=int,
        default=None,
        help="studies per chunk of a rescore or batch inference, for any worker (500; 0: never split)",
    )
    start.add_argument(
        "--auth",
        action="store_true",
        help="require a login (on anyway once `labelloop user add` made a user)",
    )
    start.add_argument(
        "--overlap", type=float, default=None, help="share of studies labelled by two annotators (0..1)"
    )
    start.add_argument("--ohif", type=Path, default=None, help="an OHIF build to serve at /ohif/")
    start.add_argument(
        "--audit-share", type=float, default=None, help="share of picks served at random to measure the model"
    )
    start.add_argument("--log-json", action="store_true", help="log lines as JSON (with request ids)")
    start.add_argument(
        "--train-labels",
        choices=("final", "approved"),
        default=None,
        help="train on final (default) or approved labels",
    )
    start.add_argument(
        "--conf", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"), help="app setting"
    )

    demo = sub.add_parser("demo", help="generate a demo studies folder")
    demo.add_argument("folder", type=Path)
    demo.add_argument("--count", type=int, default=12)
    demo.add_argument("--size", type=int, default=64)

    worker = sub.add_parser("worker", help="run background jobs (training, scoring, batch inference)")
    worker.add_argument("--app", type=Path, default=None, help="the server's app folder")
    worker.add_argument("--studies", type=Path, default=None, help="the server's studies folder (shared)")
    worker.add_argument("--db", default=None, help="the server's database URL")
    worker.add_argument("--data-dir", type=Path, default=None, help="the server's data dir (shared)")
    worker.add_argument("--queue", default=None, help="the server's --queue (redis://... for remote workers)")
    worker.add_argument("--workers", type=int, default=0, help="jobs at once (default: one per device)")
    worker.add_argument("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)
    worker.add_argument(
        "--conf", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"), help="app setting"
    )

    user = sub.add_parser("user", help="manage users: add, list, disable, enable, reset")
    user_sub = user.add_subparsers(dest="user_command", required=True)
    for name, text in (
        ("add", "add a user (a password is generated and printed once when none is given)"),
        ("list", "list users and roles"),
        ("disable", "disable a user (their tokens stop working)"),
        ("enable", "enable a disabled user"),
        ("reset", "set a new password (generated when none is given) and optionally a new role"),
    ):
        cmd = user_sub.add_parser(name, help=text)
        if name != "list":
            cmd.add_argument("name")
        if name in ("add", "reset"):
            cmd.add_argument("--role", required=name == "add", help="admin, reviewer, annotator or viewer")
            cmd.add_argument("--password", default=None, help="default: a generated one, printed once")
        cmd.add_argument("--studies", type=Path, default=None, help="the server's studies folder")
        cmd.add_argument("--db", default=None, help="the server's database URL (wins over --studies)")

    index = sub.add_parser("index", help="index a studies folder into its database and report")
    index.add_argument("--studies", type=Path, required=True)
    index.add_argument("--db", default=None)

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "start":
            return _start(args)
        if args.command == "worker":
            return _worker(args)
        if args.command == "demo":
            _demo(args.folder, args.count, args.size)
            return 0
        if args.command == "user":
            return _user(args)
        return _index(args)
    except ConfigError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 2


def _demo(folder: Path, count: int, size: int) -> None:
    from server.demo import generate

    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"demo studies in {folder}", total=count)
        written = generate(folder, count, size, lambda done, total: progress.update(task, completed=done))
    console.print(f"{written} new demo studies in {folder}")


def _default_app() -> Path:
    for base in (Path.cwd(), Path(__file__).resolve().parent.parent):
        candidate = base / "apps" / "segmentation"
        if (candidate / "main.py").is_file():
            return candidate
    raise ConfigError("no --app given and no apps/segmentation found; pass --app DIR")


def _start(args: argparse.Namespace) -> int:
    from waitress import serve

    from server.api.common import services_of
    from server.app import create_app
    from server.apploader import AppLoadError
    from server.settings import Settings

    studies, dicomweb = args.studies, args.dicomweb
    if studies is not None and studies.startswith(("http://", "https://")):
        studies, dicomweb = None, studies  # MONAI Label style: a URL is the source, a local folder its cache
    if studies is None and dicomweb:
        studies = _dicomweb_cache(dicomweb, args.data_dir)
    elif studies is None:
        studies = Path.cwd() / "demo-studies"
        if not studies.is_dir() or not any(studies.iterdir()):
            _demo(studies, 12, 64)
    settings = Settings.from_env(
        app_dir=args.app or _default_app(),
        studies=studies,
        db_url=args.db,
        data_dir=args.data_dir,
        host=args.host,
        port=args.port,
        threads=args.threads,
        lease_seconds=args.lease_seconds,
        dicom_port=args.dicom_port,
        dicom_aet=args.dicom_aet,
        dicom_allow=args.dicom_allow,
        dicom_export_node=args.dicom_export,
        dicomweb_url=dicomweb,
        queue=args.queue,
        embedded_worker=False if args.no_worker else None,
        retrain_after=args.retrain_after,
        auth=True if args.auth else None,
        overlap=args.overlap,
        train_labels=args.train_labels,
        ohif_dir=args.ohif,
        audit_share=args.audit_share,
        chunk_size=args.chunk_size,
        log_json=True if args.log_json else None,
        conf=dict(args.conf),
    )
    try:
        with console.status("indexing studies and loading the app"):
            app = create_app(settings)
    except AppLoadError as exc:
        console.print(f"[red]app failed to load:[/red] {exc}")
        return 2
    services = services_of(app)
    report = services.index_report  # None: a restart indexes in the background (server/services.py)
    indexed = (
        f"{report.images_added} new, {report.seconds}s"
        if report is not None
        else "indexing in the background"
    )
    users = services.users.list()
    if settings.auth and not users and not settings.api_token:
        console.print(
            "[yellow]auth is on and there are no users:[/yellow] "
            "add one with `labelloop user add NAME --role admin`"
        )
    elif users:
        console.print(f"auth on: {len(users)} user(s); log in with the Slicer plugin or POST /auth/token")
    console.print(
        f"labelloop {__version__} on [bold]http://{settings.host}:{settings.port}/[/bold]  "
        f"studies {settings.studies} ({indexed})  db {settings.db_url.split('://')[0]}"
    )
    signal.signal(signal.SIGTERM, _leave_on_sigterm)
    # What start-up built (torch, MONAI, the app) lives as long as the process: move it out of the
    # collector's view, so that the first full collections do not scan it all again. Measured with
    # benchmarks/dicom_ingest.py: the first 300 C-STOREs after start took ~20 % longer without it.
    gc.collect()
    gc.freeze()
    serve(
        app,
        host=settings.host,
        port=settings.port,
        threads=settings.threads,
        max_request_body_size=settings.max_upload_mb * 1024 * 1024,
        channel_timeout=settings.http_idle_seconds,  # an idle connection is closed after this
        connection_limit=settings.http_connection_limit,  # open connections before new ones wait
        cleanup_interval=10,
        ident="labelloop",
    )
    return 0


def _dicomweb_cache(url: str, data_dir: Path | None) -> Path:
    """The local folder that caches a DICOMweb source's volumes: ``<data-dir>/studies`` or one per URL."""
    digest = hashlib.sha1(url.encode()).hexdigest()[:16]
    base = data_dir or Path.home() / ".cache" / "labelloop" / "dicomweb" / digest
    folder = base / "studies"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _worker(args: argparse.Namespace) -> int:
    from server.jobs.worker import run_worker
    from server.settings import Settings

    settings = Settings.from_env(
        app_dir=args.app,
        studies=args.studies,
        db_url=args.db,
        data_dir=args.data_dir,
        queue=args.queue,
        conf=dict(args.conf) or None,
    )
    settings.check()
    settings.data.mkdir(parents=True, exist_ok=True)
    return run_worker(settings, parent_pid=args.parent_pid, workers=args.workers)


def _user(args: argparse.Namespace) -> int:
    """``labelloop user ...`` on the database ``start`` uses (``--db``, or SQLite under ``--studies``)."""
    from rich.table import Table

    from server.database import Database
    from server.errors import LabelloopError
    from server.settings import normalise_db_url
    from server.team.users import Users

    if args.db or os.environ.get("LABELLOOP_DB_URL"):
        url = normalise_db_url(args.db or os.environ["LABELLOOP_DB_URL"])
    elif args.studies:
        data = args.studies.resolve() / ".labelloop"
        data.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{data / 'labelloop.db'}"
    else:
        raise ConfigError(
            "give --studies (the server's folder) or --db (its database URL, or LABELLOOP_DB_URL)"
        )
    db = Database(url)
    db.migrate()
    users = Users(db, token_seconds=3600)
    try:
        if args.user_command == "add":
            password = users.add(args.name, args.role, args.password)
            console.print(f"user [bold]{args.name}[/bold] ({args.role}) added")
            if args.password is None:
                print(f"password: {password}")  # shown once, on stdout (the rest goes to stderr)
        elif args.user_command == "list":
            table = Table("name", "role", "disabled")
            for u in users.list():
                table.add_row(u.name, u.role, "yes" if u.disabled else "")
            Console().print(table)
        elif args.user_command in ("disable", "enable"):
            users.set_disabled(args.name, args.user_command == "disable")
            console.print(f"user [bold]{args.name}[/bold] {args.user_command}d")
        else:
            password = users.reset(args.name, args.password, args.role)
            console.print(
                f"user [bold]{args.name}[/bold]: new password" + (f", role {args.role}" if args.role else "")
            )
            if args.password is None:
                print(f"password: {password}")
    except LabelloopError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 2
    finally:
        db.dispose()
    return 0


def _leave_on_sigterm(*_: object) -> None:
    """Leave ``serve()`` so atexit stops the services; a second SIGTERM during that shutdown is ignored."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.exit(0)


def _index(args: argparse.Namespace) -> int:
    from server.database import Database
    from server.datastore.indexer import index_studies
    from server.settings import normalise_db_url

    studies = args.studies.resolve()
    url = normalise_db_url(args.db or f"sqlite:///{studies / '.labelloop' / 'labelloop.db'}")
    (studies / ".labelloop").mkdir(parents=True, exist_ok=True)
    db = Database(url)
    db.migrate()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("indexing", total=None)
        report = index_studies(
            db, studies, lambda what, done, total: progress.update(task, completed=done, total=total)
        )
    console.print(report.as_dict())
    return 0


if __name__ == "__main__":
    sys.exit(main())
