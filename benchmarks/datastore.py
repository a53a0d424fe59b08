"""Datastore at scale: index, restart, next-sample, stats, paged listing, the Reviewer's ``output=all``
with review state, ``/review/cases`` and the dashboard's data, on 10k and 100k studies (30 % of them
labelled, 1,000 of those reviewed).

Builds tiny-study folders (real 4x4x4 NIfTI files), starts the real server on each, and drives it over
HTTP with a persistent connection, as a viewer plugin does. Prints JSON and a table; writes
``benchmarks/results/datastore.json``.

    .venv/bin/python benchmarks/datastore.py                 # 10k and 100k
    .venv/bin/python benchmarks/datastore.py --sizes 1000    # quick
    .venv/bin/python benchmarks/datastore.py --sizes 100000 1000000 --postgres postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

import nibabel as nib
import numpy as np
import psutil

REPO = Path(__file__).resolve().parent.parent
APP = REPO / "apps" / "segmentation"
GOALS = {
    10_000: {"next_p95_ms": 5.0},
    100_000: {"next_p95_ms": 10.0, "restart_s": 2.0, "output_all_s": 5.0, "dashboard_p95_ms": 300.0},
    1_000_000: {"next_p95_ms": 10.0},  # #17: on PostgreSQL, one client
}
LABELLED = 0.3  # share of studies with a final label on disk
REVIEWED = 1000  # labels given a review state (approved / flagged) through the Reviewer's call
REVIEWER_TIMEOUT_S = 5.0  # the Reviewer plugin's requests timeout for output=all


def tiny_nifti() -> bytes:
    img = nib.Nifti1Image(np.arange(64, dtype=np.uint8).reshape(4, 4, 4), np.eye(4))
    return gzip.compress(img.to_bytes(), compresslevel=1)


def build_folder(folder: Path, n: int) -> float:
    t0 = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    labels = folder / "labels" / "final"
    labels.mkdir(parents=True, exist_ok=True)
    payload = tiny_nifti()
    every = round(1 / LABELLED)
    for i in range(n):
        with open(folder / f"study_{i:06d}.nii.gz", "wb") as f:
            f.write(payload)
        if i % every == 0:
            with open(labels / f"study_{i:06d}.nii.gz", "wb") as f:
                f.write(payload)
    return time.perf_counter() - t0


def review(conn: http.client.HTTPConnection, n: int) -> None:
    """Approve or flag ``REVIEWED`` labels with the Reviewer plugin's call (updatelabelinfo)."""
    every = round(1 / LABELLED)
    for k in range(min(REVIEWED, n // every)):
        status = "approved" if k % 4 else "flagged"
        meta = {"segmentationMeta": {"status": status, "approvedBy": "rita", "level": "easy", "comment": ""}}
        body = urlencode({"params": json.dumps(meta)})
        conn.request(
            "PUT",
            f"/datastore/updatelabelinfo?label=study_{k * every:06d}&tag=final",
            body=body,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200, resp.status


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(
    folder: Path, port: int, log: Path, db: str = "", extra: tuple[str, ...] = ()
) -> tuple[subprocess.Popen[bytes], float, float]:
    """The server, once it answers ``/info/`` (seconds to that) and once its app is loaded (seconds to
    ``/health/ready``: after a restart ``/info/`` answers from the app's card before the app loads)."""
    t0 = time.perf_counter()
    cmd = [
        sys.executable,
        "-m",
        "server.cli",
        "start",
        "--app",
        str(APP),
        "--studies",
        str(folder),
        "--port",
        str(port),
        *(["--db", db] if db else []),
        *extra,
    ]
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    info_s = 0.0
    for path in ("/info/", "/health/ready"):
        while True:
            if proc.poll() is not None:
                raise RuntimeError(log.read_text())
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", path)
                if conn.getresponse().status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.02)
        info_s = info_s or time.perf_counter() - t0
    return proc, info_s, time.perf_counter() - t0


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(timeout=30)


def index_seconds(log: Path) -> float:
    """The server logs each index pass with its duration; take the last one."""
    for line in reversed(log.read_text().splitlines()):
        if "indexed" in line and "'seconds':" in line:
            return float(line.split("'seconds':")[1].split(",")[0])
    return float("nan")


def timed(
    conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None, n: int
) -> list[float]:
    out = []
    headers = {"content-type": "application/json"} if body else {}
    for _ in range(n):
        t0 = time.perf_counter()
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        out.append((time.perf_counter() - t0) * 1000)
        assert resp.status == 200, data[:200]
    return out


def pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 3)


def fresh_postgres(base: str, n: int) -> str:
    """A new, empty database next to ``base`` (a PostgreSQL URL) for one size; its URL."""
    import psycopg

    name = f"ll_bench_{n}_{os.getpid()}"
    admin = base.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    return base.rsplit("/", 1)[0] + "/" + name


def seed_scores(folder: Path, db: str) -> None:
    """An ``entropy`` score for every unlabelled study, as a rescore stores them (so the score-based
    strategy has what it reads at this size)."""
    sys.path.insert(0, str(REPO))
    from sqlalchemy import insert, select

    from server.database import Database
    from server.models import Image, Score
    from server.settings import Settings

    url = db or Settings(app_dir=APP, studies=folder).db_url
    database = Database(url)
    rng = np.random.default_rng(0)
    with database.session() as s:
        ids = list(s.scalars(select(Image.id).where(Image.completed.is_(False))))
    now = time.time()
    for i in range(0, len(ids), 20_000):
        chunk = ids[i : i + 20_000]
        values = rng.random(len(chunk))
        rows = [
            {
                "image_id": x,
                "method": "entropy",
                "model_version": "segmentation@0",
                "value": float(v),
                "ts": now,
            }
            for x, v in zip(chunk, values, strict=True)
        ]
        with database.session() as s:
            s.execute(insert(Score), rows)
    database.dispose()


def run_size(n: int, root: Path, requests: int, postgres: str = "") -> dict[str, object]:
    folder = root / f"studies_{n}"
    build_s = build_folder(folder, n)
    log = root / f"server_{n}.log"
    port = free_port()
    db = fresh_postgres(postgres, n) if postgres else ""
    proc, first_ready, _ = start(folder, port, log, db)
    first_index = index_seconds(log)
    stop(proc)
    seed_scores(folder, db)
    proc, restart_ready, restart_loaded = start(folder, port, log, db)
    restart_index = index_seconds(log)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    result: dict[str, object] = {
        "studies": n,
        "build_folder_s": round(build_s, 2),
        "first_index_s": first_index,
        "first_ready_s": round(first_ready, 2),
        "restart_index_s": restart_index,
        "restart_ready_s": round(restart_ready, 2),  # to /info/
        "restart_app_loaded_s": round(restart_loaded, 2),  # to /health/ready (torch, MONAI, the app)
    }
    timed(conn, "GET", "/info/", None, 5)  # warm
    for strategy in ("random", "first", "entropy"):
        lat = []
        for i in range(requests):
            body = json.dumps({"client_id": f"annotator-{i % 4}"}).encode()
            lat += timed(conn, "POST", f"/activelearning/{strategy}", body, 1)
        result[f"next_{strategy}_p50_ms"] = pct(lat, 50)
        result[f"next_{strategy}_p95_ms"] = pct(lat, 95)
    stats = timed(conn, "GET", "/datastore/?output=stats", None, requests)
    result["stats_p95_ms"] = pct(stats, 95)
    page = []
    after = ""
    for _ in range(requests):
        t0 = time.perf_counter()
        conn.request("GET", f"/datastore/?output=page&limit=100&after={after}")
        resp = conn.getresponse()
        body = json.loads(resp.read())
        page.append((time.perf_counter() - t0) * 1000)
        after = body["next"] or ""
    result["page_p95_ms"] = pct(page, 95)
    info = timed(conn, "GET", "/info/", None, requests)
    result["info_p95_ms"] = pct(info, 95)
    review(conn, n)
    listing, parsing = [], []
    for _ in range(3):
        t0 = time.perf_counter()
        conn.request("GET", "/datastore/?output=all")
        resp = conn.getresponse()
        raw = resp.read()
        listing.append(time.perf_counter() - t0)  # the server's part: request to last byte
        t0 = time.perf_counter()
        body = json.loads(raw)
        parsing.append(time.perf_counter() - t0)  # the client's part (json.loads here)
    assert len(body["objects"]) == n
    reviewed = sum(
        1
        for o in body["objects"].values()
        if "segmentationMeta" in o["labels"].get("final", {}).get("info", {})
    )
    result["output_all_reviewed_labels"] = reviewed
    result["output_all_s_max"] = round(max(listing), 2)  # to the last byte, slowest of 3
    result["output_all_client_parse_s"] = round(max(parsing), 2)
    result["output_all_mb"] = round(len(json.dumps(body)) / 2**20, 1)
    cases = timed(conn, "GET", "/review/cases?limit=100", None, 20)
    result["review_cases_p95_ms"] = pct(cases, 95)
    dashboard = timed(conn, "GET", "/dashboard/data", None, 20)
    result["dashboard_p95_ms"] = pct(dashboard, 95)
    result["rss_mb"] = round(psutil.Process(proc.pid).memory_info().rss / 2**20, 1)
    stop(proc)
    goals = GOALS.get(n, {})
    result["goal_next_p95_ms"] = goals.get("next_p95_ms")
    result["goal_restart_s"] = goals.get("restart_s")
    result["goal_output_all_s"] = goals.get("output_all_s", REVIEWER_TIMEOUT_S)
    result["goal_dashboard_p95_ms"] = goals.get("dashboard_p95_ms")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--out", type=Path, default=None, help="default results/datastore[_postgres].json")
    parser.add_argument(
        "--postgres", default="", help="a PostgreSQL server URL: each size gets a fresh database there"
    )
    parser.add_argument("--tmp", type=Path, default=None, help="where to build the studies (e.g. /dev/shm)")
    args = parser.parse_args()
    if args.out is None:
        name = "datastore_postgres.json" if args.postgres else "datastore.json"
        args.out = REPO / "benchmarks" / "results" / name
    rows = []
    with tempfile.TemporaryDirectory(prefix="ll-bench-", dir=args.tmp) as tmp:
        for n in args.sizes:
            rows.append(run_size(n, Path(tmp), args.requests, args.postgres))
            print(f"{n} studies done", file=sys.stderr)
    report = {
        "benchmark": "datastore",
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_avg_at_end": [round(x, 2) for x in os.getloadavg()],
        },
        "database": "postgresql (a fresh database per size)" if args.postgres else "sqlite (default)",
        "transport": "HTTP/1.1 keep-alive to the real server (waitress), one client thread",
        "results": rows,
    }
    print(json.dumps(report, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    keys = [k for k in rows[0] if not k.startswith("goal_")]
    print("\n| metric | " + " | ".join(f"{r['studies']:,}" for r in rows) + " |")
    print("|---|" + "---|" * len(rows))
    for k in keys[1:]:
        print(f"| {k} | " + " | ".join(str(r[k]) for r in rows) + " |")


if __name__ == "__main__":
    main()
