"""DICOM ingest: CT_small clones sent by dcmtk's ``storescu`` over one and four associations into

  (i)   ``bare``       a minimal pynetdicom Storage SCP (defaults; writes ``event.encoded_dataset()``),
  (ii)  ``dcmtk``      dcmtk's ``storescp --fork``,
  (iii) ``labelloop``  the real server (``--dicom-port``): atomic write + fsync, row per instance,
                       series converted in the background as they go idle,
and, for reference, ``bare-tuned``: (i) with the two pynetdicom settings labelloop uses (no PDU size
limit, a 0.2 ms network poll), to show what the tuning alone buys.

Reports instances/s (wall time from the first storescu start to the last exit), the ratio to (i), the
slow-down from the first to the last block of 1,000 (receiver-side timestamps), and checks that every
instance arrived exactly once. Prints JSON and a table; writes ``benchmarks/results/dicom_ingest.json``.

    .venv/bin/python benchmarks/dicom_ingest.py                        # 1,000 and 10,000
    .venv/bin/python benchmarks/dicom_ingest.py --sizes 1000 --repeat 1  # quick
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from server.dicom.devtools import dcmtk_tool  # noqa: E402
from server.dicom.synth import many_instances  # noqa: E402

PER_SERIES = 100
GOAL = {"ratio_to_bare": 1.0, "slowdown": 0.20}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dcmtk_env() -> dict[str, str]:
    return {**os.environ, "TCP_NODELAY": "1"}  # Nagle off, or each instance waits for a delayed ACK


# ---- (i) the bare pynetdicom receiver, run as ``--serve-bare PORT DIR [tuned]`` ----------------------
def serve_bare(port: int, out: Path, tuned: bool) -> None:
    from pynetdicom import AE, AllStoragePresentationContexts, evt
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    out.mkdir(parents=True, exist_ok=True)
    lock = threading.Lock()
    calls = [0]

    def handle_store(event: Any) -> int:
        with open(out / f"{event.request.AffectedSOPInstanceUID}.dcm", "wb") as f:
            f.write(event.encoded_dataset())
        with lock:
            calls[0] += 1
        return 0x0000

    def handle_requested(event: Any) -> None:
        event.assoc.dul._run_loop_delay = 0.0002

    ae = AE(ae_title="BARE")
    for cx in AllStoragePresentationContexts:
        ae.add_supported_context(cx.abstract_syntax)
    ae.add_supported_context(Verification)
    handlers: list[Any] = [(evt.EVT_C_STORE, handle_store)]
    if tuned:
        ae.maximum_pdu_size = 0
        handlers.append((evt.EVT_REQUESTED, handle_requested))
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=handlers)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    server.shutdown()
    (out.parent / "bare-calls.json").write_text(json.dumps({"calls": calls[0]}))


# ---- targets ------------------------------------------------------------------------------------------
class Target:
    name = ""
    aet = ""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        raise NotImplementedError

    def wait_echo(self, timeout: float = 60) -> None:
        echoscu = dcmtk_tool("echoscu")
        assert echoscu is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited early ({self.proc.returncode})")
            cmd = [echoscu, "-aec", self.aet, "127.0.0.1", str(self.port)]
            if subprocess.run(cmd, env=dcmtk_env(), capture_output=True).returncode == 0:
                return
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not answer C-ECHO")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def received(self) -> tuple[dict[str, int], dict[str, Any]]:
        """``{sop_uid: receive time (ns)}`` and extra checks."""
        raise NotImplementedError


class Bare(Target):
    name, aet = "bare", "BARE"
    tuned = False

    def start(self) -> None:
        cmd = [sys.executable, __file__, "--serve-bare", str(self.port), str(self.work / "out")]
        if self.tuned:
            cmd.append("tuned")
        with open(self.work / "server.log", "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        self.wait_echo()

    def received(self) -> tuple[dict[str, int], dict[str, Any]]:
        times = {p.name[: -len(".dcm")]: p.stat().st_mtime_ns for p in (self.work / "out").iterdir()}
        calls = json.loads((self.work / "bare-calls.json").read_text())["calls"]
        return times, {"handler_calls": calls}


class BareTuned(Bare):
    name = "bare-tuned"
    tuned = True


class Dcmtk(Target):
    name, aet = "dcmtk", "DCMTK"

    def start(self) -> None:
        (self.work / "out").mkdir()
        storescp = dcmtk_tool("storescp")
        assert storescp is not None
        cmd = [storescp, "-v", "--fork", "-aet", self.aet, "-od", str(self.work / "out"), str(self.port)]
        self.log = open(self.work / "server.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, env=dcmtk_env(), stdout=self.log, stderr=subprocess.STDOUT)
        self.wait_echo()

    def stop(self) -> None:
        super().stop()
        self.log.close()

    def received(self) -> tuple[dict[str, int], dict[str, Any]]:
        times = {p.name.split(".", 1)[1]: p.stat().st_mtime_ns for p in (self.work / "out").iterdir()}
        text = (self.work / "server.log").read_text(errors="replace")
        return times, {"store_requests": text.count("Received Store Request")}


class Labelloop(Target):
    name, aet = "labelloop", "LABELLOOP"

    def start(self) -> None:
        (self.work / "studies").mkdir()
        self.http = free_port()
        cmd = [
            sys.executable,
            "-m",
            "server.cli",
            "start",
            "--app",
            str(REPO / "apps" / "segmentation"),
            "--studies",
            str(self.work / "studies"),
            "--port",
            str(self.http),
            "--dicom-port",
            str(self.port),
        ]
        with open(self.work / "server.log", "wb") as log:
            self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        self.wait_echo(120)
        # Ready means the REST API answers too (the server has finished starting), as a PACS would
        # find it; the receiver's first second is otherwise shared with the start-up's last work.
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/info/", timeout=10):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def status(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/dicom/", timeout=10) as r:
            return dict(json.loads(r.read()))

    def received(self) -> tuple[dict[str, int], dict[str, Any]]:
        db = self.work / "studies" / ".labelloop" / "labelloop.db"
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            rows = conn.execute("SELECT sop_uid, received_ts FROM dicom_instances").fetchall()
            counted = conn.execute("SELECT coalesce(sum(n_instances), 0) FROM dicom_series").fetchone()[0]
            series = conn.execute("SELECT count(*) FROM dicom_series").fetchone()[0]
        files = sum(1 for _ in (self.work / "studies" / ".labelloop" / "dicom" / "incoming").rglob("*.dcm"))
        times = {sop: int(ts * 1e9) for sop, ts in rows}
        return times, {"rows": len(rows), "series_counted": counted, "files": files, "series": series}

    def wait_converted(self, n_series: int, timeout: float = 300) -> float | None:
        """Seconds until every series is a datastore image (idle timeout + conversion)."""
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < timeout:
            if self.status()["series"].get("ready", 0) >= n_series:
                return round(time.perf_counter() - t0, 2)
            time.sleep(0.5)
        return None


TARGETS: dict[str, type[Target]] = {
    "bare": Bare,
    "dcmtk": Dcmtk,
    "labelloop": Labelloop,
    "bare-tuned": BareTuned,
}


# ---- one run ------------------------------------------------------------------------------------------
def send(target: Target, files: list[Path], associations: int, work: Path) -> tuple[float, list[str]]:
    storescu = dcmtk_tool("storescu")
    assert storescu is not None
    chunks = [files[i::associations] for i in range(associations)]
    procs = []
    t0 = time.perf_counter()
    for chunk in chunks:
        # Every file named on one storescu command line goes over its one association.
        cmd = [storescu, "-aec", target.aet, "127.0.0.1", str(target.port), *map(str, chunk)]
        procs.append(subprocess.Popen(cmd, env=dcmtk_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    outputs = [p.communicate()[0].decode(errors="replace") for p in procs]
    wall = time.perf_counter() - t0
    errors = [o.strip() for p, o in zip(procs, outputs, strict=True) if p.returncode != 0 or o.strip()]
    return wall, errors


def fsync_probe(folder: Path, n: int = 40) -> float:
    """Mean ms for write + fsync of a 39 kB file here: the disk is shared, and labelloop waits on it."""
    data = os.urandom(39206)
    t0 = time.perf_counter()
    for i in range(n):
        path = folder / f"probe-{i}"
        with open(path, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        path.unlink()
    return round((time.perf_counter() - t0) / n * 1000, 3)


def slowdown(times_ns: list[int], block: int) -> dict[str, Any]:
    t = sorted(times_ns)
    if len(t) < 2 * block:
        return {"block": block, "first_s": None, "last_s": None, "slowdown": None}
    first = (t[block - 1] - t[0]) / 1e9
    last = (t[-1] - t[-block]) / 1e9
    blocks = [round((t[min(i + block, len(t)) - 1] - t[i]) / 1e9, 3) for i in range(0, len(t), block)]
    return {
        "block": block,
        "blocks_s": blocks,
        "first_s": round(first, 3),
        "last_s": round(last, 3),
        "slowdown": round(last / first - 1, 3),
    }


def run_one(name: str, files: list[Path], sops: set[str], associations: int, n_series: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"ingest-{name}-", dir=os.environ.get("BENCH_TMP")) as tmp:
        work = Path(tmp)
        target = TARGETS[name](work)
        load = os.getloadavg()[0]
        fsync_ms = fsync_probe(work)
        target.start()
        try:
            wall, errors = send(target, files, associations, work)
            converted = target.wait_converted(n_series) if isinstance(target, Labelloop) else None
        finally:
            target.stop()
        times, extra = target.received()
    n = len(files)
    got = set(times)
    block = 1000 if n >= 5000 else max(1, n // 10)
    result: dict[str, Any] = {
        "target": name,
        "instances": n,
        "associations": associations,
        "wall_s": round(wall, 3),
        "per_s": round(n / wall, 1),
        "lost": len(sops - got),
        "unexpected": len(got - sops),
        "storescu_errors": errors[:3],
        "load_before": round(load, 2),
        "fsync_ms_before": fsync_ms,
        **slowdown(list(times.values()), block),
        **extra,
    }
    duplicates = 0
    if "handler_calls" in extra:
        duplicates = extra["handler_calls"] - len(got)
    elif "store_requests" in extra:
        duplicates = extra["store_requests"] - len(got)
    elif "rows" in extra:
        duplicates = max(extra["series_counted"] - extra["rows"], extra["files"] - extra["rows"])
    result["duplicated"] = duplicates
    result["ok"] = not errors and result["lost"] == 0 and result["unexpected"] == 0 and duplicates == 0
    if converted is not None or isinstance(target, Labelloop):
        result["all_series_converted_after_s"] = converted
    return result


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The median run per (size, associations, target), with its ratio to bare's median."""
    groups: dict[tuple[int, int, str], list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["instances"], r["associations"], r["target"]), []).append(r)
    rows = []
    for (n, a, name), rs in sorted(groups.items()):
        rs = sorted(rs, key=lambda r: r["per_s"])
        med = rs[len(rs) // 2]
        bare = groups.get((n, a, "bare"))
        bare_rate = statistics.median(r["per_s"] for r in bare) if bare else None
        slowdowns = [r["slowdown"] for r in rs if r["slowdown"] is not None]
        rows.append(
            {
                "instances": n,
                "associations": a,
                "target": name,
                "runs": len(rs),
                "per_s_median": med["per_s"],
                "per_s_all": [r["per_s"] for r in rs],
                "ratio_to_bare": round(statistics.median(r["per_s"] for r in rs) / bare_rate, 2)
                if bare_rate
                else None,
                "slowdown_median": round(statistics.median(slowdowns), 3) if slowdowns else None,
                "block": med["block"],
                "all_ok": all(r["ok"] for r in rs),
                "lost": sum(r["lost"] for r in rs),
                "duplicated": sum(r["duplicated"] for r in rs),
            }
        )
    return rows


def conditions(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The machine while it ran: shared, so the load and the disk's fsync latency are part of the result."""
    loads = [r["load_before"] for r in runs]
    fsyncs = [r["fsync_ms_before"] for r in runs]
    return {
        "load_average_1min": {"min": min(loads), "median": statistics.median(loads), "max": max(loads)},
        "fsync_ms_39kB": {"min": min(fsyncs), "median": statistics.median(fsyncs), "max": max(fsyncs)},
        "labelloop_tuning": "pynetdicom maximum_pdu_size=0; a 0.2 ms network poll for a lone association;"
        " pynetdicom standard log handlers off (LOG_HANDLER_LEVEL none)",
    }


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'instances':>9} {'assoc':>5} {'target':<11} {'inst/s':>8} {'x bare':>7} {'slow-down':>10} "
        f"{'runs':>4}  checks"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        slow = "n/a" if r["slowdown_median"] is None else f"{r['slowdown_median'] * 100:+.0f}% /{r['block']}"
        ratio = "" if r["ratio_to_bare"] is None else f"{r['ratio_to_bare']:.2f}"
        checks = "ok" if r["all_ok"] else f"FAIL lost={r['lost']} dup={r['duplicated']}"
        lines.append(
            f"{r['instances']:>9} {r['associations']:>5} {r['target']:<11} {r['per_s_median']:>8.1f} "
            f"{ratio:>7} {slow:>10} {r['runs']:>4}  {checks}"
        )
    return "\n".join(lines)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve-bare":
        serve_bare(int(sys.argv[2]), Path(sys.argv[3]), len(sys.argv) > 4 and sys.argv[4] == "tuned")
        return 0
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--associations", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--targets", nargs="+", default=["bare", "dcmtk", "labelloop", "bare-tuned"])
    parser.add_argument("--repeat", type=int, default=3, help="runs per configuration (median reported)")
    parser.add_argument("--repeat-large", type=int, default=1, help="runs per configuration at >= 5,000")
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "labelloop-ingest-data")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "dicom_ingest.json")
    args = parser.parse_args()
    for tool in ("storescu", "storescp", "echoscu"):
        if dcmtk_tool(tool) is None:
            print(f"dcmtk's {tool} is missing: apt-get install -y dcmtk", file=sys.stderr)
            return 2

    biggest = max(args.sizes)
    manifest = args.data / f"manifest-{biggest}.json"
    if not manifest.exists():
        t0 = time.perf_counter()
        made = many_instances(args.data / f"series-{biggest}", biggest, PER_SERIES)
        pairs = [[str(f), sop] for s in made for f, sop in zip(s.files, s.sop_uids, strict=True)]
        manifest.write_text(json.dumps(pairs))
        print(f"generated {biggest} CT_small clones in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    pairs = json.loads(manifest.read_text())
    all_files = [Path(f) for f, _ in pairs]
    sop_of = {Path(f): sop for f, sop in pairs}

    runs: list[dict[str, Any]] = []
    for n in args.sizes:
        files = all_files[:n]
        expected = {sop_of[p] for p in files}
        n_series = len({p.parent for p in files})
        repeat = args.repeat if n < 5000 else args.repeat_large
        for associations in args.associations:
            for rep in range(repeat):
                order = args.targets[rep % len(args.targets) :] + args.targets[: rep % len(args.targets)]
                for name in order:  # rotate the order so no target always runs first (shared machine)
                    r = run_one(name, files, expected, associations, n_series)
                    runs.append(r)
                    print(
                        f"{n:>6} x{associations} {name:<11} {r['per_s']:>8.1f}/s  slow-down {r['slowdown']}  "
                        f"ok={r['ok']}  load {r['load_before']}  fsync {r['fsync_ms_before']} ms",
                        file=sys.stderr,
                    )
    rows = summarise(runs)
    report = {
        "benchmark": "dicom_ingest",
        "command": " ".join([".venv/bin/python", "benchmarks/dicom_ingest.py", *sys.argv[1:]]),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "data": f"pydicom CT_small.dcm clones, {PER_SERIES} slices a series, 39 kB each, new UIDs/positions",
        "sender": "dcmtk storescu 3.6.7, TCP_NODELAY=1; N associations = N storescu processes in parallel",
        "goal": GOAL,
        "conditions": conditions(runs),
        "summary": rows,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({"conditions": report["conditions"], "summary": rows}, indent=2))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
