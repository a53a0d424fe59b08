"""One DDP rank: ``torchrun --standalone --nproc_per_node=N -m server.jobs.ddp <job_id> [--conf K V]``.

Launched by a training job (:func:`server.jobs.kinds.train.launch_ddp`) when more than one GPU is visible
and ``multi_gpu`` is on. Each rank rebuilds the app from the ``LABELLOOP_*`` environment, trains its
share (``DistributedSampler``) of the same recipe wrapped in ``DistributedDataParallel`` (NCCL on CUDA,
Gloo otherwise), and rank 0 records the stats and writes the result; the launching job publishes it.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
import warnings
from typing import NoReturn

from server.settings import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server.jobs.ddp")
    parser.add_argument("job_id")
    parser.add_argument("--conf", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(levelname)s %(name)s: %(message)s")
    for category in (FutureWarning, DeprecationWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category)
    from server.jobs.execute import job_services, load_context
    from server.jobs.kinds.train import train_rank

    settings = Settings.from_env(conf=dict(args.conf))
    try:
        train_rank(load_context(job_services(settings, args.job_id), args.job_id))
    except BaseException:
        traceback.print_exc()
        return 1
    return 0


def leave(code: int) -> NoReturn:
    """Exit without interpreter finalisation, once the output is flushed.

    By then the rank has written what it writes and destroyed its process group. Gloo's worker threads
    can still hold tensors, and destroying them while the interpreter shuts down aborted a rank now and
    then ("terminate called without an active exception", SIGABRT; pytorch/pytorch#179291 describes it).
    torchrun then reported the whole run as failed.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    leave(main())
