"""``docker/compose.yaml`` is a valid Compose file (checked by ``docker-compose config``, which needs no
Docker engine): the six services, healthchecks, named volumes, secrets only from the environment, the
server published on loopback only, and GPU reservations for both workers in the GPU variant."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import yaml

from tests.conftest import REPO

FILES = ["-f", str(REPO / "docker" / "compose.yaml")]
GPU = ["-f", str(REPO / "docker" / "compose.gpu.yaml")]
SECRETS = {"POSTGRES_PASSWORD": "pw-from-env", "LABELLOOP_API_TOKEN": "token-from-env"}


def compose(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("docker-compose not installed (scripts/test-servers.sh installs it from apt)")
    clean = {k: v for k, v in os.environ.items() if k not in SECRETS}
    return subprocess.run([exe, *args], capture_output=True, text=True, env={**clean, **env}, timeout=120)


def test_compose_file_is_valid_and_complete() -> None:
    done = compose(*FILES, "config", env=SECRETS)
    assert done.returncode == 0, done.stderr
    config = yaml.safe_load(done.stdout)
    services = config["services"]
    assert set(services) == {"postgres", "redis", "orthanc", "labelloop", "worker-1", "worker-2"}
    for name in ("postgres", "redis", "orthanc", "labelloop"):
        assert services[name]["healthcheck"]["test"], name
    assert set(config["volumes"]) >= {"pgdata", "redis-data", "orthanc-db", "labelloop-data"}
    ports = services["labelloop"]["ports"]
    # short form ("127.0.0.1:8000:8000/tcp", docker-compose v1) or long form ({host_ip: ...}, v2)
    assert all(
        (p.get("host_ip") if isinstance(p, dict) else p.split(":")[0]) == "127.0.0.1" for p in ports
    ), ports
    for name in ("labelloop", "worker-1", "worker-2"):
        env = services[name]["environment"]
        assert env["LABELLOOP_QUEUE"].startswith("redis://redis") and "pw-from-env" in env["LABELLOOP_DB_URL"]
    assert services["worker-1"]["command"][:2] == ["labelloop", "worker"]
    assert services["worker-1"]["depends_on"]["labelloop"]["condition"] == "service_healthy"


def test_no_secret_has_a_default() -> None:
    done = compose(*FILES, "config", env={})
    assert done.returncode != 0 and "POSTGRES_PASSWORD" in done.stderr


def test_gpu_variant_reserves_a_gpu_per_worker() -> None:
    done = compose(*FILES, *GPU, "config", env=SECRETS)
    assert done.returncode == 0, done.stderr
    services = yaml.safe_load(done.stdout)["services"]
    for name in ("worker-1", "worker-2"):
        [device] = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert "deploy" not in services["labelloop"]
