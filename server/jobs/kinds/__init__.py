"""Job kinds, one module each, and :class:`JobKinds`, the one registry that finds them.

A kind module defines a :class:`~server.jobs.kinds.base.JobKind` subclass and ``KIND``, its instance.
Built-in kinds are listed in :data:`BUILTIN`; more come from the ``job_kinds`` setting (module names,
``LABELLOOP_JOB_KINDS``), which every process of the server (web, consumer, job) loads alike. A kind
that can be split (it defines ``span``) also brings its chunk kind (:mod:`server.jobs.shards`).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator, Sequence

from server.errors import ConfigError, Unprocessable
from server.jobs.kinds.base import JobKind

BUILTIN = ("server.jobs.kinds.train", "server.jobs.kinds.scoring", "server.jobs.kinds.batch_infer")


class JobKinds:
    """The kinds this process knows, by name."""

    def __init__(self, kinds: Iterable[JobKind]) -> None:
        self._kinds: dict[str, JobKind] = {}
        for kind in kinds:
            if kind.name in self._kinds:
                raise ConfigError(f"job kind {kind.name!r} is declared twice")
            self._kinds[kind.name] = kind

    @classmethod
    def load(cls, extra_modules: Sequence[str] = ()) -> JobKinds:
        """The built-in kinds and those of ``extra_modules`` (each a module with ``KIND``)."""
        kinds = []
        for name in [*BUILTIN, *extra_modules]:
            try:
                module = importlib.import_module(name)
            except ImportError as exc:
                raise ConfigError(f"job kind module {name!r} cannot be imported: {exc}") from exc
            kind = getattr(module, "KIND", None)
            if not isinstance(kind, JobKind):
                raise ConfigError(f"job kind module {name!r} defines no KIND (a server.jobs.kinds.JobKind)")
            kinds.append(kind)
            if type(kind).span is not JobKind.span:
                from server.jobs.shards import Chunk

                kinds.append(Chunk(kind))
        return cls(kinds)

    def get(self, name: str) -> JobKind:
        kind = self._kinds.get(name)
        if kind is None:
            raise Unprocessable(f"unknown job kind {name!r} (known: {', '.join(sorted(self._kinds))})")
        return kind

    def __contains__(self, name: object) -> bool:
        return name in self._kinds

    def __iter__(self) -> Iterator[JobKind]:
        return iter(self._kinds.values())
