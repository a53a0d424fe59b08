"""JSON out: what the server writes is always valid JSON. A non-finite float (NaN, Infinity) anywhere
in a reply, say a score or an old info value, becomes ``null`` instead of making the whole listing
unparseable for a browser client."""

from __future__ import annotations

from typing import Any

from flask.json.provider import DefaultJSONProvider

from server.wire import finite_dumps


class FiniteJSONProvider(DefaultJSONProvider):
    sort_keys = False

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        kwargs.setdefault("default", self.default)
        kwargs.setdefault("ensure_ascii", self.ensure_ascii)
        kwargs.setdefault("sort_keys", self.sort_keys)
        return finite_dumps(obj, **kwargs)
