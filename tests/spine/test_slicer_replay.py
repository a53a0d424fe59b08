"""A replay of the 3D Slicer call sequence (contract section 2) with plain http.client, no redirects."""

from __future__ import annotations

import http.client
import json
import re
import uuid
from pathlib import Path

from tests.conftest import Server, write_label, write_volume


def call(
    conn: http.client.HTTPConnection,
    method: str,
    path: str,
    body: bytes | None = None,
    ctype: str | None = None,
) -> tuple[int, dict[str, str], bytes]:
    headers = {"content-type": ctype} if ctype else {}
    conn.request(method, path, body=body, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[str, bytes]:
    boundary = uuid.uuid4().hex
    out = bytearray()
    for k, v in fields.items():
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
    for k, (name, data) in files.items():
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"; filename="{name}"\r\n'.encode()
        out += b"Content-Type: application/octet-stream\r\n\r\n" + data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return f"multipart/form-data; boundary={boundary}", bytes(out)


def test_slicer_sequence(server: Server, tmp_path: Path) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)

    status, _, _ = call(conn, "GET", "/auth/")
    assert status == 404  # auth off: the route is not mounted

    status, _, body = call(conn, "GET", "/info/")
    assert status == 200
    info = json.loads(body)
    assert "config" not in info and "models" in info
    for no_slash in ("/info", "/datastore", "/datastore/?output=stats"):
        assert call(conn, "GET", no_slash)[0] == 200  # both forms, never a 3xx

    status, _, _ = call(conn, "GET", "/train/?check_if_running=true")
    assert status in (200, 404)

    status, _, body = call(
        conn,
        "POST",
        "/activelearning/random",
        json.dumps({"client_id": "slicer"}).encode(),
        "application/json",
    )
    assert status == 200
    sample = json.loads(body)
    assert {"id", "name", "path"} <= set(sample)
    image_id = sample["id"]

    status, headers, data = call(conn, "GET", f"/datastore/image?image={image_id}")
    assert status == 200
    assert re.search(r'filename="(.+)"', headers["content-disposition"]).group(1) == sample["name"]  # type: ignore[union-attr]
    assert data == (server.studies / sample["name"]).read_bytes()

    status, _, body = call(conn, "GET", "/datastore/?output=all")
    assert status == 200 and image_id in json.loads(body)["objects"]
    status, _, _ = call(conn, "GET", f"/datastore/label?label={image_id}&tag=original")
    assert status == 404  # no prediction yet; Slicer swallows the error

    label = write_label(tmp_path / "seg.nii.gz").read_bytes()
    params = json.dumps(
        {"label_info": [{"name": "liver", "idx": 1}], "model": "segmentation", "client_id": "slicer"}
    )
    ctype, payload = multipart({"params": params}, {"label": ("seg.nii.gz", label)})
    status, _, body = call(conn, "PUT", f"/datastore/label?image={image_id}", payload, ctype)
    assert status == 200, body
    saved = json.loads(body)
    assert {"image": image_id, "label": image_id}.items() <= saved.items()  # MONAI Label's keys
    assert saved["version"] == 1 and saved["held"] is False  # labelloop's: the label history

    volume = write_volume(tmp_path / "node.nii.gz", seed=9).read_bytes()
    ctype, payload = multipart({"params": "{}"}, {"file": ("vtkMRMLScalarVolumeNode1.nii.gz", volume)})
    status, _, body = call(conn, "PUT", "/datastore/?image=vtkMRMLScalarVolumeNode1", payload, ctype)
    assert status == 200 and json.loads(body) == {"image": "vtkMRMLScalarVolumeNode1"}

    ctype, payload = multipart({"client_id": "slicer"}, {"files": ("local.nii.gz", volume)})
    status, _, body = call(conn, "PUT", "/session/", payload, ctype)
    assert status == 200
    sid = json.loads(body)["session_id"]
    status, _, data = call(conn, "GET", f"/session/{sid}?image=true")
    assert status == 200 and data == volume

    status, _, body = call(conn, "GET", "/info/")
    assert json.loads(body)["datastore"] == {"total": 4, "completed": 1, "label_tags": {"final": 1}}

    status, headers, _ = call(conn, "OPTIONS", "/info/")
    assert status == 200
