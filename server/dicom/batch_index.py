"""Group commit for received instances: the SCP acknowledges a C-STORE once its file is safe, and this
worker indexes every row waiting since its last transaction in one transaction.

Why: one transaction per instance cost a quarter of the receiver's throughput with four associations
(three statements each, compiled and run through SQLAlchemy; measured with ``benchmarks/dicom_ingest.py``).
Rows arriving while a transaction runs are simply the next batch, so a lone sender adds no waiting and
many senders share one commit. What a crash can lose is only rows, never files: ``IncomingStore.recover``
indexes safe files without a row at the next start. A database error keeps the rows and retries.
"""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy.exc import SQLAlchemyError

from server.dicom.incoming import IncomingStore, IndexRow
from server.dicom.worker import Worker

log = logging.getLogger(__name__)


class IndexBatcher(Worker):
    name = "dicom-index"

    def __init__(
        self,
        store: IncomingStore,
        *,
        max_batch: int = 1000,
        linger_seconds: float = 0.05,
        retry_seconds: float = 1.0,
    ) -> None:
        super().__init__(poll_seconds=retry_seconds)
        self.store = store
        self.max_batch = max_batch
        self.linger_seconds = linger_seconds
        self._pending: list[IndexRow] = []
        self._cond = threading.Condition()
        self._submitted = 0  # rows handed in, ever
        self._done = 0  # rows committed (or found already indexed), ever
        self.failures = 0  # transactions that failed and were retried

    def submit(self, row: IndexRow) -> None:
        with self._cond:
            self._pending.append(row)
            self._submitted += 1
            first = len(self._pending) == 1
        if first:
            self.wake()

    @property
    def backlog(self) -> int:
        with self._cond:
            return self._submitted - self._done

    def step(self) -> bool:
        """Commit what is waiting, after letting a first row wait ``linger_seconds`` for company: a
        lone sender's instances come one per few milliseconds, and a transaction per row would cost
        each of them a commit and a thread switch."""
        with self._cond:
            waiting = len(self._pending)
        if waiting == 0:
            return False
        if waiting < self.max_batch and not self.stopping:
            time.sleep(self.linger_seconds)
        with self._cond:
            rows = self._pending[: self.max_batch]
            del self._pending[: self.max_batch]
        if not rows:
            return False
        try:
            with self.store.write_lock:
                self.store.index_rows(rows)
        except SQLAlchemyError as exc:
            self.failures += 1
            log.warning("indexing %d received instances failed, retrying: %s", len(rows), exc)
            with self._cond:
                self._pending[:0] = rows  # back in front, in order; the files are safe meanwhile
            return False  # wait ``retry_seconds`` (or the next submit) before trying again
        with self._cond:
            self._done += len(rows)
            self._cond.notify_all()
        return True

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every row submitted so far is committed; False on timeout (e.g. no database).
        Without the thread running, the caller's thread commits them."""
        deadline = time.monotonic() + timeout
        with self._cond:
            target = self._submitted
        while True:
            with self._cond:
                if self._done >= target:
                    return True
                if self.running:
                    self._cond.wait(max(0.0, min(deadline - time.monotonic(), 0.1)))
            if time.monotonic() >= deadline:
                return False
            if not self.running and not self.step():
                time.sleep(0.05)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the rows already handed in are committed (they are also safe if this fails)."""
        if self.running and not self.flush(timeout):
            log.warning("%d received instances were left unindexed; indexed at the next start", self.backlog)
        super().stop(timeout)
