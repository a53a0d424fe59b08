"""Relay viewer requests to the DICOMweb source (MONAI Label's ``/proxy/dicom/``, OHIF's QIDO and WADO roots).

Only the configured source is ever reached: the request path is checked segment by segment (no empty,
``.`` or ``..`` segment, no backslash) and each segment is percent-encoded again before it is appended
to the source URL, so a path cannot leave the source's DICOMweb root or add a query. Only the headers a
DICOMweb exchange needs go up (``Accept``, ``Accept-Encoding``, ``Content-Type``, ``Content-Length``),
never the caller's ``Authorization`` or cookies; only content headers come back. The body is streamed
both ways as it is sent: a caller that asks for no encoding gets none (``identity`` goes up).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.cookiejar import DefaultCookiePolicy
from typing import IO
from urllib.parse import quote

import requests

from server.errors import BadRequest, LabelloopError

OPS = ("qido", "wado", "stow")
UP_HEADERS = ("accept", "accept-encoding", "content-type", "content-length")
DOWN_HEADERS = ("content-type", "content-length", "content-encoding", "etag", "last-modified")
CHUNK = 64 * 1024


class UpstreamError(LabelloopError):
    status = 502


def safe_path(path: str) -> str:
    """``path`` with every segment checked and percent-encoded; BadRequest when a segment could escape."""
    segments = path.split("/")
    if path.endswith("/"):
        segments = segments[:-1]  # one trailing slash is kept as it is
    for seg in segments:
        if seg in ("", ".", "..") or "\\" in seg or any(ord(c) < 0x20 for c in seg):
            raise BadRequest(f"bad DICOMweb path: {path!r}")
    return "/".join(quote(seg, safe="") for seg in segments) + ("/" if path.endswith("/") else "")


@dataclass
class DicomWebProxy:
    """``url``: the source's DICOMweb root; ``prefixes``: extra path per operation (MONAI Label's
    ``MONAI_LABEL_{QIDO,WADO,STOW}_PREFIX``), empty for a PACS that serves all three at its root."""

    url: str
    prefixes: Mapping[str, str] = field(default_factory=dict)
    timeout: float = 60.0
    session: requests.Session = field(default_factory=requests.Session)

    def __post_init__(self) -> None:
        # One session serves every caller: a cookie the PACS sets for one must never go up for another.
        self.session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))

    def target(self, path: str) -> str:
        """The source URL for ``path``: a leading ``qido``/``wado``/``stow`` segment becomes its prefix."""
        head, _, rest = path.partition("/")
        if head in OPS:
            prefix = self.prefixes.get(head, "").strip("/")
            path = f"{prefix}/{rest}" if prefix else rest
        if not path:
            raise BadRequest("a DICOMweb path is needed after /proxy/dicom/")
        return f"{self.url.rstrip('/')}/{safe_path(path)}"

    def relay(
        self, method: str, path: str, query: bytes, headers: Mapping[str, str], body: IO[bytes] | None
    ) -> tuple[int, dict[str, str], Iterator[bytes]]:
        """Send the request upstream; its status, content headers and a body iterator (to close after)."""
        url = self.target(path)
        if query:
            url += "?" + query.decode("latin-1")
        up = {k: v for k, v in headers.items() if k.lower() in UP_HEADERS}
        if not any(k.lower() == "accept-encoding" for k in up):
            up["Accept-Encoding"] = "identity"  # not requests' default gzip, which the caller never asked for
        try:
            timeout = (10.0, self.timeout)
            r = self.session.request(
                method, url, headers=up, data=body, stream=True, timeout=timeout, allow_redirects=False
            )
        except requests.RequestException as exc:
            raise UpstreamError(f"DICOMweb source unreachable: {type(exc).__name__}") from exc
        down = {k: v for k, v in r.headers.items() if k.lower() in DOWN_HEADERS}

        def chunks() -> Iterator[bytes]:
            try:
                yield from r.raw.stream(CHUNK, decode_content=False)  # as sent: Content-Encoding is relayed
            finally:
                r.close()

        return r.status_code, down, chunks()
