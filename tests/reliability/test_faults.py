"""Faults: the server killed with SIGKILL while clients save labels, ten times. Every label whose save
was acknowledged comes back byte-identical after the restart, no temporary file is left, and the
database agrees with the files. (Training killed mid-run and a worker killed mid-job are in
tests/training; a DICOM source down at start in tests/dicom.)"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import requests

from tests.conftest import NO_WORKER, REPO, Server, free_port, write_volume
from tests.reliability.hostile_files import nifti

KILLS = 10
STUDIES = 3


def test_sigkill_during_label_saves_loses_no_acknowledged_label(tmp_path: Path) -> None:
    folder = tmp_path / "studies"
    for i in range(STUDIES):
        write_volume(folder / f"study_{i}.nii.gz", seed=i)
    srv = Server(folder, free_port(), env=dict(NO_WORKER)).start()
    acknowledged: dict[tuple[str, str], str] = {}  # (study, tag) -> sha256 of what was acknowledged
    rng = random.Random(0)
    try:
        for kill in range(KILLS):
            stop = threading.Event()
            lock = threading.Lock()

            def client(
                worker: int, kill: int = kill, stop: threading.Event = stop, lock: threading.Lock = lock
            ) -> None:
                n = 0
                while not stop.is_set():
                    study, tag = f"study_{(worker + n) % STUDIES}", f"k{kill}w{worker}n{n}"
                    data = nifti(
                        (
                            np.random.default_rng(kill * 1000 + worker * 100 + n).random((32, 32, 32)) > 0.5
                        ).astype(np.uint8)
                    )
                    n += 1
                    try:
                        r = requests.put(
                            f"{srv.url}/datastore/label",
                            params={"image": study, "tag": tag},
                            files={"label": ("l.nii.gz", data)},
                            timeout=30,
                        )
                    except requests.RequestException:
                        return  # the server is gone: this save was never acknowledged
                    if r.status_code == 200:
                        with lock:
                            acknowledged[(study, tag)] = hashlib.sha256(data).hexdigest()

            threads = [threading.Thread(target=client, args=(w,)) for w in range(3)]
            for t in threads:
                t.start()
            time.sleep(rng.uniform(0.4, 1.5))
            srv.stop(signal.SIGKILL)
            stop.set()
            for t in threads:
                t.join(timeout=60)
            srv.start()
        assert len(acknowledged) >= KILLS * 3  # the clients got through between the kills
        for (study, tag), digest in acknowledged.items():
            got = requests.get(f"{srv.url}/datastore/label", params={"label": study, "tag": tag}, timeout=30)
            assert got.status_code == 200, (study, tag)
            assert hashlib.sha256(got.content).hexdigest() == digest, (study, tag)
        leftovers = [p for p in folder.rglob("*") if p.name.startswith((".tmp-", ".bak-", ".del-"))]
        assert not leftovers, leftovers
        with sqlite3.connect(folder / ".labelloop" / "labelloop.db") as conn:
            rows = conn.execute("SELECT file, size FROM labels").fetchall()
        for file, size in rows:  # every row names a file of its size; no row without its file
            assert (folder / file).stat().st_size == size, file
        print(
            f"\nfault suite: {KILLS} SIGKILLs, {len(acknowledged)} acknowledged labels checked byte-identical"
        )
    finally:
        srv.stop()


def test_sigkill_during_dicom_ingest_loses_no_acknowledged_instance(tmp_path: Path) -> None:
    """storescu sends a series; the server is killed mid-association. Every instance storescu was told
    Success for is indexed after the restart (a safe file whose row a crash lost is indexed then)."""
    from server.dicom import synth
    from tests.dicom.conftest import Labelloop, dcmtk_env, require, tool, wait_for

    require("storescu")
    (tmp_path / "studies").mkdir()
    srv = Labelloop(tmp_path, ["--studies", str(tmp_path / "studies")], dicom_port=free_port()).start()
    series = synth.ct_series(tmp_path / "ct", 300)
    try:
        cmd = [
            tool("storescu"),
            "-v",
            "-aet",
            "SENDER",
            "-aec",
            "LABELLOOP",
            "127.0.0.1",
            str(srv.dicom_port),
        ]
        sender = subprocess.Popen(
            [*cmd, *map(str, series.files)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=dcmtk_env(),
        )
        assert sender.stdout is not None
        acknowledged: list[str] = []
        current = ""
        for line in sender.stdout:
            if "Sending file:" in line:
                current = line.split("Sending file:", 1)[1].strip()
            elif "Received Store Response (Success)" in line:
                acknowledged.append(current)
                if len(acknowledged) == 40 and srv.proc is not None:
                    srv.proc.send_signal(signal.SIGKILL)  # mid-association, rows possibly still queued
                    srv.proc.wait()
        sender.wait(timeout=60)
        assert 40 <= len(acknowledged) < len(series.files)
        srv.proc = None
        srv.start()
        sops = {str(f): uid for f, uid in zip(series.files, series.sop_uids, strict=True)}
        db = tmp_path / "studies" / ".labelloop" / "labelloop.db"

        def indexed() -> set[str]:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
                return {row[0] for row in conn.execute("SELECT sop_uid FROM dicom_instances")}

        wait_for(lambda: {sops[f] for f in acknowledged} <= indexed(), 30, what="every acknowledged instance")
        print(f"\nDICOM ingest: killed after {len(acknowledged)} acknowledged instances, all indexed")
    finally:
        srv.stop()


def test_a_worker_killed_mid_job_leaves_an_error_not_a_hanging_job(tmp_path: Path) -> None:
    """A remote worker dies (SIGKILL) while it runs a job: the server's watchdog sees no heartbeat and
    ends the job ERROR with the reason; a new worker takes the next job."""
    from server.services import build_services
    from server.settings import Settings
    from tests.training.conftest import TERMINAL, TEST_APP, worker_command
    from tests.training.test_job_kinds import TOY, wait

    folder = tmp_path / "studies"
    write_volume(folder / "study_0.nii.gz", seed=0)
    env = {"LABELLOOP_JOB_KINDS": TOY, "LABELLOOP_JOB_STALE_SECONDS": "12"}
    srv = Server(folder, free_port(), args=["--app", str(TEST_APP), "--no-worker"], env=env).start()
    worker_cmd = worker_command(folder)
    worker_env = {**os.environ, **env, "PYTHONPATH": str(REPO)}
    worker = subprocess.Popen(
        worker_cmd, cwd=REPO, env=worker_env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    try:
        settings = Settings(app_dir=TEST_APP, studies=folder, job_kinds=TOY)
        services = build_services(settings, role="job")
        jobs = services.jobs
        task = jobs.start("toy", services.spec, None, {"steps": 100, "seconds": 0.5})
        deadline = time.monotonic() + 60
        while jobs.get(task["id"])["status"] != "RUNNING" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert jobs.get(task["id"])["status"] == "RUNNING"
        worker.kill()
        worker.wait()
        ended = wait(jobs.get, task["id"], timeout=60)
        assert ended["status"] == "ERROR" and "no heartbeat" in ended["error"], ended
        worker = subprocess.Popen(
            worker_cmd, cwd=REPO, env=worker_env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        second = jobs.start("toy", services.spec, None, {"steps": 2})
        assert wait(jobs.get, second["id"], timeout=90)["status"] == "DONE"
        assert jobs.get(task["id"])["status"] == "ERROR"  # terminal: never turned back
        assert set(TERMINAL) >= {ended["status"]}
    finally:
        worker.kill()
        worker.wait()
        srv.stop()
