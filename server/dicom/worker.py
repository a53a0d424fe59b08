"""A background thread owned by a service object: ``step()`` while there is work, else wait to be woken."""

from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)


class Worker:
    """Subclasses implement ``step() -> bool`` (True: did something, call again at once)."""

    name = "worker"

    def __init__(self, poll_seconds: float) -> None:
        self.poll_seconds = poll_seconds
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def on_start(self) -> None:
        """Runs once in the thread before the first step (re-queue what a restart interrupted)."""

    def step(self) -> bool:
        raise NotImplementedError

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"labelloop-{self.name}", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("%s did not stop within %ss", self.name, timeout)
        self._thread = None

    def run_until_idle(self, limit: int = 1000) -> int:
        """Run steps in the caller's thread until there is nothing left (tests, one-shot tools)."""
        done = 0
        while done < limit and self.step():
            done += 1
        return done

    def _run(self) -> None:
        try:
            self.on_start()
        except Exception:  # a worker that cannot start logs why; the server keeps serving
            log.exception("%s failed to start", self.name)
            return
        while not self._stop.is_set():
            try:
                busy = self.step()
            except Exception:  # one bad item must not kill the thread: log it and go on
                log.exception("%s step failed", self.name)
                busy = False
            if not busy:
                self._wake.wait(self.poll_seconds)
                self._wake.clear()
