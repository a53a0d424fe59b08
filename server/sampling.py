"""Next-sample: run a strategy over the unlabelled, unleased pool and lease what it picks.

Every pool query is backed by an index (``ix_images_next_random``, ``ix_images_next_id``,
``ix_scores_rank``; lookups by id use the primary keys of ``scores`` and ``embeddings``); leased rows
are filtered on the way, and there are only as many of those as annotators. A pick is claimed with a
compare-and-set ``UPDATE`` so two annotators asking at once never receive the same study, on SQLite
and PostgreSQL alike.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Executable, and_, exists, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from server.database import Database
from server.datastore.store import FINAL, Datastore
from server.errors import BadRequest, NotFound
from server.models import Assignment, Embedding, Image, LabelVersion, Score, Skip, unpack_vector
from strategies.base import Candidate, Selection, SelectionContext, Strategy

AUDIT = "audit"  # the assignment's strategy name of an audit pick (server/evidence.py)

CLAIM_ATTEMPTS = 8
MAX_BATCH = 100
TAKEN_LIMIT = 5000  # chosen studies' embeddings a batch-aware strategy keeps away from
ID_CHUNK = 500  # ids per ``IN (...)`` lookup: well under SQLite's bound-parameter limit


class SqlCandidatePool:
    """The ``CandidatePool`` over the database, as seen by one client at one moment."""

    def __init__(
        self,
        s: Session,
        now: float,
        client_id: str | None,
        rng: random.Random,
        exclude: set[str],
        person: str | None = None,
    ):
        self.s, self.now, self.client_id, self.rng, self.exclude = s, now, client_id, rng, exclude
        self.person = person  # never offered a study this person has labelled (the overlap share)

    def _open(self) -> ColumnElement[bool]:
        free = Image.lease_expires <= self.now
        if self.client_id:
            free = or_(free, Image.lease_client == self.client_id)
        cond = and_(Image.completed.is_(False), free)
        if self.exclude:
            cond = and_(cond, Image.id.not_in(self.exclude))
        if self.person:
            read = exists().where(
                LabelVersion.image_id == Image.id,
                LabelVersion.tag == FINAL,
                LabelVersion.author == self.person,
            )
            cond = and_(cond, or_(Image.readings == 0, ~read))
        return cond

    def count(self) -> int:
        return self.s.scalar(select(func.count()).select_from(Image).where(self._open())) or 0

    def least_recently_served(self, k: int) -> list[Candidate]:
        rows = self._by_random_key(and_(self._open(), Image.last_served_ts == 0.0), k)
        if len(rows) < k:
            rows += self.s.execute(
                select(Image.id, Image.last_served_ts)
                .where(self._open(), Image.last_served_ts > 0.0)
                .order_by(Image.last_served_ts, Image.rand_key)
                .limit(k - len(rows))
            ).all()
        return [Candidate(i, ts) for i, ts in rows]

    def at_random(self, k: int) -> list[Candidate]:
        """Open studies at random, whether served before or not (audit picks): the first fixed random
        keys at or after a uniform draw. Keys are a hash of the id, blind to the content, so a mean
        over these picks estimates the pool's mean without bias."""
        return [Candidate(i, ts) for i, ts in self._by_random_key(self._open(), k)]

    def _by_random_key(self, cond: ColumnElement[bool], k: int) -> list[Any]:
        """Up to ``k`` ``(id, last_served_ts)`` rows matching ``cond``, in fixed-random-key order from a
        uniform draw, wrapping around to the start."""
        r = self.rng.random()
        cols = (Image.id, Image.last_served_ts)
        rows = list(
            self.s.execute(select(*cols).where(cond, Image.rand_key >= r).order_by(Image.rand_key).limit(k))
        )
        if len(rows) < k:
            rows += self.s.execute(
                select(*cols).where(cond, Image.rand_key < r).order_by(Image.rand_key).limit(k - len(rows))
            ).all()
        return rows

    def by_id(self, k: int, descending: bool = False) -> list[Candidate]:
        order = Image.id.desc() if descending else Image.id
        rows = self.s.execute(
            select(Image.id, Image.last_served_ts).where(self._open()).order_by(order).limit(k)
        )
        return [Candidate(i, ts) for i, ts in rows]

    def score_version(self, method: str) -> str | None:
        return self.s.scalar(
            select(Score.model_version).where(Score.method == method).order_by(Score.ts.desc()).limit(1)
        )

    def top_scored(self, method: str, k: int, model_version: str | None = None) -> list[Candidate]:
        if model_version is None:
            model_version = self.score_version(method)
            if model_version is None:
                return []
        # Scores drive, highest first on ix_scores_rank, and each is kept when its study is open (a
        # lookup by id): the plan does not depend on the database's statistics. As a plain join, SQLite
        # without ANALYZE scanned every open study and sorted (390 ms at 100k studies).
        served = select(Image.last_served_ts).where(Image.id == Score.image_id).scalar_subquery()
        is_open = exists().where(Image.id == Score.image_id, self._open())
        rows = self.s.execute(
            select(Score.image_id, served, Score.value)
            .where(Score.method == method, Score.model_version == model_version, is_open)
            .order_by(Score.value.desc())
            .limit(k)
        )
        return [Candidate(i, ts or 0.0, v) for i, ts, v in rows]

    def score_values(
        self, method: str, ids: Sequence[str], model_version: str | None = None
    ) -> dict[str, float]:
        version = model_version if model_version is not None else self.score_version(method)
        out: dict[str, float] = {}
        if version is None:
            return out
        rows = self._for_ids(
            ids,
            lambda chunk: (
                select(Score.image_id, Score.value)
                .join(Image, Image.id == Score.image_id)
                .where(
                    Score.image_id.in_(chunk),
                    Score.method == method,
                    Score.model_version == version,
                    self._open(),
                )
            ),
        )
        out.update((i, float(v)) for i, v in rows)
        return out

    def embeddings(self, ids: Sequence[str], model_version: str | None = None) -> dict[str, list[float]]:
        version = model_version
        if version is None:
            version = self.s.scalar(select(Embedding.model_version).order_by(Embedding.ts.desc()).limit(1))
        out: dict[str, list[float]] = {}
        if version is None:
            return out
        rows = self._for_ids(
            ids,
            lambda chunk: (
                select(Embedding.image_id, Embedding.vector)
                .join(Image, Image.id == Embedding.image_id)
                .where(Embedding.image_id.in_(chunk), Embedding.model_version == version, self._open())
            ),
        )
        out.update((i, unpack_vector(blob)) for i, blob in rows)
        return out

    def _embedding_version(self, model_version: str | None) -> str | None:
        """``model_version``, or the newest one with stored embeddings."""
        if model_version is not None:
            return model_version
        return self.s.scalar(select(Embedding.model_version).order_by(Embedding.ts.desc()).limit(1))

    def taken(self, model_version: str | None = None) -> list[list[float]]:
        version = self._embedding_version(model_version)
        if version is None:
            return []
        held = Image.lease_expires > self.now
        if self.client_id:
            held = and_(held, or_(Image.lease_client.is_(None), Image.lease_client != self.client_id))
        rows = self.s.scalars(
            select(Embedding.vector)
            .join(Image, Image.id == Embedding.image_id)
            .where(
                Embedding.model_version == version,
                or_(Image.completed.is_(True), held),
                Image.id.not_in(select(Skip.image_id)),
            )
            .order_by(Image.last_served_ts.desc())
            .limit(TAKEN_LIMIT)
        )
        return [unpack_vector(blob) for blob in rows]

    def skipped(self, model_version: str | None = None) -> list[list[float]]:
        version = self._embedding_version(model_version)
        if version is None:
            return []
        rows = self.s.scalars(
            select(Embedding.vector)
            .join(Skip, Skip.image_id == Embedding.image_id)
            .where(Embedding.model_version == version)
            .order_by(Skip.ts.desc())
            .limit(TAKEN_LIMIT)
        )
        return [unpack_vector(blob) for blob in rows]

    def _for_ids(self, ids: Sequence[str], query: Callable[[list[str]], Executable]) -> Iterator[Any]:
        """Rows of ``query(chunk)`` for the distinct ``ids``, ``ID_CHUNK`` at a time (parameter limits)."""
        unique = list(dict.fromkeys(ids))
        for start in range(0, len(unique), ID_CHUNK):
            yield from self.s.execute(query(unique[start : start + ID_CHUNK]))


class Sampler:
    """Kept in ``Services.sampler``; strategies come from the loaded app."""

    def __init__(
        self, db: Database, datastore: Datastore, lease_seconds: int, audit_share: float = 0.0
    ) -> None:
        self.db, self.datastore, self.lease_seconds = db, datastore, lease_seconds
        self.audit_share = audit_share  # picks served at random to measure the model (server/evidence.py)
        self.rng = random.Random()

    def next_sample(
        self,
        strategies: Mapping[str, Strategy],
        name: str,
        params: dict[str, Any],
        owner: str | None = None,
        person: str | None = None,
    ) -> list[dict[str, Any]]:
        """Pick and lease up to ``k`` studies to ``owner`` (default: the ``client_id`` param; the
        route passes the key of server/team/actor.py); each reply carries its id, path and image info.
        ``person``: who is asking, never handed a study they have labelled."""
        strategy = strategies.get(name)
        if strategy is None:
            raise NotFound(f"Strategy NOT Found: {name}; available: {', '.join(sorted(strategies))}")
        client_id = params.get("client_id")
        if client_id is not None and not isinstance(client_id, str):
            raise BadRequest("client_id must be a string")
        if owner is not None:
            client_id = owner
        k = params.get("k", 1)
        if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_BATCH:
            raise BadRequest(f"k must be an integer in 1..{MAX_BATCH}")

        # An audit pick: one study at random instead of the strategy's, marked in reply and assignment.
        audit = k == 1 and self.audit_share > 0 and self.rng.random() < self.audit_share
        recorded = AUDIT if audit else name
        claimed: list[dict[str, Any]] = []
        lost: set[str] = set()
        for _ in range(CLAIM_ATTEMPTS):
            now = time.time()
            taken = {c["id"] for c in claimed}
            with self.db.sessions() as s:
                pool = SqlCandidatePool(s, now, client_id, self.rng, lost | taken, person)
                if audit:
                    picks = [Selection(c.image_id, {"audit": True}) for c in pool.at_random(1)]
                else:
                    ctx = SelectionContext(name, client_id, params, now, self.rng)
                    picks = strategy.select(pool, k - len(claimed), ctx)
            if not picks:
                break
            for sel in picks:
                reply = self._claim(sel, recorded, client_id, now, first=not claimed)
                if reply is None:
                    lost.add(sel.image_id)
                else:
                    claimed.append(reply)
            if len(claimed) >= k:
                break
        return claimed

    def _claim(
        self, sel: Selection, strategy: str, client_id: str | None, now: float, first: bool
    ) -> dict[str, Any] | None:
        """Lease ``sel`` if it is still free (compare-and-set) and build its reply, in one transaction."""
        lease: dict[str, Any] = {"last_served_ts": now}
        free = Image.lease_expires <= now
        if client_id:
            lease.update(lease_client=client_id, lease_expires=now + self.lease_seconds)
            free = or_(free, Image.lease_client == client_id)
        with self.db.session() as s:
            # The compare-and-set and the row it leased, in one statement (UPDATE ... RETURNING).
            row = s.scalars(
                update(Image)
                .where(Image.id == sel.image_id, Image.completed.is_(False), free)
                .values(**lease)
                .returning(Image)
                .execution_options(synchronize_session=False)
            ).first()
            if row is None:
                return None
            if client_id and first:
                # A client holds the leases of its latest request: asking again releases the older ones.
                # ``lease_expires > 0`` keeps this on the lease index (only leased rows are visited).
                s.execute(
                    update(Image)
                    .where(Image.lease_expires > 0.0, Image.lease_client == client_id)
                    .where(Image.id != sel.image_id)
                    .values(lease_client=None, lease_expires=0.0)
                    .execution_options(synchronize_session=False)
                )
            self._record(s, sel.image_id, strategy, client_id, now)
            reply: dict[str, Any] = {"id": sel.image_id, **sel.fields}
            reply.update(self.datastore.info_of(s, row))
            if row.lease_client:
                reply["lease"] = {"client_id": row.lease_client, "expires_ts": int(row.lease_expires)}
            return reply

    def _record(self, s: Session, image_id: str, strategy: str, client_id: str | None, now: float) -> None:
        values = {"image_id": image_id, "strategy": strategy, "client_id": client_id, "ts": now}
        postgres = s.bind is not None and s.bind.dialect.name == "postgresql"
        ins = pg_insert(Assignment) if postgres else sqlite_insert(Assignment)
        s.execute(
            ins.values(**values).on_conflict_do_update(
                index_elements=["image_id", "strategy"], set_={"client_id": client_id, "ts": now}
            )
        )
