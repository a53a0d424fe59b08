"""``python -m server.jobs.run <job_id> [--conf K V ...]``: one job, in its own process.

Started by a consumer's supervisor with the server's settings in ``LABELLOOP_*`` variables. Prints its
progress (the supervisor streams stdout into the row's ``details``); on failure writes the exception text
into the row's ``error`` and exits 1, so the supervisor records ERROR, never DONE. It exits by itself
when its parent (the consumer) goes away.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
import warnings

from sqlalchemy import update

from server.jobs.models import Job
from server.jobs.procs import watch_parent
from server.settings import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server.jobs.run")
    parser.add_argument("job_id")
    parser.add_argument("--conf", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"))
    parser.add_argument("--no-parent-watch", action="store_true", help="keep running if the parent exits")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(levelname)s %(name)s: %(message)s")
    for category in (FutureWarning, DeprecationWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category)
    logging.getLogger("monai").setLevel(logging.ERROR)  # optional-codec notices, not the job's news
    if not args.no_parent_watch:
        watch_parent(os.getppid(), lambda: os._exit(3))

    settings = Settings.from_env(conf=dict(args.conf))
    from server.jobs.execute import execute, job_services

    services = job_services(settings, args.job_id)
    db = services.db
    try:
        execute(services, args.job_id)
    except Exception as exc:
        traceback.print_exc(file=sys.stdout)
        text = f"{type(exc).__name__}: {exc}"[:4000]
        print(f"ERROR: {text}", flush=True)
        with db.session() as s:
            s.execute(update(Job).where(Job.id == args.job_id).values(error=text))
        return 1
    finally:
        services.close()
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
