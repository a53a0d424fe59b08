"""Background jobs against a real server subprocess: train, publish, infer, fail, stop, queue, restart."""

from __future__ import annotations

import re
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
import requests
from monailabel.client import MONAILabelClient

from tests.conftest import Server
from tests.training.conftest import job_rows, save_label, wait_epochs, wait_for

pytestmark = pytest.mark.slow

BUSY = {"detail": "++++++++++ Train Task is Already Running"}


def label_all(srv: Server, label_files: list[Path]) -> None:
    for i, path in enumerate(label_files):
        save_label(srv.url, f"study_{i}", path)


def test_training_publishes_a_version_that_inference_uses(
    make_server: Callable[..., Server], label_files: list[Path], train_studies: Path
) -> None:
    srv = make_server()
    label_all(srv, label_files)
    client = MONAILabelClient(srv.url)
    assert client.train_status(check_if_running=True) is False  # 404: nothing running

    task = client.train_start("segmentation", {"max_epochs": 2, "rescore": False})
    assert task["status"] == "SUBMITTED" and task["request"]["max_epochs"] == 2
    assert "client_id" in task["request"]  # the client adds it; the request is kept as sent
    time.strptime(task["start_ts"], "%Y-%m-%d %H:%M:%S")

    done = wait_for(srv.url, task["id"], ("DONE", "ERROR", "STOPPED"), timeout=90)
    assert done["status"] == "DONE", done
    assert done["model_version"] == 1 and done["end_ts"] and done["progress"] == 1.0
    assert any("epoch 2/2" in line for line in done["details"]), done["details"]

    stats = client.info()["train_stats"]["segmentation"]
    assert stats["epoch"] == 2 and stats["total_epochs"] == 2
    assert "total_time" in stats and "current_time" not in stats
    assert stats["eval"]["key_metric_name"] == "val_mean_dice"
    assert stats["best_metric"] == stats["eval"]["best_metric"] is not None
    stats_file = train_studies / ".labelloop" / "train" / "segmentation" / "train_stats.json"
    assert stats_file.is_file()

    info = requests.get(f"{srv.url}/model/info/segmentation", timeout=10).json()
    assert info["version"] == 1 and info["train_stats"]["key_metric_name"] == "val_mean_dice"
    r = requests.post(
        f"{srv.url}/infer/segmentation", params={"image": "study_0", "output": "json"}, timeout=60
    )
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 1  # the next prediction comes from the published version

    batch = requests.post(
        f"{srv.url}/batch/infer/segmentation",
        params={"images": "all", "run_sync": "true"},
        json={},
        timeout=120,
    ).json()
    assert batch["status"] == "DONE" and batch["result"]["done"] == 4 and not batch["result"]["failed"], batch
    assert requests.get(f"{srv.url}/batch/infer", timeout=10).json()["id"] == batch["id"]
    tags = requests.get(f"{srv.url}/datastore/", timeout=10).json()["label_tags"]
    assert tags == {"final": 4, "original": 4}
    original = requests.get(f"{srv.url}/datastore/label", params={"label": "study_1", "tag": "original"})
    assert original.status_code == 200


def test_failure_busy_queue_stop_and_oom_kill(
    make_server: Callable[..., Server], label_files: list[Path]
) -> None:
    srv = make_server()
    label_all(srv, label_files)

    failing = requests.post(f"{srv.url}/train/fail", json={"rescore": False}, timeout=10).json()
    failed = wait_for(srv.url, failing["id"], ("DONE", "ERROR", "STOPPED"))
    assert failed["status"] == "ERROR"
    assert "deliberate failure" in failed["error"] and "deliberate failure" in failed["details"][-1]
    assert requests.get(f"{srv.url}/info/", timeout=10).status_code == 200  # the server keeps answering
    assert requests.get(f"{srv.url}/info/", timeout=10).json()["train_stats"]["fail"] == {}

    slow = requests.post(f"{srv.url}/train/slow", json={}, timeout=10).json()
    running = wait_for(srv.url, slow["id"], ("RUNNING",))
    assert running["pid"]  # a job turns RUNNING together with the pid it runs as, never before it
    second = requests.post(f"{srv.url}/train/segmentation", json={"max_epochs": 1}, timeout=10)
    assert second.status_code == 429 and second.json() == BUSY
    queued = requests.post(f"{srv.url}/train/slow", params={"enqueue": "true"}, json={}).json()
    assert queued["status"] == "SUBMITTED"
    running = wait_epochs(srv.url, slow["id"], 1)
    assert running["status"] == "RUNNING" and running["pid"]
    tree = [psutil.Process(running["pid"]), *psutil.Process(running["pid"]).children(recursive=True)]
    # One job per device: the queued one waits while the slow one runs.
    assert wait_for(srv.url, queued["id"], ("SUBMITTED",))["status"] == "SUBMITTED"
    assert requests.get(f"{srv.url}/info/", timeout=10).json()["train_stats"]["slow"]["current_time"]

    t0 = time.monotonic()
    stopped = requests.delete(f"{srv.url}/train/", timeout=10)
    assert stopped.status_code == 200
    assert stopped.json()["id"] == slow["id"] and stopped.json()["status"] == "STOPPED"
    _, alive = psutil.wait_procs(tree, timeout=max(0.1, 5 - (time.monotonic() - t0)))
    assert not alive, f"still alive 5 s after DELETE /train/: {alive}"
    assert time.monotonic() - t0 < 5

    # The queue moves on. Its job's process is then killed the way the kernel's OOM killer does it.
    victim = wait_for(srv.url, queued["id"], ("RUNNING",))
    assert victim["pid"] and victim["pid"] != running["pid"]
    psutil.Process(victim["pid"]).kill()
    killed = wait_for(srv.url, queued["id"], ("DONE", "ERROR", "STOPPED"))
    assert killed["status"] == "ERROR" and "SIGKILL (out of memory?)" in killed["error"], killed
    assert requests.get(f"{srv.url}/info/", timeout=10).status_code == 200  # server and consumer carry on
    assert wait_for(srv.url, slow["id"], ("STOPPED",))["status"] == "STOPPED"  # and STOPPED stays


def test_sigkill_while_training_then_restart(
    make_server: Callable[..., Server], label_files: list[Path], train_studies: Path
) -> None:
    srv = make_server()
    label_all(srv, label_files)
    stored = sorted((train_studies / "labels" / "final").iterdir())
    before = {p.name: p.read_bytes() for p in stored}
    assert len(before) == len(label_files)

    job = requests.post(f"{srv.url}/train/slow", json={"max_epochs": 6}, timeout=10).json()
    running = wait_epochs(srv.url, job["id"], 2)
    assert srv.proc is not None
    server_proc = psutil.Process(srv.proc.pid)
    tree = [server_proc, *server_proc.children(recursive=True)]
    assert any(p.pid == running["pid"] for p in tree)
    srv.stop(signal.SIGKILL)
    _, alive = psutil.wait_procs(tree, timeout=15)
    assert not alive, f"left behind after SIGKILL of the server: {alive}"

    srv.start()
    # Training resumes from its last checkpoint (not from epoch 1) and finishes.
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        task = requests.get(f"{srv.url}/train/", timeout=10).json()
        if task["status"] in ("DONE", "ERROR", "STOPPED"):
            break
        time.sleep(0.5)
    assert task["id"] == job["id"]  # not vanished
    assert task["status"] == "DONE", (task.get("error"), task.get("details"))
    assert task["result"]["resumes"] == 1 and task["result"]["epochs"] == 6
    job_log = (train_studies / ".labelloop" / "jobs" / job["id"] / "job.log").read_text()
    resumed_at = [int(x) for x in re.findall(r"resuming at epoch (\d+)", job_log)]
    assert resumed_at and resumed_at[0] >= 3, job_log[-3000:]  # after the 2 epochs done, not from 1
    assert requests.get(f"{srv.url}/train/", params={"check_if_running": "true"}).status_code == 404
    after = {p.name: p.read_bytes() for p in sorted((train_studies / "labels" / "final").iterdir())}
    assert after == before  # every label intact, byte for byte
    for i in range(len(label_files)):
        r = requests.get(f"{srv.url}/datastore/label", params={"label": f"study_{i}", "tag": "final"})
        assert r.status_code == 200 and r.content == before[f"study_{i}.nii.gz"]
    assert requests.get(f"{srv.url}/datastore/", timeout=10).json()["completed"] == len(label_files)


def test_retrain_after_three_labels_starts_exactly_one_job_then_rescores(
    make_server: Callable[..., Server], label_files: list[Path], train_studies: Path
) -> None:
    srv = make_server("--conf", "retrain_after", "3", "--conf", "scoring", "true")
    for i in range(2):
        save_label(srv.url, f"study_{i}", label_files[i])
    assert requests.get(f"{srv.url}/train/", timeout=10).status_code == 404

    save_label(srv.url, "study_2", label_files[2])
    tasks = requests.get(f"{srv.url}/train/", params={"all": "true"}, timeout=10).json()
    assert len(tasks) == 1 and tasks[0]["model"] == "segmentation" and tasks[0]["request"]["campaign"]
    save_label(srv.url, "study_0", label_files[3])  # a new final label while it runs: debounced
    assert len(requests.get(f"{srv.url}/train/", params={"all": "true"}, timeout=10).json()) == 1

    done = wait_for(srv.url, tasks[0]["id"], ("DONE", "ERROR", "STOPPED"), timeout=90)
    assert done["status"] == "DONE", done
    deadline = time.monotonic() + 45
    while time.monotonic() < deadline:
        rows = job_rows(train_studies)
        if any(r["kind"] == "scoring" and r["status"] in ("DONE", "ERROR") for r in rows):
            break
        time.sleep(0.3)
    kinds = [r["kind"] for r in rows]
    assert kinds.count("train") == 1 and kinds.count("scoring") == 1, rows  # one job, then its rescore
    scoring = next(r for r in rows if r["kind"] == "scoring")
    assert scoring["status"] == "DONE", scoring
    # the training job names the rescore it chained, which computes what the strategies read
    trained = requests.get(f"{srv.url}/train/", timeout=10).json()
    assert trained["result"]["rescore_job"] == scoring["id"] and trained["request"]["rescore_methods"] == [
        "entropy"
    ]
    # The one unlabelled study is scored with the version the campaign's job published.
    with sqlite3.connect(train_studies / ".labelloop" / "labelloop.db") as conn:
        scores = conn.execute("SELECT image_id, method, model_version FROM scores ORDER BY method").fetchall()
    methods = ["entropy", "entropy.foreground_entropy", "entropy.foreground_fraction"]
    assert scores == [("study_3", m, "segmentation@1") for m in methods]
