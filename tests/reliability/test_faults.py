"""Faults: the server killed with SIGKILL while clients save labels, ten times. Every label whose save
was acknowledged comes back byte-identical after the restart, no temporary file is left, and the
database agrees with the files. (Training killed mid-run and a worker killed mid-job are in
tests/training; a DICOM source down at start in tests/dicom.)"""

from __future__ import annotations

import hashlib
import random
import signal
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import requests

from tests.conftest import NO_WORKER, Server, free_port, write_volume
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
