"""The SCP packs the File Meta group itself: it must equal, byte for byte, what pynetdicom encodes."""

from __future__ import annotations

import pytest
from pydicom.uid import generate_uid
from pynetdicom.dsutils import create_file_meta, encode_file_meta

from server.dicom.filemeta import file_meta
from server.dicom.listener import transfer_syntaxes

CT = "1.2.840.10008.5.1.4.1.1.2"  # CT Image Storage (even length)
MR = "1.2.840.10008.5.1.4.1.1.4"
SEG = "1.2.840.10008.5.1.4.1.1.66.4"  # odd length


@pytest.mark.parametrize("sop_class", [CT, MR, SEG])
@pytest.mark.parametrize("syntax", transfer_syntaxes())
def test_file_meta_equals_pynetdicoms(sop_class: str, syntax: str) -> None:
    for sop_instance in ("1.2.3", "1.2.34", generate_uid(), "1." + "2" * 62):
        ours = file_meta(sop_class, sop_instance, syntax)
        theirs = encode_file_meta(
            create_file_meta(sop_class_uid=sop_class, sop_instance_uid=sop_instance, transfer_syntax=syntax)
        )
        assert ours == theirs, (sop_class, sop_instance, syntax)
