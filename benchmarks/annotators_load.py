"""32 annotators at once: each asks next-sample and saves a label about once a second, for 3 minutes;
then the same 32 without waiting (saturation). On 100k studies, SQLite and (with ``--postgres``)
PostgreSQL, against the real server over HTTP, one keep-alive connection per annotator.

Reported: next-sample and save p50/p95/p99, requests per second, and the checks that matter under load:
no study handed to two annotators at once, none labelled twice, every save counted (the datastore's
``completed`` grew by exactly the saves). Prints JSON and a table; writes
``benchmarks/results/annotators_load.json``.

    .venv/bin/python benchmarks/annotators_load.py --postgres postgresql://postgres@127.0.0.1:5432/postgres
    .venv/bin/python benchmarks/annotators_load.py --studies 10000 --seconds 30 --saturation-seconds 15
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import os
import platform
import random
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

from datastore import build_folder, free_port, fresh_postgres, pct, start, stop  # noqa: E402

GOALS = {"paced_next_p95_ms": 25.0}  # #17: <= 25 ms under 32 paced annotators (PostgreSQL)


def label_payload() -> bytes:
    """An empty 4x4x4 label in the tiny studies' geometry."""
    img = nib.Nifti1Image(np.zeros((4, 4, 4), dtype=np.uint8), np.eye(4))
    return gzip.compress(img.to_bytes(), compresslevel=1)


def multipart(payload: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="params"\r\n\r\n{{}}\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="label"; filename="label.nii.gz"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + payload
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


class Annotator(threading.Thread):
    """Next-sample, then a label for the study, every ``pace`` seconds (0: as fast as the server answers)."""

    def __init__(self, n: int, port: int, until: float, pace: float, payload: bytes, holders: dict[str, str]):
        super().__init__(daemon=True)
        self.client_id = f"annotator-{n:02d}"
        self.port, self.until, self.pace, self.payload = port, until, pace, payload
        self.holders = holders  # study -> who holds it now (checked for double assignment)
        self.next_ms: list[float] = []
        self.save_ms: list[float] = []
        self.saved: list[str] = []
        self.errors: list[str] = []
        self.double: list[str] = []
        self.lock = threading.Lock()

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        body_next = json.dumps({"client_id": self.client_id}).encode()
        # Paced annotators start at random moments within the first second: people are not in step.
        tick = time.perf_counter() + random.Random(self.client_id).uniform(0.0, self.pace)
        time.sleep(max(0.0, tick - time.perf_counter()))
        while time.perf_counter() < self.until:
            t0 = time.perf_counter()
            conn.request(
                "POST", "/activelearning/random", body=body_next, headers={"content-type": "application/json"}
            )
            resp = conn.getresponse()
            data = resp.read()
            self.next_ms.append((time.perf_counter() - t0) * 1000)
            if resp.status != 200:
                self.errors.append(f"next {resp.status}")
                continue
            study = json.loads(data).get("id")
            if not study:
                break
            with HOLD_LOCK:
                other = self.holders.get(study)
                if other is not None and other != self.client_id:
                    self.double.append(study)
                self.holders[study] = self.client_id
            body, ctype = multipart(self.payload)
            t0 = time.perf_counter()
            conn.request(
                "PUT",
                f"/datastore/label?image={study}&tag=final&client_id={self.client_id}",
                body=body,
                headers={"content-type": ctype},
            )
            resp = conn.getresponse()
            resp.read()
            self.save_ms.append((time.perf_counter() - t0) * 1000)
            with HOLD_LOCK:
                self.holders.pop(study, None)
            if resp.status != 200:
                self.errors.append(f"save {resp.status}")
            else:
                self.saved.append(study)
            if self.pace:
                tick += self.pace
                time.sleep(max(0.0, tick - time.perf_counter()))
        conn.close()


HOLD_LOCK = threading.Lock()


def completed(port: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", "/datastore/?output=stats")
    return int(json.loads(conn.getresponse().read())["completed"])


def phase(port: int, clients: int, seconds: float, pace: float, payload: bytes) -> dict[str, Any]:
    before = completed(port)
    holders: dict[str, str] = {}
    until = time.perf_counter() + seconds
    team = [Annotator(n, port, until, pace, payload, holders) for n in range(clients)]
    t0 = time.perf_counter()
    for a in team:
        a.start()
    for a in team:
        a.join()
    wall = time.perf_counter() - t0
    nexts = [x for a in team for x in a.next_ms]
    saves = [x for a in team for x in a.save_ms]
    saved = [s for a in team for s in a.saved]
    after = completed(port)
    return {
        "clients": clients,
        "seconds": round(wall, 1),
        "pace_s": pace,
        "next_requests": len(nexts),
        "next_p50_ms": pct(nexts, 50),
        "next_p95_ms": pct(nexts, 95),
        "next_p99_ms": pct(nexts, 99),
        "save_p50_ms": pct(saves, 50),
        "save_p95_ms": pct(saves, 95),
        "save_p99_ms": pct(saves, 99),
        "requests_per_s": round((len(nexts) + len(saves)) / wall, 1),
        "next_per_s": round(len(nexts) / wall, 1),
        "errors": sum(len(a.errors) for a in team),
        "double_assigned": sum(len(a.double) for a in team),
        "labelled_twice": len(saved) - len(set(saved)),
        "saves": len(saved),
        "completed_delta": after - before,
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` and its finished children (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def run_db(
    n: int, root: Path, postgres: str, seconds: float, saturation: float, clients: int, audit_share: float
) -> dict[str, Any]:
    name = "postgresql" if postgres else "sqlite"
    folder = root / f"studies_{n}_{name}_{audit_share}"
    build_folder(folder, n)
    port = free_port()
    db = fresh_postgres(postgres, n) if postgres else ""
    extra = ("--audit-share", str(audit_share))
    proc, _, _ = start(folder, port, root / f"server-{name}.log", db, extra)
    try:
        payload = label_payload()
        out: dict[str, Any] = {"database": name, "studies": n, "audit_share": audit_share}
        for key, pace, length in (("paced", 1.0, seconds), ("saturated", 0.0, saturation)):
            cpu = cpu_seconds(proc.pid)
            out[key] = phase(port, clients, length, pace, payload)
            out[key]["server_cpu_share"] = round((cpu_seconds(proc.pid) - cpu) / out[key]["seconds"], 3)
    finally:
        stop(proc)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--saturation-seconds", type=float, default=60.0)
    parser.add_argument("--postgres", default="", help="also on PostgreSQL (a fresh database there)")
    parser.add_argument("--no-sqlite", action="store_true", help="only the PostgreSQL runs")
    parser.add_argument("--tmp", type=Path, default=None, help="where to build the studies (e.g. /dev/shm)")
    parser.add_argument(
        "--audit-share",
        type=float,
        nargs="+",
        default=[0.1],
        help="the server's --audit-share, one run per value (0.1: its default; each audited label is a"
        " model inference in the web process)",
    )
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "annotators_load.json")
    args = parser.parse_args()
    runs = []
    with tempfile.TemporaryDirectory(prefix="ll-load-", dir=args.tmp) as tmp:
        databases = ([] if args.no_sqlite else [""]) + ([args.postgres] if args.postgres else [])
        for pg in databases:
            for share in args.audit_share:
                run = run_db(
                    args.studies, Path(tmp), pg, args.seconds, args.saturation_seconds, args.clients, share
                )
                runs.append(run)
                print(json.dumps(run), flush=True)
    report = {
        "benchmark": "annotators_load",
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "transport": "HTTP/1.1 keep-alive to the real server (waitress), one connection per annotator thread,"
        " the clients on the same machine as the server",
        "runs": runs,
        "goals": GOALS,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    keys = [k for k in runs[0]["paced"] if k not in ("clients",)]
    head = " | ".join(
        f"{r['database']} audit {r['audit_share']} {p}" for r in runs for p in ("paced", "saturated")
    )
    print(f"\n| metric | {head} |\n|---|" + "---|" * (2 * len(runs)))
    for k in keys:
        print(f"| {k} | " + " | ".join(str(r[p][k]) for r in runs for p in ("paced", "saturated")) + " |")


if __name__ == "__main__":
    main()
