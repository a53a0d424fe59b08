"""A slow inference never blocks the rest of the API, and past the queue's bound the answer is 503."""

from __future__ import annotations

import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from server.errors import Unavailable
from tests.inference.infer_support import TEST_APPS, LiveServer, ServerFactory, ct_volume

SLEEP = 2.0


@pytest.fixture(scope="module")
def server(live_server: ServerFactory, tmp_path_factory: pytest.TempPathFactory) -> LiveServer:
    studies = tmp_path_factory.mktemp("slow") / "studies"
    for i in range(6):  # one per annotator asking for a next sample below
        ct_volume(studies / f"ct_{i}.nii.gz", seed=i)
    # One worker and one waiting place: a third concurrent request is refused.
    env = {"LABELLOOP_INFER_WORKERS": "1", "LABELLOOP_INFER_QUEUE": "1"}
    return live_server(TEST_APPS / "slow", studies, {"sleep": str(SLEEP)}, env)


def _infer(server: LiveServer, out: list[requests.Response]) -> None:
    form = {"params": (None, json.dumps({}))}
    out.append(requests.post(f"{server.url}/infer/slow?image=ct_0&output=json", files=form, timeout=60))


def _timed(method: str, url: str, **kwargs: object) -> tuple[float, requests.Response]:
    start = time.perf_counter()
    resp = requests.request(method, url, timeout=10, **kwargs)  # type: ignore[arg-type]
    return time.perf_counter() - start, resp


def test_info_and_next_sample_answer_while_inference_runs(server: LiveServer) -> None:
    replies: list[requests.Response] = []
    first = threading.Thread(target=_infer, args=(server, replies))
    first.start()
    time.sleep(0.5)  # the first request is now in its worker, sleeping
    info_times, next_times = [], []
    for i in range(5):
        elapsed, resp = _timed("GET", f"{server.url}/info/")
        assert resp.status_code == 200
        info_times.append(elapsed)
        elapsed, resp = _timed(
            "POST", f"{server.url}/activelearning/random", json={"client_id": f"annotator-{i}"}
        )
        assert resp.status_code == 200 and resp.json().get("id")
        next_times.append(elapsed)
    assert first.is_alive(), "the slow inference finished before the timing was done"
    assert statistics.median(info_times) < 0.1, info_times
    assert statistics.median(next_times) < 0.1, next_times

    second = threading.Thread(target=_infer, args=(server, replies))
    second.start()
    time.sleep(0.3)  # one running, one waiting: the queue is full
    elapsed, refused = _timed("POST", f"{server.url}/infer/slow?image=ct_1", files={"params": (None, "{}")})
    assert refused.status_code == 503
    assert "busy" in refused.json()["detail"]
    assert elapsed < 1.0  # refused at once, not after waiting
    first.join()
    second.join()
    assert [r.status_code for r in replies] == [200, 200]
    assert all(r.json()["latencies"]["infer"] >= SLEEP for r in replies)


def test_background_lane_runs_beside_a_full_queue_at_the_lowest_priority(tmp_path: Path) -> None:
    """An audit's prediction (``background=True``) never takes an annotator's slot: with the one worker
    busy and the one waiting place taken, an annotator's request is refused and the background one
    runs, on a thread at nice 19 (Linux) where annotators' predictions keep their priority."""
    from server.inference.request import InferSource
    from server.services import build_services
    from server.settings import Settings

    studies = tmp_path / "studies"
    ct_volume(studies / "ct_0.nii.gz")
    settings = Settings(
        app_dir=TEST_APPS / "slow", studies=studies, conf={"sleep": "1.5"}, infer_workers=1, infer_queue=1
    )
    services = build_services(settings, role="server", background=False)
    inference = services.inference
    niceness: dict[str, int] = {}

    def annotator() -> None:
        with inference.workspace() as work:
            inference.infer("slow", InferSource(image_id="ct_0"), {}, "image", work)

    try:
        busy = [threading.Thread(target=annotator) for _ in range(2)]
        for t in busy:
            t.start()
        time.sleep(0.5)  # one running, one waiting: the queue is full
        with pytest.raises(Unavailable), inference.workspace() as work:
            inference.infer("slow", InferSource(image_id="ct_0"), {}, "image", work)
        task = inference.task("slow")
        original = task.inferer

        def spy(*args: Any, **kwargs: Any) -> Any:
            me = threading.current_thread().name.split("_")[0]
            niceness[me] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
            return original(*args, **kwargs)

        task.inferer = spy  # type: ignore[method-assign]
        with inference.workspace() as work:
            result = inference.infer("slow", InferSource(image_id="ct_0"), {}, "image", work, background=True)
            assert result.file is not None and result.file.is_file()
        for t in busy:
            t.join()
        assert set(niceness) == {"infer-background", "infer"}
        # /metrics keeps the lanes apart: the refused request never ran, the audit counts as background
        assert inference.runs == {"request": 2, "background": 1}
        assert inference.wait_seconds["request"] > 0.5  # the second annotator waited for the first
        if sys.platform.startswith("linux"):
            assert niceness == {"infer-background": 19, "infer": 0}
    finally:
        services.close()
