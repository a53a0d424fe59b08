"""A sharded rescore on one worker against two: the wall time from ``POST /scoring/`` to DONE.

The real topology as processes: ``labelloop start --no-worker`` and one or two ``labelloop worker``
processes over one data folder (SQLite database and queue), the segmentation app (entropy and TTA
scoring, 64^3 sliding window, initial weights) on synthetic 64^3 studies, the same ``chunk_size`` in
every run. Each run starts on a fresh data folder; the workers are started and ready before the clock
starts. Two placements:

- ``one_core_each``: each worker pinned to a core of its own, one torch thread (two single-core machines
  against one); the one-worker run is pinned the same way.
- ``shared``: the workers unpinned, torch's default threads (two workers contend for the same cores).

Prints JSON and a table; writes ``benchmarks/results/sharded_rescore.json``.

    .venv/bin/python benchmarks/sharded_rescore.py                    # 96 studies, chunks of 24
    .venv/bin/python benchmarks/sharded_rescore.py --studies 16 --chunk-size 4 --placements shared
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from server.demo import generate  # noqa: E402

APP = REPO / "apps" / "segmentation"
CONF = ["--conf", "roi_size", "64"]
GOAL_RATIO = 0.6  # #17: a rescore on two workers <= 0.6x its wall time on one


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn(cmd: list[str], log: Path, cpus: set[int] | None, threads: int | None) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    if threads is not None:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))

    def pin() -> None:
        if cpus is not None:
            os.sched_setaffinity(0, cpus)

    with open(log, "wb") as out:
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, preexec_fn=pin)


def wait_for_line(log: Path, text: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and text in log.read_text(errors="replace"):
            return
        time.sleep(0.2)
    raise RuntimeError(
        f"{log.name}: no {text!r} in {timeout:.0f} s:\n{log.read_text(errors='replace')[-2000:]}"
    )


def one_run(pool: Path, work: Path, workers: int, placement: str, chunk_size: int) -> dict[str, Any]:
    data = work / f"data-{placement}-{workers}"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    common = ["--app", str(APP), "--studies", str(pool), "--data-dir", str(data), *CONF]
    server = spawn(
        [sys.executable, "-m", "server.cli", "start", *common, "--port", str(port), "--no-worker"],
        work / f"server-{placement}-{workers}.log",
        None,
        None,
    )
    procs = [server]
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{url}/info/", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.3)
        cores = sorted(os.sched_getaffinity(0))
        for n in range(workers):
            pinned = placement == "one_core_each"
            log = work / f"worker-{placement}-{workers}-{n}.log"
            procs.append(
                spawn(
                    [sys.executable, "-m", "server.cli", "worker", *common],
                    log,
                    {cores[n % len(cores)]} if pinned else None,
                    1 if pinned else None,
                )
            )
            wait_for_line(log, "job consumer")
        t0 = time.perf_counter()
        task = requests.post(f"{url}/scoring/", json={"chunk_size": chunk_size}, timeout=30).json()
        while task["status"] not in ("DONE", "ERROR", "STOPPED"):
            time.sleep(0.25)
            task = next(
                t
                for t in requests.get(f"{url}/scoring/", params={"all": "true"}).json()
                if t["id"] == task["id"]
            )
        wall = time.perf_counter() - t0
        if task["status"] != "DONE":
            raise RuntimeError(f"the rescore ended {task['status']}: {task.get('error')}")
        with sqlite3.connect(data / "labelloop.db") as conn:
            chunks = conn.execute(
                "SELECT chunk, worker, start_ts, end_ts FROM jobs WHERE parent_id = ? ORDER BY chunk",
                (task["id"],),
            ).fetchall()
        return {
            "workers": workers,
            "placement": placement,
            "wall_s": round(wall, 2),
            "chunks": len(chunks),
            "chunks_per_worker": sorted(
                [sum(1 for c in chunks if c[1] == w) for w in {c[1] for c in chunks}], reverse=True
            ),
            "chunk_seconds_mean": round(sum(c[3] - c[2] for c in chunks) / max(1, len(chunks)), 2),
            "scored": task["result"].get("scored"),
        }
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--studies", type=int, default=96)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--chunk-size", type=int, default=24)
    parser.add_argument("--placements", nargs="+", default=["one_core_each", "shared"])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "sharded_rescore.json")
    args = parser.parse_args()
    runs = []
    with tempfile.TemporaryDirectory(prefix="ll-shards-") as tmp:
        work = Path(tmp)
        pool = work / "studies"
        generate(pool, count=args.studies, size=args.size)
        for placement in args.placements:
            for workers in (1, 2):
                run = one_run(pool, work, workers, placement, args.chunk_size)
                runs.append(run)
                print(json.dumps(run), flush=True)
    ratios = {}
    for placement in args.placements:
        one = next(r["wall_s"] for r in runs if r["placement"] == placement and r["workers"] == 1)
        two = next(r["wall_s"] for r in runs if r["placement"] == placement and r["workers"] == 2)
        ratios[placement] = round(two / one, 3)
    result = {
        "studies": args.studies,
        "size": args.size,
        "chunk_size": args.chunk_size,
        "machine": platform.machine(),
        "cpus": len(os.sched_getaffinity(0)),
        "methods": ["entropy", "tta"],
        "runs": runs,
        "two_over_one": ratios,
        "goal_two_over_one": GOAL_RATIO,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"\n{'placement':<15}{'workers':>8}{'wall s':>9}{'chunks/worker':>16}{'s/chunk':>9}")
    for r in runs:
        per = ",".join(map(str, r["chunks_per_worker"]))
        print(
            f"{r['placement']:<15}{r['workers']:>8}{r['wall_s']:>9.1f}{per:>16}{r['chunk_seconds_mean']:>9.1f}"
        )
    for placement, ratio in ratios.items():
        print(f"{placement}: two workers / one = {ratio:.2f} (goal <= {GOAL_RATIO})")


if __name__ == "__main__":
    main()
