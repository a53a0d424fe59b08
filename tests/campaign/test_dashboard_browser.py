"""The dashboard in a real browser (headless Chromium, nothing but this server reachable) after a
scripted mini-campaign: labels, an audit pick, a training job, a failing job. The page shows the
counts, one plot point per model version with a validation metric, the audit estimate, and the
failed job's error. The screenshot goes to ``$LABELLOOP_TEST_ARTIFACTS`` (default: the test's tmp)."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import requests

from tests.conftest import Server, free_port, write_label, write_volume
from tests.spine.test_docs_browser import browser, headless
from tests.training.conftest import TEST_APP


def save(url: str, image: str, label: Path) -> None:
    with open(label, "rb") as f:
        reply = requests.put(
            f"{url}/datastore/label", params={"image": image}, files={"label": f}, timeout=60
        )
    assert reply.status_code == 200, reply.text


def wait_audits(url: str, n: int) -> dict[str, object]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        evidence = requests.get(f"{url}/campaign/", timeout=10).json()["evidence"]
        if sum(a["n"] for a in evidence["audit"]) >= n:
            return dict(evidence)
        time.sleep(0.5)
    raise AssertionError(f"the audit of {n} studies was not scored: {evidence}")


def test_dashboard_after_a_mini_campaign(tmp_path: Path) -> None:
    exe = browser()
    studies = tmp_path / "studies"
    for i in range(6):
        write_volume(studies / f"study_{i}.nii.gz", seed=i)
    labels = [write_label(tmp_path / "in" / f"l{i}.nii.gz", seed=50 + i) for i in range(6)]
    env = {"LABELLOOP_AUDIT_SHARE": "1"}  # every single pick is an audit pick here
    srv = Server(studies, free_port(), args=["--app", str(TEST_APP)], env=env).start()
    try:
        u = srv.url
        pick = requests.post(f"{u}/activelearning/random", json={"client_id": "ann"}, timeout=10).json()
        assert pick["audit"] is True and "audit" in pick["strategy"]
        save(u, pick["id"], labels[0])
        wait_audits(u, 1)  # version 0 (the initial weights), measured on the first label
        others = [f"study_{i}" for i in range(6) if f"study_{i}" != pick["id"]][:3]
        for image, label in zip(others, labels[1:4], strict=True):
            save(u, image, label)
        trained = requests.post(
            f"{u}/train/segmentation", params={"run_sync": "true"}, json={"max_epochs": 2}, timeout=300
        ).json()
        assert trained["status"] == "DONE", trained
        failed = requests.post(f"{u}/train/fail", params={"run_sync": "true"}, json={}, timeout=300).json()
        assert failed["status"] == "ERROR", failed
        second = requests.post(f"{u}/activelearning/random", json={"client_id": "ann"}, timeout=10).json()
        save(u, second["id"], labels[4])
        evidence = wait_audits(u, 2)
        versions = {a["model_version"] for a in evidence["audit"]}  # type: ignore[union-attr]
        assert versions == {0, 1}

        data = requests.get(f"{u}/dashboard/data", timeout=10).json()
        dom = subprocess.run(
            headless(exe, "--dump-dom", f"{u}/"), capture_output=True, text=True, timeout=120, check=True
        ).stdout
        shots = Path(os.environ.get("LABELLOOP_TEST_ARTIFACTS", tmp_path))
        shots.mkdir(parents=True, exist_ok=True)
        shot = shots / "dashboard.png"
        subprocess.run(
            headless(exe, "--window-size=1400,1300", f"--screenshot={shot}", f"{u}/"), timeout=120, check=True
        )
    finally:
        srv.stop()
    dom = dom[: dom.index("<script")]  # what was drawn, not the script's own text
    cards = dict(re.findall(r'data-k="(\w+)">(\d+)<', dom))
    assert cards["total"] == "6" and cards["labelled"] == "5" and cards["leased_now"] == "0", cards
    assert data["progress"]["labelled"] == 5
    with_metric = [v for m in data["models"] for v in m["versions"] if v["metric"] is not None]
    assert len(with_metric) == 1 and dom.count('class="version-point"') == len(with_metric)
    assert dom.count('class="audit-point"') == 2
    assert "deliberate failure" in dom and 'class="err job-error"' in dom
    assert 'data-job-state="ERROR">1<' in dom and 'data-job-state="DONE">' in dom
    assert shot.is_file() and shot.stat().st_size > 20_000
