"""The DICOM file a C-STORE becomes: preamble, ``DICM``, File Meta Information, then the dataset bytes
exactly as the sender encoded them.

pynetdicom's ``Event.encoded_dataset()`` builds the File Meta as a pydicom dataset and encodes it on
every call: about a seventh of the receiver's Python time with four associations (py-spy,
``benchmarks/dicom_ingest.py``). The group has six fixed elements in Explicit VR Little Endian
(PS3.10 7.1), so it is packed here directly; ``tests/dicom/test_filemeta.py`` checks the bytes equal
pynetdicom's for UIDs of odd and even length and every transfer syntax the SCP accepts.
"""

from __future__ import annotations

import struct
from typing import cast

from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event

PREAMBLE = b"\x00" * 128 + b"DICM"


def _short(group: int, element: int, vr: bytes, value: bytes) -> bytes:
    """An element with a 2-byte length (UI, SH, UL)."""
    return struct.pack("<HH2sH", group, element, vr, len(value)) + value


def _uid(value: str) -> bytes:
    data = value.encode("ascii")
    return data + b"\x00" if len(data) % 2 else data  # UI pads with NUL to an even length


def _text(value: str) -> bytes:
    data = value.encode("ascii")
    return data + b" " if len(data) % 2 else data  # SH pads with a space


_VERSION = struct.pack("<HH2sHI", 0x0002, 0x0001, b"OB", 0, 2) + b"\x00\x01"
_IMPLEMENTATION = _short(0x0002, 0x0012, b"UI", _uid(PYNETDICOM_IMPLEMENTATION_UID)) + _short(
    0x0002, 0x0013, b"SH", _text(PYNETDICOM_IMPLEMENTATION_VERSION)
)


def file_meta(sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str) -> bytes:
    """The encoded File Meta Information group (0002), group length first."""
    body = b"".join(
        (
            _VERSION,
            _short(0x0002, 0x0002, b"UI", _uid(sop_class_uid)),
            _short(0x0002, 0x0003, b"UI", _uid(sop_instance_uid)),
            _short(0x0002, 0x0010, b"UI", _uid(transfer_syntax)),
            _IMPLEMENTATION,
        )
    )
    return _short(0x0002, 0x0000, b"UL", struct.pack("<I", len(body))) + body


def encoded_file(event: Event, sop_class_uid: str, sop_instance_uid: str) -> bytes:
    """What ``event.encoded_dataset()`` returns for a C-STORE event (whose request's UIDs the caller
    has read already: each read of them validates the UID again), without building datasets."""
    dataset = cast(C_STORE, event.request).DataSet
    assert dataset is not None  # a C-STORE request always carries one
    meta = file_meta(sop_class_uid, sop_instance_uid, str(event.context.transfer_syntax))
    return b"".join((PREAMBLE, meta, dataset.getvalue()))
