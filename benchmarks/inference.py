"""Inference overhead: end-to-end ``POST /infer`` against bare ``sliding_window_inference``.

For each volume size, a CT-like NIfTI (spacing already at the app's target, LPS-flipped axes as a
scanner writes them) goes into a studies folder; the real server runs apps/segmentation (the light
U-Net, 64^3 windows, CPU unless CUDA is present). Measured alternately, several times each:

- ``e2e``: ``POST /infer/segmentation?image=<id>`` over HTTP as MONAI Label's client sends it
  (multipart reply, NIfTI result) and as OHIF sends it (``output=image``, uncompressed NRRD);
- ``bare``: ``sliding_window_inference`` in this process on the same preprocessed tensor (loaded
  once, before timing) with the same network (the app's seed-0 initialisation), same ROI and overlap.

The ratio is median(e2e) / median(bare). The server's own latencies say where the rest goes (pre,
infer, invert, post, write) and ``http`` is what is left (request, queue hand-off, reply transfer).
Prints JSON and a table; writes ``benchmarks/results/inference.json``.

    .venv/bin/python benchmarks/inference.py                  # 128^3 and 192x192x128, 5 rounds
    .venv/bin/python benchmarks/inference.py --sizes 64 --rounds 2 --out /tmp/inf.json   # quick
    .venv/bin/python benchmarks/inference.py --threads 1    # one intra-op thread per process

On a shared machine, wall times swing with other people's load; the CPU-time ratio (``ratio_cpu``,
server process vs this process, all threads) does not, least of all with ``--threads 1`` (no
OpenMP spin-waiting), so the committed figures come from such a run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import psutil
import requests
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from monai.inferers import sliding_window_inference  # noqa: E402

from server.apploader import load_app  # noqa: E402
from server.inference.request import InferRequest  # noqa: E402
from server.inference.task import tensor_input  # noqa: E402

APP = REPO / "apps" / "segmentation"
GOAL_RATIO = 1.15
# Spacing = the app's default target (1.5, 1.5, 2.0), axes flipped in x and y (LPS-stored, as scanners do).
AFFINE = np.array([[-1.5, 0, 0, 120.0], [0, -1.5, 0, 140.0], [0, 0, 2.0, -200.0], [0, 0, 0, 1]])
STAGES = ("pre", "infer", "invert", "post", "write")
CLIENTS = {
    "slicer": ("all", {}),  # MONAI Label client / 3D Slicer: multipart, result like the input (.nii.gz)
    "ohif": ("image", {"result_extension": ".nrrd", "result_dtype": "uint8", "result_compress": False}),
}


def ct_like(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """Body ellipsoid (soft tissue ~40 HU) in air, with an organ and lesions and scanner noise."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s, dtype=np.float32) for s in shape], indexing="ij"))
    body = (grid[0] / 0.85) ** 2 + (grid[1] / 0.7) ** 2 < 1.0
    organ = ((grid[0] - 0.25) / 0.35) ** 2 + ((grid[1] + 0.1) / 0.3) ** 2 + (grid[2] / 0.6) ** 2 < 1.0
    data = np.where(body, 40.0, -1000.0) + np.where(organ, 20.0, 0.0)
    for _ in range(4):
        c = rng.uniform(-0.3, 0.3, 3)
        lesion = ((grid - c[:, None, None, None]) ** 2).sum(0) < rng.uniform(0.003, 0.01)
        data = np.where(lesion & organ, 110.0, data)
    return (data + rng.normal(0, 12, shape)).astype(np.int16)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(studies: Path, port: int, log: Path, threads: int | None) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "server.cli", "start", "--app", str(APP), "--studies", str(studies)]
    cmd += ["--port", str(port)]
    env = {**os.environ, "LABELLOOP_EMBEDDED_WORKER": "0"}  # no idle job consumer beside the server
    if threads is not None:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited:\n{log.read_text()}")
        try:
            if requests.get(f"http://127.0.0.1:{port}/info/", timeout=2).status_code == 200:
                return proc
        except requests.RequestException:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"server did not start:\n{log.read_text()}")


def cpu_seconds(proc: psutil.Process) -> float:
    """CPU time of a process, all threads (a measure that other machine load disturbs less)."""
    t = proc.cpu_times()
    return float(t.user + t.system)


def e2e(
    session: requests.Session, url: str, image: str, client: str, server: psutil.Process
) -> tuple[float, float, dict[str, Any]]:
    """(wall seconds, server CPU seconds, reply info) of one request."""
    output, params = CLIENTS[client]
    c0, t0 = cpu_seconds(server), time.perf_counter()
    resp = session.post(
        f"{url}/infer/segmentation?image={image}&output={output}",
        files={"params": (None, json.dumps(params))},
        timeout=600,
    )
    elapsed, cpu = time.perf_counter() - t0, cpu_seconds(server) - c0
    resp.raise_for_status()
    if output == "image":  # a raw file: no latencies in the reply (the multipart run gives them)
        return elapsed, cpu, {"latencies": {}, "bytes": len(resp.content)}
    body = resp.content
    start = body.index(b"\r\n\r\n") + 4
    end = body.index(b"\r\n--", start)
    return elapsed, cpu, {"latencies": json.loads(body[start:end])["latencies"], "bytes": len(body)}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", nargs="+", default=["128", "192x192x128"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads in both processes (default: torch's, one per core); 1 makes the "
        "CPU-time ratio robust on a shared machine",
    )
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "inference.json")
    args = parser.parse_args()
    shapes = [tuple(int(v) for v in (s.split("x") if "x" in s else [s] * 3)) for s in args.sizes]
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    task = load_app(APP, {}).models["segmentation"].task
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net = task.initial_network().to(device).eval()  # the server's network: seed 0, no weights published
    cfg = task.config
    results: dict[str, Any] = {
        "benchmark": "inference",
        "command": " ".join(["benchmarks/inference.py", *sys.argv[1:]]),
        "device": str(device),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "network": f"{cfg.network} channels {list(cfg.channels)}, res units {cfg.num_res_units}",
        "roi_size": list(cfg.roi_size),
        "overlap": cfg.overlap,
        "rounds": args.rounds,
        "goal_ratio": GOAL_RATIO,
        "load_avg_start": list(os.getloadavg()),
        "sizes": {},
    }
    with tempfile.TemporaryDirectory(prefix="labelloop-infer-bench-") as tmp:
        studies = Path(tmp) / "studies"
        studies.mkdir()
        for shape in shapes:
            name = "x".join(map(str, shape))
            nib.save(nib.Nifti1Image(ct_like(shape), AFFINE), str(studies / f"vol_{name}.nii.gz"))
        port = free_port()
        proc = start_server(studies, port, Path(tmp) / "server.log", args.threads)
        server, me = psutil.Process(proc.pid), psutil.Process()
        url = f"http://127.0.0.1:{port}"
        session = requests.Session()
        try:
            for shape in shapes:
                name = "x".join(map(str, shape))
                image = studies / f"vol_{name}.nii.gz"
                # The bare baseline's input: the same preprocessing, done once, outside the timing.
                req = InferRequest("segmentation", image, ".nii.gz", Path(tmp), {}, "all")
                data = task.loader(req)({"image": str(image)})
                for t in task.pre_transforms(req):
                    data = t(data)
                x = tensor_input(data)[None].to(device)

                def bare(x: torch.Tensor = x) -> tuple[float, float]:
                    c0, t0 = cpu_seconds(me), time.perf_counter()
                    with torch.inference_mode():
                        sliding_window_inference(x, cfg.roi_size, cfg.sw_batch_size, net, overlap=cfg.overlap)
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    return time.perf_counter() - t0, cpu_seconds(me) - c0

                image_id = image.name.split(".")[0]
                for client in CLIENTS:  # warm-up: network build, allocator, first-call paths
                    e2e(session, url, image_id, client, server)
                bare()
                runs: dict[str, list[float]] = {"bare": [], **{c: [] for c in CLIENTS}}
                cpu: dict[str, list[float]] = {"bare": [], **{c: [] for c in CLIENTS}}
                lat: dict[str, list[float]] = {k: [] for k in (*STAGES, "total")}
                sizes_bytes: dict[str, int] = {}
                for _ in range(args.rounds):
                    wall, cpu_s = bare()
                    runs["bare"].append(wall)
                    cpu["bare"].append(cpu_s)
                    for client in CLIENTS:
                        wall, cpu_s, info = e2e(session, url, image_id, client, server)
                        runs[client].append(wall)
                        cpu[client].append(cpu_s)
                        sizes_bytes[client] = info["bytes"]
                        for k, v in info["latencies"].items():
                            if k in lat:
                                lat[k].append(float(v))
                med = {k: statistics.median(v) for k, v in runs.items()}
                best = {k: min(v) for k, v in runs.items()}
                med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
                stage = {k: statistics.median(v) for k, v in lat.items() if v}
                stage["http"] = med["slicer"] - stage["total"]
                results["sizes"][name] = {
                    "shape": list(shape),
                    "bare_s": round(med["bare"], 3),
                    "e2e_s": {c: round(med[c], 3) for c in CLIENTS},
                    "ratio": {c: round(med[c] / med["bare"], 3) for c in CLIENTS},
                    "ratio_best": {c: round(best[c] / best["bare"], 3) for c in CLIENTS},
                    "ratio_cpu": {c: round(med_cpu[c] / med_cpu["bare"], 3) for c in CLIENTS},
                    "stages_s": {k: round(v, 4) for k, v in stage.items()},
                    "reply_bytes": sizes_bytes,
                    "runs_s": {k: [round(v, 3) for v in vs] for k, vs in runs.items()},
                    "cpu_s": {k: [round(v, 3) for v in vs] for k, vs in cpu.items()},
                    "meets_goal": all(med[c] / med["bare"] <= GOAL_RATIO for c in CLIENTS),
                }
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    results["load_avg_end"] = list(os.getloadavg())
    results["process_rss_mb"] = round(psutil.Process().memory_info().rss / 2**20)
    text = json.dumps(results, indent=2)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    print(table(results), file=sys.stderr)
    return 0


def table(results: dict[str, Any]) -> str:
    head = (
        f"{'size':>12} {'bare s':>7} {'e2e s':>7} {'ratio':>6} {'best':>6} {'cpu':>6} "
        f"{'ohif s':>7} {'ratio':>6}  " + " ".join(f"{k:>7}" for k in (*STAGES, "http"))
    )
    lines = [f"device {results['device']}, {results['network']}, roi {results['roi_size']}", head]
    for name, r in results["sizes"].items():
        st = r["stages_s"]
        lines.append(
            f"{name:>12} {r['bare_s']:7.3f} {r['e2e_s']['slicer']:7.3f} {r['ratio']['slicer']:6.3f} "
            f"{r['ratio_best']['slicer']:6.3f} {r['ratio_cpu']['slicer']:6.3f} "
            f"{r['e2e_s']['ohif']:7.3f} {r['ratio']['ohif']:6.3f}  "
            + " ".join(f"{st.get(k, 0.0):7.3f}" for k in (*STAGES, "http"))
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
