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
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import (
    JSON,
    ColumnElement,
    Executable,
    Float,
    String,
    Table,
    and_,
    bindparam,
    column,
    exists,
    func,
    or_,
    select,
    text,
    update,
)
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
        version = self._embedding_version(model_version)
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
        self.sql = LeaseStatements.build()

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
            first = not claimed
            with self.db.sessions() as s:
                pool = SqlCandidatePool(s, now, client_id, self.rng, lost | taken, person)
                if audit:
                    picks = [Selection(c.image_id, {"audit": True}) for c in pool.at_random(1)]
                else:
                    ctx = SelectionContext(name, client_id, params, now, self.rng)
                    picks = strategy.select(pool, k - len(claimed), ctx)
                if picks and self.db.is_postgres:
                    # The read's transaction leases what it picked (one round of statements fewer).
                    # Safe on PostgreSQL, whose compare-and-set re-checks the row; SQLite could not
                    # turn this read into a write once another writer has committed.
                    replies, missed = self._claim_all(s, picks, recorded, client_id, now, first)
                    s.commit()
            if not picks:
                break
            if not self.db.is_postgres:
                with self.db.session() as s:
                    replies, missed = self._claim_all(s, picks, recorded, client_id, now, first)
            claimed += replies
            lost |= missed
            if len(claimed) >= k:
                break
        return claimed

    def _claim_all(
        self,
        s: Session,
        picks: Sequence[Selection],
        strategy: str,
        client_id: str | None,
        now: float,
        first: bool,
    ) -> tuple[list[dict[str, Any]], set[str]]:
        """Lease each pick still free, in ``s``'s transaction: the replies, and the ids others took."""
        replies: list[dict[str, Any]] = []
        lost: set[str] = set()
        for sel in picks:
            params = {
                "pick": sel.image_id,
                "now": now,
                "client": client_id,
                "expires": now + self.lease_seconds,
                "strategy": strategy,
                # A client holds the leases of its latest request: asking again releases the older ones.
                "release": bool(client_id) and first and not replies,
            }
            leased = self._lease(s, params)
            if leased is None:
                lost.add(sel.image_id)
                continue
            row, served = leased
            reply: dict[str, Any] = {"id": sel.image_id, **sel.fields}
            reply.update(self.datastore.info_of_row(row.info, row.file, served))
            if row.lease_client:
                reply["lease"] = {"client_id": row.lease_client, "expires_ts": int(row.lease_expires)}
            replies.append(reply)
        return replies, lost

    def _lease(self, s: Session, params: dict[str, Any]) -> tuple[Any, list[Any]] | None:
        """Lease ``params["pick"]`` if it is still free (a compare-and-set), release the caller's older
        leases, record the assignment: the leased row and the study's ``(strategy, ts, client_id)``
        assignments, or None when another client took it first."""
        sql = self.sql
        leased = params["client"] is not None
        if self.db.is_postgres:
            rows = s.execute(sql.pg_lease_leased if leased else sql.pg_lease, params).all()
            return (rows[0], [(r.strategy, r.ts, r.served_to) for r in rows]) if rows else None
        row = s.execute(sql.claim_leased if leased else sql.claim, params).first()
        if row is None:
            return None
        if params["release"]:
            s.execute(sql.release_others, params)
        s.execute(sql.record, params)
        return row, list(s.execute(sql.assignments, params).all())


@dataclass(frozen=True)
class LeaseStatements:
    """The statements of a lease, built once per ``Sampler`` and run with parameters (``pick``,
    ``now``, ``client``, ``expires``, ``strategy``, ``release``): building them per request was most
    of next-sample's own time. SQLite runs the steps one by one; PostgreSQL does them all in one
    statement (``pg_lease``): one round trip."""

    claim: Executable
    claim_leased: Executable
    release_others: Executable
    record: Executable
    assignments: Executable
    pg_lease: Executable
    pg_lease_leased: Executable

    @classmethod
    def build(cls) -> LeaseStatements:
        images, assignments = cast(Table, Image.__table__), cast(Table, Assignment.__table__)
        pick, now = bindparam("pick", type_=String), bindparam("now", type_=Float)
        client = bindparam("client", type_=String)
        returned = (images.c.id, images.c.info, images.c.file, images.c.lease_client, images.c.lease_expires)

        def claim(leased: bool) -> Executable:
            free = images.c.lease_expires <= now
            values: dict[str, Any] = {"last_served_ts": now}
            if leased:
                free = or_(free, images.c.lease_client == client)
                values.update(lease_client=client, lease_expires=bindparam("expires"))
            return (
                update(images)
                .where(images.c.id == pick, images.c.completed.is_(False), free)
                .values(values)
                .returning(*returned)
            )

        # ``lease_expires > 0`` keeps the release on the lease index (only leased rows are visited).
        release = (
            update(images)
            .where(images.c.lease_expires > 0.0, images.c.lease_client == client, images.c.id != pick)
            .values(lease_client=None, lease_expires=0.0)
        )
        ins = sqlite_insert(assignments)
        values = {"image_id": pick, "strategy": bindparam("strategy"), "client_id": client, "ts": now}
        record = ins.values(values).on_conflict_do_update(
            index_elements=["image_id", "strategy"],
            set_={"client_id": ins.excluded.client_id, "ts": ins.excluded.ts},
        )
        served = select(assignments.c.strategy, assignments.c.ts, assignments.c.client_id).where(
            assignments.c.image_id == pick
        )
        return cls(claim(False), claim(True), release, record, served, _pg_lease(False), _pg_lease(True))


def _pg_lease(leased: bool) -> Executable:
    """The lease on PostgreSQL as one statement, the same steps as the portable ones: the compare-and-
    set, the release (only once the pick is taken), the assignment, the study's assignments back.

    ``set_config(..., true)`` is ``SET LOCAL synchronous_commit TO OFF``: a lease is a soft reservation,
    and a database crash losing the last moment's leases is the same as their expiring (the study is
    served again). Nothing else is written in this transaction."""
    if leased:
        sets = "last_served_ts = :now, lease_client = :client, lease_expires = :expires"
        free = "(lease_expires <= :now OR lease_client = :client)"
    else:
        sets, free = "last_served_ts = :now", "lease_expires <= :now"
    sql = f"""
        WITH claimed AS (
            UPDATE images SET {sets}
            WHERE id = :pick AND completed IS false AND {free}
            RETURNING id, info, file, lease_client, lease_expires
        ), released AS (
            UPDATE images SET lease_client = NULL, lease_expires = 0
            WHERE :release AND lease_expires > 0 AND lease_client = :client AND id <> :pick
              AND EXISTS (SELECT 1 FROM claimed)
        ), recorded AS (
            INSERT INTO assignments (image_id, strategy, client_id, ts)
            SELECT id, CAST(:strategy AS varchar), CAST(:client AS varchar), CAST(:now AS double precision)
            FROM claimed
            ON CONFLICT (image_id, strategy) DO UPDATE SET client_id = excluded.client_id, ts = excluded.ts
            RETURNING strategy, ts, client_id
        ), soft AS (
            SELECT set_config('synchronous_commit', 'off', true)
        )
        SELECT c.id, c.info, c.file, c.lease_client, c.lease_expires,
               a.strategy, a.ts, a.client_id AS served_to
        FROM claimed c CROSS JOIN soft CROSS JOIN (
            SELECT strategy, ts, client_id FROM recorded
            UNION ALL
            SELECT strategy, ts, client_id FROM assignments WHERE image_id = :pick AND strategy <> :strategy
        ) a
    """
    return text(sql).columns(
        column("id", String),
        column("info", JSON),
        column("file", String),
        column("lease_client", String),
        column("lease_expires", Float),
        column("strategy", String),
        column("ts", Float),
        column("served_to", String),
    )
