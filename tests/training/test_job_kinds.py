"""Job kinds come from one registry: a toy kind, added by its module name alone, is validated by the web
process's JobService, run by the server's consumer in its own process, and its follow-up submitted."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from server.errors import NotFound, Unprocessable
from server.jobs.kinds import BUILTIN, JobKinds
from server.services import build_services
from server.settings import Settings
from tests.conftest import Server, free_port
from tests.training.conftest import TERMINAL, TEST_APP

TOY = "tests.training.toy_kind"


def test_the_registry_knows_the_builtins_and_refuses_what_it_does_not_know() -> None:
    kinds = JobKinds.load()
    # The kinds that can be split bring their chunk kinds (server/jobs/shards.py).
    names = ["train", "scoring", "scoring.chunk", "batch_infer", "batch_infer.chunk"]
    assert [k.name for k in kinds] == names and len(BUILTIN) == 3
    with pytest.raises(Unprocessable, match="made by splitting"):
        kinds.get("scoring.chunk").validate(None, None, {})  # type: ignore[arg-type]
    with pytest.raises(Unprocessable, match="unknown job kind 'toy'"):
        kinds.get("toy")
    assert "toy" in JobKinds.load([TOY])
    with pytest.raises(Exception, match="cannot be imported"):
        JobKinds.load(["tests.training.no_such_kind"])
    with pytest.raises(Exception, match="defines no KIND"):
        JobKinds.load(["tests.training.conftest"])


def test_a_toy_kind_runs_through_the_registry_alone(train_studies: Path) -> None:
    srv = Server(train_studies, free_port(), args=["--app", str(TEST_APP)], env={"LABELLOOP_JOB_KINDS": TOY})
    srv.start()
    try:
        settings = Settings(app_dir=TEST_APP, studies=train_studies, job_kinds=TOY)
        jobs = build_services(settings, role="worker").jobs
        spec = build_services(settings, role="job").spec
        with pytest.raises(Unprocessable, match="steps must be"):
            jobs.start("toy", spec, None, {"steps": 0})
        with pytest.raises(NotFound):
            jobs.start("train", spec, "no-such-trainer", {})
        task = jobs.start("toy", spec, None, {"steps": 4, "chain": True})
        done = wait(jobs.get, task["id"])
        assert done["status"] == "DONE", done
        assert done["result"] == {"counted": 4, "studies": 4} and done["progress"] == 1.0
        assert "toy step 4/4" in done["details"]
        follow = wait_for_follow_up(jobs.tasks, task["id"])
        assert follow["status"] == "DONE" and follow["result"]["counted"] == 1
    finally:
        srv.stop()


def wait(get: Any, job_id: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        task: dict[str, Any] = get(job_id)
        if task["status"] in TERMINAL or time.monotonic() > deadline:
            return task
        time.sleep(0.2)


def wait_for_follow_up(tasks: Any, parent: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [t for t in tasks("toy") if t["request"].get("follow_up_of") == parent]
        if found and found[0]["status"] in TERMINAL:
            return found[0]
        time.sleep(0.2)
    raise AssertionError(f"no follow-up of {parent} ended in {timeout}s: {tasks('toy')}")
