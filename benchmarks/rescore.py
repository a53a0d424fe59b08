"""Rescore cost: the scoring job after training, computing every declared method (as before) against
only what the exposed strategies read (``hybrid``: entropy alone).

Runs the ``scoring`` job kind in-process, as a job's process would, on synthetic 64^3 studies with the
segmentation app (which declares ``entropy`` and ``tta``), once per variant on a fresh database (after
one untimed warm-up run), with the model's initial weights on the current device. Prints a table and writes
``benchmarks/results/rescore.json``.

    .venv/bin/python benchmarks/rescore.py                 # 12 studies
    .venv/bin/python benchmarks/rescore.py --studies 24
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from server.demo import generate  # noqa: E402
from server.jobs.kinds.base import JobContext  # noqa: E402
from server.jobs.kinds.scoring import KIND as SCORING  # noqa: E402
from server.jobs.models import Job  # noqa: E402
from server.services import build_services  # noqa: E402
from server.settings import Settings  # noqa: E402

SIZE = 64


def run(studies: Path, data: Path, strategies: str, methods: list[str] | None) -> dict[str, Any]:
    settings = Settings(
        app_dir=REPO / "apps" / "segmentation",
        studies=studies,
        data_dir=data,
        embedded_worker=False,
        conf={"strategies": strategies, "roi_size": "64"},
    )
    server = build_services(settings, role="server", background=False)  # migrates and indexes
    services = build_services(settings, server.spec, role="job", workdir=data / "job")
    request: dict[str, Any] = {} if methods is None else {"methods": methods}
    job = Job.new("scoring", "segmentation", request, status="RUNNING")
    with services.db.session() as s:
        s.add(job)
    started = time.perf_counter()
    SCORING.run(JobContext(services, job))
    seconds = time.perf_counter() - started
    with services.db.session() as s:
        result = dict(s.get(Job, job.id).result)  # type: ignore[union-attr]
    services.close()
    server.close()
    return {
        "strategies": strategies,
        "methods": result["methods"],
        "scored": result["scored"],
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=12)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    work = Path(tempfile.mkdtemp(prefix="labelloop-rescore-"))
    studies = work / "studies"
    generate(studies, args.studies, SIZE)
    run(studies, work / "warmup", "hybrid", ["entropy"])  # first calls (network build, kernels) not timed
    every = run(studies, work / "every", "hybrid", None)  # before: every declared method
    read = run(studies, work / "read", "hybrid", ["entropy"])  # now: what hybrid reads
    report = {
        "studies": args.studies,
        "size": SIZE,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "machine": platform.machine(),
        "threads": torch.get_num_threads(),
        "every_method": every,
        "only_what_is_read": read,
        "ratio": read["seconds"] / every["seconds"],
    }
    out = REPO / "benchmarks" / "results" / "rescore.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    print(f"\n| rescore of {args.studies} studies ({SIZE}^3, {report['device']}) | methods | seconds |")
    print("|---|---|---|")
    for name, row in (("every declared method (before)", every), ("what hybrid reads (now)", read)):
        print(f"| {name} | {', '.join(row['methods'])} | {row['seconds']:.1f} |")
    print(f"| ratio | | {report['ratio']:.2f} |")


if __name__ == "__main__":
    main()
