"""Final labels as DICOM SEG (highdicom) referencing their source series, sent by C-STORE or STOW-RS.

A ``final`` label saved for an image that came from DICOM queues a job row (``dicom_exports``); a
background worker builds the SEG from the label volume and the stored source instances, keeps a copy
under ``<data>/dicom/seg/`` and sends it. Jobs survive a restart; a failure is recorded as ERROR.
"""

from __future__ import annotations

import io
import logging
import os
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import highdicom as hd
import nibabel as nib
import numpy as np
from pydicom import Dataset, dcmwrite
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import SegmentationStorage  # type: ignore[attr-defined]
from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError

from server import __version__
from server.database import Database
from server.datastore import volumes
from server.datastore.ids import LABEL_EXTS, split_ext
from server.datastore.store import FINAL, Datastore
from server.dicom.convert import (
    LPS_TO_RAS,
    ConversionError,
    geometry,
    multiframe,
    multiframe_geometry,
    read_images,
    sorted_slices,
)
from server.dicom.incoming import IncomingStore
from server.dicom.models import DicomExport, DicomInstance, DicomSeries, ExportState
from server.dicom.worker import Worker
from server.errors import ConfigError, LabelloopError

log = logging.getLogger(__name__)

_NODE = re.compile(r"^(?P<aet>[^@]{1,16})@(?P<host>[^:@]+):(?P<port>[0-9]{1,5})$")
MAX_ATTEMPTS = 3  # an export interrupted this often (server restarts) ends ERROR
SKIPPED = "SKIPPED"  # an empty label: there is nothing to segment, and that is not an error


class ExportError(Exception):
    pass


@dataclass(frozen=True)
class Node:
    """A DICOM node to C-STORE to: ``AET@host:port``."""

    aet: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str, what: str = "--dicom-export") -> Node:
        m = _NODE.match(text.strip())
        if m is None or not 0 < int(m["port"]) < 65536:
            raise ConfigError(f"{what} {text!r}: expected AET@HOST:PORT, e.g. ORTHANC@127.0.0.1:4242")
        return cls(m["aet"].strip(), m["host"], int(m["port"]))

    def __str__(self) -> str:
        return f"{self.aet}@{self.host}:{self.port}"


def segment_names(
    label_info: Mapping[str, Any], app_labels: list[str] | dict[str, int] | None
) -> dict[int, str]:
    """Label value -> name: the saved label's ``label_info`` (Slicer), else the app's labels."""
    names: dict[int, str] = {}
    items = label_info.get("label_info")
    if isinstance(items, list):
        for item in items:
            if isinstance(item, dict) and "idx" in item and "name" in item:
                names[int(item["idx"])] = str(item["name"])
    given = label_info.get("label_names")
    if isinstance(given, dict):
        for name, idx in given.items():
            names.setdefault(int(idx), str(name))
    if isinstance(app_labels, dict):
        for name, idx in app_labels.items():
            names.setdefault(int(idx), str(name))
    elif isinstance(app_labels, list):
        for i, name in enumerate(app_labels, 1):
            names.setdefault(i, str(name))
    return names


def build_seg(
    label: np.ndarray,
    label_affine: np.ndarray,
    source_paths: list[Path],
    names: Mapping[int, str],
    series_number: int = 900,
) -> Dataset | None:
    """A SEG of ``label`` (the NIfTI array of a converted series) over its source instances.

    Returns None for an empty label. The label must share the image's voxel grid: the converter wrote
    the image as (column, row, slice) with slices sorted along the normal, and the same sort runs here.
    A multi-frame source gets the SEG as a highdicom ``Volume`` on its grid, which places each frame.
    """
    datasets = read_images(source_paths, pixels=False)
    multi = multiframe(datasets)
    if multi is None:
        slices = sorted_slices(datasets)
        sources = [s.ds for s in slices]
        expected = LPS_TO_RAS @ geometry(slices, [])
        grid = (int(slices[0].ds.Columns), int(slices[0].ds.Rows), len(slices))
    else:
        frame_grid = multiframe_geometry(multi[1])
        sources = [multi[1]]
        expected = LPS_TO_RAS @ frame_grid.affine_lps
        grid = frame_grid.shape
    data = np.asarray(label)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    data = _to_image_grid(data, label_affine, expected)
    if data.shape != grid:
        raise ExportError(f"label shape {list(data.shape)} does not match the series {list(grid)}")
    values = np.rint(data).astype(np.int64)
    present = sorted(int(v) for v in np.unique(values) if v > 0)
    if not present:
        return None
    if present[-1] > 65535:
        raise ExportError(f"label value {present[-1]} is out of range for a SEG segment number")
    frames = np.ascontiguousarray(values.transpose(2, 1, 0)).astype(np.uint16)  # (slice, row, column)
    # highdicom takes a label map whose values are segment numbers 1..n: renumber densely.
    lut = np.zeros(present[-1] + 1, dtype=np.uint16)
    for number, value in enumerate(present, 1):
        lut[value] = number
    frames = lut[frames]
    pixel_array: np.ndarray | hd.Volume = frames
    if multi is not None:
        stack = frames[::-1] if frame_grid.flipped else frames  # back to highdicom's slice order
        uid = str(multi[1].FrameOfReferenceUID)
        pixel_array = hd.Volume(np.ascontiguousarray(stack), frame_grid.hd_affine, "PATIENT", uid)
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=names.get(value, f"label {value}"),
            segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=codes.SCT.Tissue,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        )
        for number, value in enumerate(present, 1)
    ]
    return hd.seg.Segmentation(
        source_images=sources,
        pixel_array=pixel_array,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=generate_uid(),
        series_number=series_number,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="labelloop",
        manufacturer_model_name="labelloop",
        software_versions=__version__,
        device_serial_number="labelloop",
        series_description="labelloop final label",
    )


def _to_image_grid(data: np.ndarray, label_affine: np.ndarray, image_affine: np.ndarray) -> np.ndarray:
    """The label in the image's axis order: flips/permutations undone; otherwise voxels are taken as is
    (the datastore accepted the label because its shape matches the image's)."""
    if np.allclose(label_affine, image_affine, atol=1e-3):
        return data
    ornt = nib.orientations.ornt_transform(
        nib.orientations.io_orientation(label_affine), nib.orientations.io_orientation(image_affine)
    )
    if not np.array_equal(ornt, [[0, 1], [1, 1], [2, 1]]):
        return np.asarray(nib.orientations.apply_orientation(data, ornt))
    log.warning("label affine differs from the series geometry; exporting it voxel for voxel")
    return data


def send_cstore(ds: Dataset, node: Node, calling_aet: str, timeout: float = 30.0) -> None:
    ae = AE(ae_title=calling_aet)
    ae.add_requested_context(SegmentationStorage, str(ds.file_meta.TransferSyntaxUID))
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    assoc = ae.associate(node.host, node.port, ae_title=node.aet)
    if not assoc.is_established:
        raise ExportError(f"no association with {node}")
    try:
        status = assoc.send_c_store(ds)
    finally:
        assoc.release()
    code = int(status.get("Status", 0xFFFF)) if status else None
    if code is None:
        raise ExportError(f"{node} did not answer the C-STORE")
    if code not in (0x0000, 0xB000, 0xB007, 0xB006):
        raise ExportError(f"{node} answered C-STORE with status 0x{code:04X}")


def send_stow(ds: Dataset, url: str) -> None:
    from dicomweb_client import DICOMwebClient
    from requests import RequestException

    try:
        DICOMwebClient(url=url, timeout=60).store_instances([ds])
    except (RequestException, ValueError) as exc:
        raise ExportError(f"STOW-RS to {url} failed: {exc}") from exc


class SegExporter(Worker):
    name = "dicom-seg-export"

    def __init__(
        self,
        db: Database,
        datastore: Datastore,
        incoming: IncomingStore,
        *,
        calling_aet: str,
        node: Node | None,
        dicomweb_url: str,
        app_labels: Callable[[], list[str] | dict[str, int] | None],
    ) -> None:
        super().__init__(poll_seconds=5.0)
        self.db, self.datastore, self.incoming = db, datastore, incoming
        self.calling_aet, self.node, self.dicomweb_url = calling_aet, node, dicomweb_url
        self.app_labels = app_labels
        self.seg_dir = incoming.root / "seg"
        for name in ("highdicom", "dicomweb_client"):
            if logging.getLogger(name).level == logging.NOTSET:
                logging.getLogger(name).setLevel(logging.WARNING)  # a dozen INFO lines per SEG otherwise

    # ---- the hook (runs in the request that saved the label: only a row is written) -----------
    def on_label_saved(self, image_id: str, tag: str, info: dict[str, Any]) -> None:
        if tag != FINAL:
            return
        try:
            with self.db.session() as s:
                if s.get(DicomSeries, image_id) is None:
                    return
                now = time.time()
                s.add(
                    DicomExport(
                        image_id=image_id,
                        label_ts=now,
                        status=ExportState.SUBMITTED,
                        destinations="",
                        attempts=0,
                        created_ts=now,
                        updated_ts=now,
                    )
                )
        except SQLAlchemyError:
            log.exception("could not queue the DICOM SEG export of %s", image_id)
            return
        self.wake()

    # ---- the worker ------------------------------------------------------------------------------
    def on_start(self) -> None:
        """Exports a stopped server left RUNNING go again, at most :data:`MAX_ATTEMPTS` times in all."""
        with self.db.session() as s:
            running = DicomExport.status == ExportState.RUNNING
            s.execute(
                update(DicomExport)
                .where(running, DicomExport.attempts < MAX_ATTEMPTS)
                .values(status=ExportState.SUBMITTED)
            )
            s.execute(
                update(DicomExport)
                .where(running)
                .values(
                    status=ExportState.ERROR,
                    error=f"interrupted {MAX_ATTEMPTS} times: not retried",
                    updated_ts=time.time(),
                )
            )

    def step(self) -> bool:
        job = self._claim()
        if job is None:
            return False
        try:
            self.run_job(job)
        except Exception as exc:  # whatever failed, the row ends ERROR with the reason, never RUNNING
            log.exception("DICOM SEG export %d failed", job)
            self._finish(job, ExportState.ERROR, error=f"the export failed: {type(exc).__name__}: {exc}")
        return True

    def _claim(self) -> int | None:
        with self.db.session() as s:
            job = s.scalar(
                select(DicomExport.id)
                .where(DicomExport.status == ExportState.SUBMITTED)
                .order_by(DicomExport.id)
                .limit(1)
            )
            if job is None:
                return None
            claimed = s.execute(
                update(DicomExport)
                .where(DicomExport.id == job, DicomExport.status == ExportState.SUBMITTED)
                .values(status=ExportState.RUNNING, attempts=DicomExport.attempts + 1, updated_ts=time.time())
                .execution_options(synchronize_session=False)
            )
            return job if claimed.rowcount == 1 else None  # type: ignore[attr-defined]

    def run_job(self, job_id: int) -> str:
        with self.db.sessions() as s:
            job = s.get(DicomExport, job_id)
            if job is None:
                return ExportState.ERROR
            image_id = job.image_id
            series = s.get(DicomSeries, image_id)
            files = list(s.scalars(select(DicomInstance.file).where(DicomInstance.series_uid == image_id)))
        if series is None or not files:
            return self._finish(job_id, ExportState.ERROR, error=f"no DICOM instances for {image_id}")
        try:
            label = self.datastore.get_label(image_id, FINAL)
            label_info = self.datastore.label_info(image_id, FINAL)
            parts = split_ext(label.name, LABEL_EXTS)
            # NIfTI and NRRD alike (Slicer's NRRD setting, the Reviewer): the datastore's one reader.
            data, affine = volumes.load_array(label.path, parts[1] if parts else ".nii.gz")
            names = segment_names(label_info, self.app_labels())
            seg = build_seg(data, affine, [self.incoming.path_of(f) for f in files], names)
        except (ExportError, ConversionError, LabelloopError, OSError, ValueError) as exc:
            return self._finish(job_id, ExportState.ERROR, error=f"building the SEG failed: {exc}")
        if seg is None:
            return self._finish(job_id, SKIPPED, error="empty label: no segment to export")
        relative = f"seg/{image_id}/{seg.SOPInstanceUID}.dcm"
        path = self.incoming.path_of(relative)
        _save(seg, path)
        sent, errors = self._send(seg, series.source)
        log.info(
            "SEG %s of %s: sent to %s; errors %s", seg.SOPInstanceUID, image_id, sent or "-", errors or "-"
        )
        return self._finish(
            job_id,
            ExportState.ERROR if errors else ExportState.DONE,
            error="; ".join(errors) or None,
            destinations=",".join(sent),
            seg=(str(seg.SeriesInstanceUID), str(seg.SOPInstanceUID), relative),
        )

    def _send(self, seg: Dataset, source: str) -> tuple[list[str], list[str]]:
        """C-STORE to the export node when configured; STOW-RS back to the DICOMweb source it came from."""
        sent: list[str] = []
        errors: list[str] = []
        if self.node is not None:
            try:
                send_cstore(seg, self.node, self.calling_aet)
                sent.append(f"cstore:{self.node}")
            except ExportError as exc:
                errors.append(str(exc))
        if source == "dicomweb" and self.dicomweb_url:
            try:
                send_stow(seg, self.dicomweb_url)
                sent.append(f"stow:{self.dicomweb_url}")
            except ExportError as exc:
                errors.append(str(exc))
        return sent, errors

    def _finish(
        self,
        job_id: int,
        status: str,
        *,
        error: str | None = None,
        destinations: str = "",
        seg: tuple[str, str, str] | None = None,
    ) -> str:
        values: dict[str, Any] = {
            "status": status,
            "error": error,
            "destinations": destinations,
            "updated_ts": time.time(),
        }
        if seg is not None:
            values.update(seg_series_uid=seg[0], seg_sop_uid=seg[1], file=seg[2])
        with self.db.session() as s:
            s.execute(update(DicomExport).where(DicomExport.id == job_id).values(**values))
        if error:
            log.warning("DICOM SEG export %d: %s", job_id, error)
        return status


def _save(ds: Dataset, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    dcmwrite(buf, ds, enforce_file_format=True)
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex}.dcm")
    with open(tmp, "wb") as f:
        f.write(buf.getvalue())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
