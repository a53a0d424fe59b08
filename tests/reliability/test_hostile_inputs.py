"""A generated hostile-input suite over every route the server serves (read from its own OpenAPI
document, which a test holds equal to the URL map): traversal in every id and parameter, wrong types,
malformed JSON and multipart, deep nesting, NaN, long names, lying and absurd volume headers, detached
and referencing formats, decompression bombs, oversized bodies, raw malformed HTTP.

Asserted for every request: no 5xx, no server path in the reply, the server alive; for every refused
request that could write: the datastore's rows and files unchanged; for the whole run: the server's
resident memory under a bound. The counts are printed (``-s``) for the closing note."""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psutil
import pytest
import requests

from tests.conftest import NO_WORKER, REPO, Server, free_port, write_label, write_volume
from tests.reliability.hostile_files import HOSTILE_LABELS, HOSTILE_VOLUMES
from tests.spine.snapshot import snapshot

HOSTILE_STRINGS = [
    "../../etc/passwd",
    "..",
    "/etc/passwd",
    "..\\..\\windows",
    "%2e%2e%2f%2e%2e%2fsecret",
    "study_0/../../x",
    "\x00",
    "x" * 10_000,
    "\u202e\ufeffé😀",
    "C:\\Windows\\system32",
]
WRONG_VALUES = ["-1", "1e309", "NaN", "[]", "{}", "true false", "9" * 400]
BAD_JSON = [
    "{",
    "[1, 2",
    '{"k": NaN}',
    '{"k": Infinity}',
    '"just a string"',
    "[" * 50_000 + "]" * 50_000,
    '{"a":' * 5000 + "1" + "}" * 5000,
    "\xff\xfe not utf-8",
]
MEMORY_BOUND_MB = 400  # above the server's resident memory at the start of the run
WRITES = ("PUT", "POST", "DELETE")


@dataclass
class Tally:
    statuses: Counter[int] = field(default_factory=Counter)
    refused_writes_checked: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.statuses.values())


@pytest.fixture
def studies_with_labels(tmp_path: Path) -> Path:
    folder = tmp_path / "studies"
    for i in range(3):
        write_volume(folder / f"study_{i}.nii.gz", seed=i)
    write_label(folder / "labels" / "final" / "study_1.nii.gz")
    return folder


@pytest.fixture
def server(studies_with_labels: Path) -> Iterator[Server]:
    # As a server on a department network runs: no server path is named in any reply.
    env = {**NO_WORKER, "LABELLOOP_MAX_UPLOAD_MB": "32", "LABELLOOP_SHARE_PATHS": "false"}
    srv = Server(studies_with_labels, free_port(), env=env).start()
    yield srv
    srv.stop()


class Memory:
    """The server's peak resident memory, sampled every 20 ms."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.start = self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
            except psutil.Error:
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def test_hostile_requests_over_every_route(server: Server, tmp_path: Path) -> None:
    url = server.url
    doc = requests.get(f"{url}/openapi.json", timeout=30).json()
    forbidden = [str(tmp_path), str(REPO), sys.prefix, str(server.studies)]
    assert server.proc is not None
    memory = Memory(server.proc.pid)
    tally = Tally()

    def send(method: str, path: str, refuse: bool = False, **kwargs: Any) -> None:
        """One request; ``refuse``: it must be answered with a 4xx."""
        writes = method in WRITES and not path.startswith(("/session", "/proxy"))
        before = snapshot(url, server.studies) if writes else None
        try:
            resp = requests.request(method, url + path, timeout=60, **kwargs)
        except requests.ConnectionError as exc:
            tally.failures.append(f"{method} {path[:80]}: no reply ({exc})")
            return
        tally.statuses[resp.status_code] += 1
        where = f"{method} {path[:80]} {str(kwargs.get('params', ''))[:80]} -> {resp.status_code}"
        if resp.status_code >= 500 or (refuse and resp.status_code < 400):
            tally.failures.append(f"{where}: {resp.text[:200]}")
        for root in forbidden:
            if root in shown(resp, path):
                tally.failures.append(f"{where}: the reply names a server path")
        if "json" in resp.headers.get("content-type", "") and resp.status_code >= 400:
            detail = resp.json().get("detail") if isinstance(resp.json(), dict) else None
            if not isinstance(detail, str) or not detail:
                tally.failures.append(f"{where}: no detail")
        if before is not None and resp.status_code >= 400:
            tally.refused_writes_checked += 1
            if snapshot(url, server.studies) != before:
                tally.failures.append(f"{where}: a refused request changed the datastore")

    operations = [
        (path, method.upper(), op)
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if method.upper() != "HEAD"
    ]
    for path, method, op in operations:
        params = [p for p in op.get("parameters", []) if p["in"] == "query"]
        path_params = [p["name"] for p in op.get("parameters", []) if p["in"] == "path"]
        # traversal and junk in every path parameter
        for value in HOSTILE_STRINGS if path_params else []:
            concrete = path
            for name in path_params:
                concrete = concrete.replace("{" + name + "}", quote(value, safe=""))
            send(method, concrete)
        concrete = path
        for name in path_params:
            concrete = concrete.replace("{" + name + "}", "segmentation" if name != "session_id" else "nope")
        # traversal and wrong types in every query parameter
        for param in params:
            for value in [*HOSTILE_STRINGS[:4], HOSTILE_STRINGS[7], *WRONG_VALUES[:3]]:
                send(method, concrete, params={param["name"]: value})
        # malformed and hostile JSON bodies
        if "application/json" in op.get("requestBody", {}).get("content", {}):
            for body in BAD_JSON:
                send(method, concrete, data=body.encode("utf-8", "surrogateescape"), headers=JSON_TYPE)
        # malformed multipart
        if "multipart/form-data" in op.get("requestBody", {}).get("content", {}):
            send(method, concrete, data=b"--x\r\ngarbage", headers={"Content-Type": "multipart/form-data"})
            send(
                method,
                concrete,
                data=b"no parts",
                headers={"Content-Type": "multipart/form-data; boundary=zz"},
            )
            for body in BAD_JSON[4:7]:
                send(method, concrete, params={"image": "study_0"}, files={"params": (None, body)})

    # hostile volumes through every route that takes one
    # (method, route, query, the file's field, refused whatever the file is, with a good image as 'file')
    volume_routes = [
        ("PUT", "/datastore/image", {"image": "hostile"}, "file", False, False),
        ("PUT", "/datastore/label", {"image": "study_0"}, "label", True, False),
        ("PUT", "/datastore/label", {"image": "study_2", "tag": "review"}, "label", True, False),
        ("POST", "/infer/segmentation", {"output": "json"}, "file", False, False),
        ("POST", "/infer/segmentation", {"output": "json"}, "label", True, True),
    ]
    good = write_volume(tmp_path / "ok.nii.gz", seed=9).read_bytes()
    for name, (filename, data) in {**HOSTILE_VOLUMES, **HOSTILE_LABELS}.items():
        for method, route, query, field_name, always, with_image in volume_routes:
            files = {field_name: (filename, data), **({"file": ("ok.nii.gz", good)} if with_image else {})}
            send(method, route, always or name in HOSTILE_VOLUMES, params=query, files=files)
    long_name = "n" * 10_000 + ".nii.gz"
    send("PUT", "/session/", files={"files": (long_name, good)})
    send("PUT", "/datastore/image", files={"file": (long_name, good)})
    send(
        "PUT",
        "/datastore/image",
        True,
        params={"image": "big"},
        files={"file": ("big.nii", b"\0" * (40 << 20))},
    )
    # info that would poison every listing, and nested JSON in info
    send(
        "PUT",
        "/datastore/image/info",
        True,
        params={"image": "study_0"},
        files={"info": (None, '{"x": NaN}')},
    )
    send(
        "PUT",
        "/datastore/image/info",
        True,
        params={"image": "study_0"},
        files={"info": (None, '{"a":' * 3000 + "1" + "}" * 3000)},
    )

    # valid requests whose MONAI Label replies name files when paths are shared: none here
    for path in ("/datastore/image/info?image=study_0", "/datastore/?output=all", "/info/"):
        send("GET", path)
    send("POST", "/activelearning/random", json={"client_id": "reader"})
    send("PUT", "/session/", files={"files": ("s.nii.gz", good)})
    raw = raw_http(server.port)
    for status in raw:
        tally.statuses[status] += 1
        if status >= 500:
            tally.failures.append(f"raw HTTP answered {status}")

    memory.stop()
    alive = requests.get(f"{url}/health/live", timeout=10)
    listing = requests.get(f"{url}/datastore/?output=all", timeout=30)
    json.loads(listing.text)  # valid JSON (no NaN crept in)
    grown_mb = (memory.peak - memory.start) / 2**20
    print(
        f"\nhostile suite: {tally.total} requests over {len(operations)} operations; statuses "
        f"{dict(sorted(tally.statuses.items()))}; refused writes checked unchanged: "
        f"{tally.refused_writes_checked}; server RSS {memory.start / 2**20:.0f} MB at start, "
        f"peak {memory.peak / 2**20:.0f} MB (+{grown_mb:.0f} MB)"
    )
    assert alive.status_code == 200 and server.proc.poll() is None
    assert not tally.failures, "\n".join(tally.failures[:40])
    assert tally.total >= 300 and tally.refused_writes_checked >= 100
    assert all(code < 500 for code in tally.statuses)
    assert grown_mb < MEMORY_BOUND_MB, f"resident memory grew {grown_mb:.0f} MB"


JSON_TYPE = {"Content-Type": "application/json"}


def shown(resp: requests.Response, route: str) -> str:
    """What a reply shows: everything, but the log (served to this machine only while auth is off,
    and a log of the server's files by nature)."""
    return "" if route.startswith("/logs") and resp.status_code < 400 else resp.text


def raw_http(port: int) -> list[int]:
    """Malformed HTTP straight on the socket: each must get a 4xx (or a closed connection)."""
    cases = [
        b"GET /info/ HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        b"PUT /datastore/image HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n",
        b"PUT /datastore/image HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"zz\r\nxx\r\n0\r\n\r\n",
        b"PUT /datastore/image HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=\r\n"
        b"Content-Length: 4\r\n\r\nabcd",
        b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /info/ HTTP/1.1\r\n" + b"X-Big: " + b"b" * 300_000 + b"\r\n\r\n",
    ]
    statuses = []
    for payload in cases:
        with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
            sock.sendall(payload)
            try:
                reply = sock.recv(4096)
            except TimeoutError:
                reply = b""
        if reply.startswith(b"HTTP/1."):
            statuses.append(int(reply.split(b" ", 2)[1]))
    time.sleep(0.1)
    return statuses
