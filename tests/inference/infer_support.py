"""Helpers for the inference tests: CT-like volumes and a real labelloop server (a subprocess)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import requests

REPO = Path(__file__).resolve().parents[2]
APPS = REPO / "apps"
TEST_APPS = Path(__file__).resolve().parent / "apps"
# Non-identity voxel-to-world matrix: flipped x/y, anisotropic, offset (what a real CT header has).
CT_AFFINE = np.array([[-1.5, 0, 0, 10.0], [0, -1.5, 0, 20.0], [0, 0, 2.0, -30.0], [0, 0, 0, 1]])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ct_volume(path: Path, seed: int = 0, shape: tuple[int, int, int] = (32, 32, 32)) -> Path:
    """Spheres in Hounsfield-like units (-1000 air, organ ~60, lesions ~150), saved as NIfTI."""
    from monai.data import create_test_image_3d

    image, _ = create_test_image_3d(
        *shape, num_objs=4, rad_max=6, rad_min=2, num_seg_classes=2, random_state=np.random.RandomState(seed)
    )
    rng = np.random.default_rng(seed)
    data = np.where(image > 0, 60.0 + 90.0 * (image > 0.75), -1000.0) + rng.normal(0, 10, shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data.astype(np.int16), CT_AFFINE), str(path))
    return path


class LiveServer:
    """``python -m server.cli start`` on a free loopback port; ``url`` has no trailing slash."""

    def __init__(
        self, app: Path, studies: Path, conf: dict[str, str] | None = None, env: dict[str, str] | None = None
    ):
        self.app, self.studies, self.conf, self.env = app, studies, conf or {}, env or {}
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = studies.parent / f"server-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90.0) -> LiveServer:
        cmd = [
            sys.executable,
            "-m",
            "server.cli",
            "start",
            "--app",
            str(self.app),
            "--studies",
            str(self.studies),
        ]
        cmd += ["--port", str(self.port)]
        for key, value in self.conf.items():
            cmd += ["--conf", key, value]
        # No job consumer process: these tests never train, and it costs a Python start per server.
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "LABELLOOP_EMBEDDED_WORKER": "0", **self.env}
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited ({self.proc.returncode}):\n{self.log.read_text()}")
            try:
                if requests.get(self.url + "/info/", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server did not answer within {timeout}s:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


ServerFactory = Callable[..., LiveServer]
