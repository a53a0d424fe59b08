"""The Storage SCP, built like pynetdicom's own apps: ``ae.start_server(..., block=False, evt_handlers=...)``.

It answers C-ECHO, accepts every storage SOP class with the uncompressed transfer syntaxes and the
compressed ones this installation can decode, refuses associations from callers outside the allowlist,
and hands each C-STORE to the :class:`IncomingStore` (written atomically, indexed after it is safe).
"""

from __future__ import annotations

import logging
import re
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from pydicom import Dataset, uid
from pydicom.pixels import get_decoder
from pynetdicom import AE, AllStoragePresentationContexts, _config, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event
from pynetdicom.pdu_primitives import A_ASSOCIATE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from server.dicom.filemeta import encoded_file
from server.dicom.incoming import IncomingStore, IngestError, Status, read_meta
from server.dicom.worker import Worker
from server.errors import ConfigError

log = logging.getLogger(__name__)

UNCOMPRESSED = [
    uid.ExplicitVRLittleEndian,
    uid.ImplicitVRLittleEndian,
    uid.DeflatedExplicitVRLittleEndian,
    uid.ExplicitVRBigEndian,
]
COMPRESSED = [
    uid.RLELossless,
    uid.JPEGBaseline8Bit,
    uid.JPEGExtended12Bit,
    uid.JPEGLosslessSV1,
    uid.JPEGLossless,
    uid.JPEGLSLossless,
    uid.JPEGLSNearLossless,
    uid.JPEG2000Lossless,
    uid.JPEG2000,
]
_AET = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # printable ASCII but backslash, at most 16


def transfer_syntaxes() -> list[str]:
    """Uncompressed syntaxes first (preferred), then the compressed ones pydicom can decode here."""
    return [str(s) for s in UNCOMPRESSED] + [str(s) for s in COMPRESSED if get_decoder(s).is_available]


@dataclass(frozen=True)
class AllowEntry:
    aet: str | None  # None: any AE title
    host: str | None  # None: any address

    def matches(self, aet: str, host: str) -> bool:
        return (self.aet is None or self.aet == aet) and (self.host is None or self.host == host)


def parse_allowlist(text: str) -> list[AllowEntry]:
    """``"STORESCU@127.0.0.1,OTHER,@10.0.0.5"``: AE title, AE title at an address, or any title at one."""
    entries = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        aet, sep, host = item.partition("@")
        aet, host = aet.strip(), host.strip()
        if sep and not host:
            raise ConfigError(f"--dicom-allow {item!r}: an address must follow '@' (AET@HOST or @HOST)")
        if aet and not _AET.match(aet):
            raise ConfigError(f"--dicom-allow {item!r}: an AE title is 1-16 printable characters")
        entries.append(AllowEntry(aet or None, host or None))
    return entries


def check_aet(value: str, what: str = "--dicom-aet") -> str:
    if not _AET.match(value) or not value.strip():
        raise ConfigError(f"{what} {value!r}: an AE title is 1-16 printable ASCII characters")
    return value.strip()


class _Relaxer(Worker):
    """Puts associations that have gone quiet back on pynetdicom's default network poll."""

    name = "dicom-poll"

    def __init__(self, scp: StorageSCP) -> None:
        super().__init__(poll_seconds=1.0)
        self.scp = scp

    def step(self) -> bool:
        self.scp.relax_idle(time.monotonic())
        return False


class StorageSCP:
    """Fast network polling while one sender streams, pynetdicom's default (1 ms) otherwise.

    pynetdicom's network thread sleeps ``_run_loop_delay`` whenever a poll finds nothing. At 1 ms that
    adds up to a millisecond twice per instance (request in, response out): most of a small instance's
    time. At 0.2 ms an open but idle association costs ~14 % of a core (measured), so the short delay
    applies only while C-STOREs arrive on a single association and is lifted after a second without one.
    """

    IDLE_POLL = 0.001

    def __init__(
        self,
        incoming: IncomingStore,
        *,
        aet: str,
        host: str,
        port: int,
        allow: list[AllowEntry],
        on_stored: Callable[[], None] | None = None,
        poll_seconds: float = 0.0002,
    ) -> None:
        self.incoming = incoming
        self.aet = check_aet(aet)
        self.host, self.port = host, port
        self.allow = allow
        self.on_stored = on_stored
        self.poll_seconds = poll_seconds
        self._server: ThreadedAssociationServer | None = None
        self._ae: AE | None = None
        self._active: weakref.WeakKeyDictionary[Association, float] = weakref.WeakKeyDictionary()
        self._active_lock = threading.Lock()
        self._relaxer = _Relaxer(self)

    def build_ae(self) -> AE:
        ae = AE(ae_title=self.aet)
        syntaxes = transfer_syntaxes()
        for context in AllStoragePresentationContexts:
            if context.abstract_syntax is not None:
                ae.add_supported_context(context.abstract_syntax, syntaxes)
        ae.add_supported_context(Verification)
        # No PDU size limit: the sender splits each instance into fewer P-DATA PDUs (measured: ~25 %
        # more instances/s than pynetdicom's default of 16 kB with dcmtk's storescu).
        ae.maximum_pdu_size = 0
        ae.maximum_associations = 32
        ae.network_timeout = 60  # an idle association is closed after a minute
        return ae

    def start(self) -> None:
        if self._server is not None:
            return
        quiet = logging.getLogger("pynetdicom")
        if quiet.level == logging.NOTSET:
            # pynetdicom logs every DIMSE message at INFO: at thousands of instances a minute that
            # buries the app log and slows ingest. Set the logger's level explicitly to see them.
            quiet.setLevel(logging.WARNING)
            # Its standard handlers format every PDU and DIMSE message before the logger drops them:
            # ~5 % of the receiver's CPU (py-spy, four associations). Bound per association at its
            # creation, so this must precede start_server; a logger set explicitly keeps them.
            _config.LOG_HANDLER_LEVEL = "none"
        self._ae = self.build_ae()
        handlers: list[Any] = [
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
        ]
        server = self._ae.start_server((self.host, self.port), block=False, evt_handlers=handlers)
        assert server is not None  # block=False returns the running server
        self._server = server
        self.port = int(server.server_address[1])
        self._relaxer.start()
        log.info("DICOM Storage SCP %s listening on %s:%d", self.aet, self.host, self.port)

    def stop(self) -> None:
        self._relaxer.stop()
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        if self._ae is not None:
            self._ae.shutdown()
            self._ae = None

    @property
    def running(self) -> bool:
        return self._server is not None

    # ---- handlers (run in the association threads) -------------------------------------------
    def allowed(self, aet: str, host: str) -> bool:
        return not self.allow or any(entry.matches(aet, host) for entry in self.allow)

    def _on_requested(self, event: Event) -> None:
        requestor = event.assoc.requestor
        request = cast(A_ASSOCIATE, requestor.primitive)
        aet, host = str(request.calling_ae_title).strip(), str(requestor.address)
        if not self.allowed(aet, host):
            log.warning("rejected an association from %s@%s: not in the allowlist", aet, host)
            # Rejected permanent, by the service user: calling AE title not recognised. Then wait for
            # the reject to go out before the socket closes, as pynetdicom's own rejections do.
            event.assoc.acse.send_reject(0x01, 0x01, 0x03)
            event.assoc.kill()
            return
        self._busy(event.assoc)

    def _busy(self, assoc: Association) -> None:
        with self._active_lock:
            new = assoc not in self._active
            self._active[assoc] = time.monotonic()
            if new:
                self._tune()

    def relax_idle(self, now: float, after: float = 1.0) -> None:
        with self._active_lock:
            idle = [a for a, ts in self._active.items() if now - ts > after]
            for assoc in idle:
                assoc.dul._run_loop_delay = self.IDLE_POLL
                del self._active[assoc]
            if idle:
                self._tune()

    def _tune(self) -> None:
        """A lone sender waits on our latency: poll fast. With several, the CPU is the bottleneck and
        the other associations hide the latency (measured: 1 ms polls are ~8 % faster with four)."""
        delay = self.poll_seconds if len(self._active) == 1 else self.IDLE_POLL
        for assoc in self._active:
            assoc.dul._run_loop_delay = delay

    def _on_echo(self, event: Event) -> int:
        return Status.SUCCESS

    def _on_store(self, event: Event) -> int | Dataset:
        self._busy(event.assoc)
        request = cast(C_STORE, event.request)
        sop_uid, sop_class_uid = str(request.AffectedSOPInstanceUID), str(request.AffectedSOPClassUID)
        raw = encoded_file(event, sop_class_uid, sop_uid)
        try:
            meta = read_meta(raw)
            if meta.sop_uid != sop_uid:
                raise IngestError(Status.MISSING_UIDS, "SOPInstanceUID differs from the request's")
            if meta.sop_class_uid != sop_class_uid:
                raise IngestError(Status.SOP_CLASS_MISMATCH, "SOPClassUID differs from the request's")
            self.incoming.put(
                raw, meta, calling_aet=str(event.assoc.requestor.ae_title).strip(), batched=True
            )
        except IngestError as exc:
            log.warning("C-STORE refused (0x%04X): %s", exc.status, exc.detail)
            return _failure(exc)
        if self.on_stored is not None:
            self.on_stored()
        return Status.SUCCESS


def _failure(exc: IngestError) -> Dataset:
    ds = Dataset()
    ds.Status = exc.status
    ds.ErrorComment = exc.detail[:64]
    return ds
