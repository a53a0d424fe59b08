"""The campaign as a team runs it: ``--conf`` training settings used by ``retrain_after``, the state in
``GET /campaign/`` and as server-sent events, and a rescore of only what the strategies read."""

from __future__ import annotations

import json
import time
from pathlib import Path

import requests

from server.app import create_app
from server.settings import Settings
from tests.conftest import SEG_APP, Server, free_port
from tests.training.conftest import TEST_APP, save_label


def test_conf_training_settings_drive_retrain_after_and_show_in_the_campaign(
    train_studies: Path, label_files: list[Path]
) -> None:
    args = ["--app", str(TEST_APP), "--conf", "max_epochs", "5", "--conf", "retrain_after", "4"]
    srv = Server(train_studies, free_port(), args=args).start()
    try:
        state = requests.get(f"{srv.url}/campaign/", timeout=10).json()
        assert state["enabled"] and state["retrain_after"] == 4 and state["training"] is None
        assert state["training_settings"]["max_epochs"] == 5
        assert state["next"] == "training starts after 4 more final label(s)"
        for i, path in enumerate(label_files[:3]):
            save_label(srv.url, f"study_{i}", path)
        assert requests.get(f"{srv.url}/campaign/", timeout=10).json()["training"] is None
        save_label(srv.url, "study_3", label_files[3])  # the fourth label starts the round
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            state = requests.get(f"{srv.url}/campaign/", timeout=10).json()
            if state["training"] and state["training"]["status"] in ("DONE", "ERROR"):
                break
            time.sleep(0.5)
        training = state["training"]
        assert training["status"] == "DONE" and training["request"]["max_epochs"] == "5", training
        task = requests.get(f"{srv.url}/train/", timeout=10).json()
        assert task["train_stats"]["total_epochs"] == 5 and task["result"]["epochs"] == 5
        # the test app exposes no score-reading strategy here: nothing to rescore, and none was chained
        assert task["request"]["rescore_methods"] == [] and "rescore_job" not in task["result"]
        assert state["round"] == 1 and state["final_labels"] == 4
        events = requests.get(f"{srv.url}/campaign/events", params={"timeout": 2}, stream=True, timeout=30)
        assert events.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in events.iter_lines(decode_unicode=True) if line.startswith("data: ")]
        assert json.loads(lines[0][len("data: ") :])["training"]["id"] == training["id"]
    finally:
        srv.stop()


def test_a_rescore_computes_only_what_the_exposed_strategies_read(studies: Path, tmp_path: Path) -> None:
    cases = {"hybrid": ["entropy"], "random,first": [], "entropy,tta": ["entropy", "tta"]}
    for n, (strategies, methods) in enumerate(cases.items()):
        data = tmp_path / f"data{n}"
        conf = {"strategies": strategies}
        settings = Settings(app_dir=SEG_APP, studies=studies, data_dir=data, embedded_worker=False, conf=conf)
        client = create_app(settings, background=False).test_client()
        task = client.post("/train/segmentation", json={"max_epochs": 1}).get_json()
        assert task["request"]["rescore_methods"] == methods, (strategies, task)


def test_event_streams_are_bounded_and_give_their_slot_back(studies: Path) -> None:
    """Each stream holds a request thread: at most a quarter of them stream at once (429 beyond), and a
    closed stream frees its slot."""
    srv = Server(
        studies, free_port(), args=["--threads", "8"], env={"LABELLOOP_EMBEDDED_WORKER": "0"}
    ).start()
    try:
        url = f"{srv.url}/campaign/events"
        open_streams = [requests.get(url, params={"timeout": 30}, stream=True, timeout=30) for _ in range(2)]
        assert all(r.status_code == 200 for r in open_streams)
        refused = requests.get(url, params={"timeout": 1}, timeout=30)
        assert refused.status_code == 429 and "GET /campaign/" in refused.json()["detail"]
        assert requests.get(f"{srv.url}/campaign/", timeout=10).status_code == 200  # the server still serves
        for r in open_streams:
            r.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            again = requests.get(url, params={"timeout": 1}, timeout=30)
            if again.status_code == 200:
                break
            time.sleep(0.5)
        assert again.status_code == 200
    finally:
        srv.stop()
