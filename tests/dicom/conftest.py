"""DICOM test fixtures: dcmtk tools and an Orthanc PACS (skipped with a reason when not installed),
and labelloop started as a real ``server.cli start`` subprocess."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests

from server.dicom.devtools import dcmtk_tool
from tests.conftest import DB_PARAMS, REPO, SEG_APP, free_port, fresh_database

ORTHANC_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
IDLE_SECONDS = "0.7"  # a series is complete once no instance arrived for this long
T = TypeVar("T")


def require(*tools: str) -> None:
    missing = [t for t in tools if dcmtk_tool(t) is None]
    if missing:
        pytest.skip(f"dcmtk's {', '.join(missing)} not installed (apt-get install -y dcmtk)")


def tool(name: str) -> str:
    path = dcmtk_tool(name)
    if path is None:
        pytest.skip(f"dcmtk's {name} not installed (apt-get install -y dcmtk)")
    return path


def dcmtk_env() -> dict[str, str]:
    """Nagle off: as packaged, dcmtk waits ~40 ms per instance for a delayed ACK on loopback."""
    return {**os.environ, "TCP_NODELAY": "1"}


def dcmtk(name: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run dcmtk's ``name`` (never pynetdicom's Python app of the same name in the venv)."""
    return subprocess.run(
        [tool(name), *args], env=dcmtk_env(), capture_output=True, text=True, timeout=timeout
    )


def wait_for(predicate: Callable[[], T], timeout: float = 30.0, interval: float = 0.1, what: str = "it") -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture(params=DB_PARAMS)
def db_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """SQLite, or a fresh PostgreSQL database, as the spine's datastore tests do."""
    yield from fresh_database(request.param, "ll_dicom_")


@dataclass
class Labelloop:
    """``python -m server.cli start ...`` on free ports; ``url`` has no trailing slash."""

    workdir: Path
    args: list[str]
    port: int = field(default_factory=free_port)
    dicom_port: int = 0
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90.0) -> Labelloop:
        cmd = [sys.executable, "-m", "server.cli", "start", "--app", str(SEG_APP), "--port", str(self.port)]
        cmd += self.args
        if self.dicom_port:
            cmd += ["--dicom-port", str(self.dicom_port)]
        self.log = self.workdir / f"labelloop-{self.port}.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "LABELLOOP_DICOM_SERIES_IDLE_SECONDS": IDLE_SECONDS}
        env.update(self.env)
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"labelloop exited ({self.proc.returncode}):\n{self.log.read_text()}")
            try:
                if requests.get(self.url + "/info/", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"labelloop did not answer in {timeout}s:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def get(self, path: str, **kw: Any) -> requests.Response:
        return requests.get(self.url + path, timeout=30, **kw)

    def series_state(self, uid: str) -> str | None:
        r = self.get(f"/dicom/series/{uid}")
        return r.json()["state"] if r.status_code == 200 else None

    def wait_export(self, uid: str, timeout: float = 30.0) -> dict[str, Any]:
        """The series' newest SEG export, once it has ended (DONE or ERROR)."""

        def ended() -> dict[str, Any] | None:
            exports = self.get(f"/dicom/series/{uid}").json()["exports"]
            return exports[-1] if exports and exports[-1]["status"] in ("DONE", "ERROR") else None

        return wait_for(ended, timeout, what="SEG export")

    def ready_image(self, uid: str) -> Any:
        """The series as a ready datastore image (fetched first when needed), loaded with nibabel."""
        import nibabel as nib

        if self.series_state(uid) != "ready":
            requests.post(self.url + f"/dicom/series/{uid}/fetch", timeout=10)
            self.wait_series(uid)
        return nib.load(self.get("/datastore/image/info", params={"image": uid}).json()["path"])

    def wait_series(self, uid: str, state: str = "ready", timeout: float = 30.0) -> dict[str, Any]:
        wait_for(lambda: self.series_state(uid) == state, timeout, what=f"series {uid} {state}")
        return self.get(f"/dicom/series/{uid}").json()


@dataclass
class Orthanc:
    http_port: int
    dicom_port: int
    aet: str = "ORTHANC"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    """A private Orthanc with its DICOMweb plugin on free loopback ports, its own config and folders."""
    with running_orthanc(tmp_path_factory.mktemp("orthanc"), Orthanc(free_port(), free_port())) as pacs:
        yield pacs


@contextmanager
def running_orthanc(folder: Path, pacs: Orthanc) -> Iterator[Orthanc]:
    """Orthanc on ``pacs``'s ports with its config and data under ``folder``, stopped afterwards."""
    folder.mkdir(parents=True, exist_ok=True)
    binary = shutil.which("Orthanc")
    if binary is None or not ORTHANC_PLUGIN.is_file():
        pytest.skip(
            "Orthanc with its DICOMweb plugin not installed (apt-get install -y orthanc orthanc-dicomweb)"
        )
    config = {
        "Name": "labelloop-test",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "index"),
        "HttpPort": pacs.http_port,
        "DicomPort": pacs.dicom_port,
        "DicomAet": pacs.aet,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomCheckCalledAet": False,
        "Plugins": [str(ORTHANC_PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "Host": f"127.0.0.1:{pacs.http_port}"},
    }
    (folder / "config.json").write_text(json.dumps(config))
    with open(folder / "orthanc.log", "wb") as log:
        proc = subprocess.Popen([binary, str(folder / "config.json")], stdout=log, stderr=subprocess.STDOUT)
    try:

        def up() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited:\n{(folder / 'orthanc.log').read_text()}")
            try:
                return requests.get(pacs.url + "/system", timeout=1).status_code == 200
            except requests.RequestException:
                return False

        wait_for(up, 30, what="Orthanc")
        yield pacs
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
