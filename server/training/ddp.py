"""One DDP rank: ``torchrun --standalone --nproc_per_node=N -m server.training.ddp <job_id> [--conf K V]``.

Launched by a training job (:func:`server.jobs.execute.launch_ddp`) when more than one GPU is visible
and ``multi_gpu`` is on. Each rank rebuilds the app from the ``LABELLOOP_*`` environment, trains its
share (``DistributedSampler``) of the same recipe wrapped in ``DistributedDataParallel`` (NCCL on CUDA,
Gloo otherwise), and rank 0 records the stats and writes the result; the launching job publishes it.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings

from server.database import Database
from server.settings import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server.training.ddp")
    parser.add_argument("job_id")
    parser.add_argument("--conf", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(levelname)s %(name)s: %(message)s")
    for category in (FutureWarning, DeprecationWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category)
    from server.jobs.execute import train_rank

    settings = Settings.from_env(conf=dict(args.conf))
    train_rank(settings, Database(settings.db_url), args.job_id)
    return 0


if __name__ == "__main__":
    sys.exit(main())
