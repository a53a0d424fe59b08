"""The inference service (``Services.inference``): a bounded queue in front of a thread pool.

- ``infer`` resolves the input (datastore image, session, uploaded file), checks it, queues the
  task and waits for it. At most ``workers`` predictions run at once and ``queue`` more wait;
  past that the request is refused at once with 503, so inference never takes all of waitress's
  request threads and ``/info/`` or next-sample keep answering.
- ``background=True`` (the campaign's audits) runs on a lane of its own, one prediction at a time
  on a thread at the lowest OS priority (Linux; torch's worker threads inherit it): it never takes
  an annotator's slot, and annotators' requests get the cores first.
- Weights come from the registry on every request; built networks are cached per
  (model, version, device), so a newly published version is used by the next request.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from server.appspec import AppSpec
from server.datastore import clicks, files, intake
from server.datastore.ids import IMAGE_EXTS, LABEL_EXTS, check_id, check_tag, split_ext
from server.datastore.store import ORIGINAL, Datastore
from server.datastore.volumes import VolumeHeader, bin_to_nifti, read_header
from server.errors import BadRequest, NotFound, Unavailable, Unprocessable
from server.inference.request import OUTPUTS, InferRequest, InferResult, InferSource, param_flag
from server.inference.task import InferTask
from server.inference.weights import CHECKPOINT_ERRORS, NetworkCache, load_networks, read_state_dicts
from server.registry import ModelRegistry, check_model_name
from server.registry_models import ModelVersion
from server.sessions import SessionStore

log = logging.getLogger(__name__)

INFER_TIMEOUT_SECONDS = 600.0  # as MONAI Label's MONAI_LABEL_INFER_TIMEOUT
LANES = ("request", "background")  # /metrics' ``lane`` label: annotators' requests, background audits
BACKGROUND_NICE = 19  # the background lane's OS priority: it runs when nothing else wants the core


def lower_thread_priority(nice: int = BACKGROUND_NICE) -> None:
    """Lower the calling thread's scheduling priority. On Linux nice is per thread and inherited by
    the threads it starts (torch's OpenMP workers are started by the thread that first computes), so
    call it before the thread's first prediction. Elsewhere it would lower the whole process: no-op."""
    if not sys.platform.startswith("linux"):
        return
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except OSError as exc:  # a sandbox that forbids it: the lane still works, at normal priority
        log.warning("could not lower the background inference thread's priority: %s", exc)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class InferenceService:
    def __init__(
        self,
        spec: AppSpec,
        registry: ModelRegistry,
        datastore: Datastore,
        sessions: SessionStore,
        workroot: Path,
        workers: int = 1,
        queue: int = 4,
        device: torch.device | None = None,
    ) -> None:
        self.spec, self.registry, self.datastore, self.sessions = spec, registry, datastore, sessions
        self.workroot = workroot
        shutil.rmtree(workroot, ignore_errors=True)  # leftovers of a previous run
        workroot.mkdir(parents=True, exist_ok=True)
        self.workers, self.queue = max(1, workers), max(0, queue)
        self.device = device or default_device()
        self._slots = threading.BoundedSemaphore(self.workers + self.queue)
        # For /metrics: requests in (running or waiting), and per lane (annotators' requests, the
        # campaign's background audits) the predictions run and the total time they waited to start.
        self.in_flight = 0
        self.runs = dict.fromkeys(LANES, 0)
        self.wait_seconds = dict.fromkeys(LANES, 0.0)
        self._count_lock = threading.Lock()
        self._pool_lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._background: ThreadPoolExecutor | None = None
        self.cache = NetworkCache()
        for name, model in spec.models.items():
            if isinstance(model.task, InferTask):
                model.task.bind(functools.partial(self.weights_info, name))

    # ---- models --------------------------------------------------------------------------------
    def task(self, model: str) -> InferTask:
        spec = self.spec.models.get(model)
        if spec is None:
            hosted = ", ".join(sorted(self.spec.models)) or "none"
            raise NotFound(f"Model NOT Found: {model!r} (this app hosts: {hosted})")
        if not isinstance(spec.task, InferTask):
            raise BadRequest(f"model {model!r} declares no inference task")
        return spec.task

    def weights_info(self, model: str) -> dict[str, Any]:
        """``version`` 0 with ``weights`` "initialised (seed 0)" until a version is published."""
        current = self.registry.current(model)
        if current is None:
            return {"version": 0, "weights": self.task(model).initial_weights()}
        return {
            "version": current.version,
            "weights": Path(current.file).name,
            "checksum": current.checksum,
            "published_ts": int(current.created_ts),
            "source": current.source,
        }

    def networks(self, model: str, task: InferTask, device: torch.device) -> tuple[int, list[nn.Module]]:
        """The current version's networks (built once per version and device)."""
        current = self.registry.current(model)
        version = current.version if current is not None else 0
        nets = self.cache.get(
            (model, version, str(device)), lambda: self._build(model, task, current, device)
        )
        return version, nets

    def _build(
        self, model: str, task: InferTask, current: ModelVersion | None, device: torch.device
    ) -> list[nn.Module]:
        if current is None:
            log.info("%s: no published weights, using %s", model, task.initial_weights())
            return [task.initial_network().to(device).eval()]
        path = self.registry.path(current)
        try:
            nets = load_networks(task.network, read_state_dicts(path), device)
        except CHECKPOINT_ERRORS as exc:
            raise Unavailable(
                f"weights v{current.version} of {model!r} do not load ({path.name}): {exc}"
            ) from exc
        log.info("%s: loaded v%d (%d network(s)) on %s", model, current.version, len(nets), device)
        return nets

    # ---- /model ------------------------------------------------------------------------------
    def publish(
        self, model: str, checkpoint: Path, metrics: dict[str, Any] | None = None, source: str = "upload"
    ) -> ModelVersion:
        """Check the checkpoint loads into the model's network, then publish it as the next version."""
        task = self.task(model)
        try:
            load_networks(task.network, read_state_dicts(checkpoint), torch.device("cpu"))
        except CHECKPOINT_ERRORS as exc:
            raise BadRequest(f"checkpoint does not load into model {model!r}: {str(exc)[:500]}") from exc
        return self.registry.publish(model, checkpoint, metrics, source)

    def model_info(self, model: str) -> dict[str, Any]:
        current = self._published(model)
        info: dict[str, Any] = {
            "checksum": current.checksum,
            "modified_time": int(os.path.getmtime(self.registry.path(current))),
            "version": current.version,
        }
        if current.metrics:
            info["train_stats"] = current.metrics
        return info

    def weights_file(self, model: str) -> tuple[Path, str]:
        current = self._published(model)
        path = self.registry.path(current)
        if not path.is_file():
            raise NotFound(f"weights file of {model!r} v{current.version} is missing")
        return path, f"{model}_v{current.version}.pt"

    def delete(self, model: str) -> ModelVersion:
        self.task(model)
        return self.registry.delete(model)

    def _published(self, model: str) -> ModelVersion:
        check_model_name(model)
        self.task(model)
        current = self.registry.current(model)
        if current is None:
            raise NotFound(
                f"Model NOT Found: {model!r} has no published weights (it runs on its seed initialisation)"
            )
        return current

    # ---- /infer --------------------------------------------------------------------------------
    @contextmanager
    def workspace(self) -> Iterator[Path]:
        """A private folder for one request's uploads and results, removed afterwards."""
        folder = self.workroot / uuid.uuid4().hex
        folder.mkdir(parents=True)
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def infer(
        self,
        model: str,
        source: InferSource,
        params: dict[str, Any],
        output: str,
        workdir: Path,
        author: str | None = None,
        background: bool = False,
    ) -> InferResult:
        """Run ``model`` on the source; ``author`` (who asked) is recorded with an interactive model's
        clicks on a datastore study. ``background``: on the low-priority lane, outside the queue."""
        task = self.task(model)
        output = check_output(output)
        image, ext, image_id = self._resolve(source)
        if image_id is None:  # an upload or a session: through the intake, before it takes a queue slot
            intake.inspect(image, ext, limits=self.datastore.limits)
        header = read_header(image, ext)
        task.check_params(params, ext)
        label = self._label(source, header, workdir)
        request = InferRequest(model, image, ext, workdir, params, output, label, image_id)
        device = self._device(params)
        result = (
            self._run_background(task, request, device) if background else self.submit(task, request, device)
        )
        if image_id is not None and result.file is not None and param_flag(params, "save_label"):
            self._save_label(image_id, model, result, params)
        if image_id is not None and result.clicks:
            version = int(result.params.get("version", 0))
            clicks.record(
                self.datastore.db, image_id, model, version, author, result.clicks, result.clicked_label
            )
        return result

    def submit(
        self, task: InferTask, request: InferRequest, device: torch.device | None = None
    ) -> InferResult:
        """Queue ``task`` and wait for it; 503 at once when ``workers + queue`` requests are in."""
        if not self._slots.acquire(blocking=False):
            raise Unavailable(
                f"inference is busy: {self.workers} running and {self.queue} waiting (the queue's bound); "
                "retry in a moment"
            )
        with self._count_lock:
            self.in_flight += 1
        try:
            future = self._executor().submit(
                self._execute, task, request, device or self.device, time.perf_counter(), "request"
            )
        except BaseException:
            self._release(None)
            raise
        future.add_done_callback(self._release)
        return _wait(future, request)

    def _run_background(self, task: InferTask, request: InferRequest, device: torch.device) -> InferResult:
        with self._pool_lock:
            if self._background is None:
                self._background = ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix="infer-background", initializer=lower_thread_priority
                )
            lane = self._background
        queued = time.perf_counter()
        return _wait(lane.submit(self._execute, task, request, device, queued, "background"), request)

    def _release(self, _future: Future[InferResult] | None) -> None:
        with self._count_lock:
            self.in_flight -= 1
        self._slots.release()

    def _execute(
        self, task: InferTask, request: InferRequest, device: torch.device, queued: float, lane: str
    ) -> InferResult:
        with self._count_lock:
            self.runs[lane] += 1
            self.wait_seconds[lane] += time.perf_counter() - queued
        version, nets = self.networks(request.model, task, device)
        result = task.run(request, nets, device)
        result.params["version"] = version
        return result

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="infer")
            return self._pool

    def close(self) -> None:
        with self._pool_lock:
            for pool in (self._pool, self._background):
                if pool is not None:
                    pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._background = None

    def _device(self, params: dict[str, Any]) -> torch.device:
        """The ``device`` param: "cpu", or "cuda"/"cuda:N" when CUDA is there; otherwise the default."""
        raw = params.get("device")
        name = raw[0] if isinstance(raw, list) and raw else raw
        if isinstance(name, str):
            name = name.strip().lower()
            if name == "cpu":
                return torch.device("cpu")
            if name.startswith("cuda") and torch.cuda.is_available():
                try:
                    return torch.device(name)
                except RuntimeError:
                    return self.device
        return self.device

    def _resolve(self, source: InferSource) -> tuple[Path, str, str | None]:
        """(path, extension, datastore id or None) of the input volume."""
        if source.session_id:
            path = self.sessions.image_path(source.session_id)
            parts = split_ext(path.name, IMAGE_EXTS)
            if parts is None:
                raise BadRequest(f"session file {path.name!r}: expected one of {', '.join(IMAGE_EXTS)}")
            return path, parts[1], None
        if source.file is not None:
            return source.file, source.file_ext, None
        if source.image_id:
            stored = self.datastore.get_image(check_id(source.image_id))
            parts = split_ext(stored.name, IMAGE_EXTS)
            if parts is None:
                raise BadRequest(f"image {source.image_id!r} has an unsupported type ({stored.name})")
            return stored.path, parts[1], source.image_id
        raise BadRequest("Neither Image nor File not Session ID input is provided")

    def _label(self, source: InferSource, header: VolumeHeader, workdir: Path) -> Path | None:
        if source.label is None:
            return None
        if source.label_ext == ".bin":
            dest = workdir / "label-input.nii.gz"
            bin_to_nifti(source.label.read_bytes(), header.shape, header.affine, dest)
            return dest
        got = intake.inspect(
            source.label,
            source.label_ext,
            label=True,
            label_max=self.datastore.label_max,
            limits=self.datastore.limits,
        ).shape
        if tuple(got[:3]) != tuple(header.shape[:3]):
            raise BadRequest(f"label shape {list(got)} does not match image shape {list(header.shape)}")
        return source.label

    def _save_label(self, image_id: str, model: str, result: InferResult, params: dict[str, Any]) -> None:
        assert result.file is not None
        tag = check_tag(params.get("label_tag") or ORIGINAL)
        parts = split_ext(result.file.name, LABEL_EXTS)
        if parts is None:
            raise BadRequest(f"result {result.file.name!r} cannot be stored as a label")
        tmp = self.datastore.temp_for_label(tag, parts[1])
        files.copy_file(result.file, tmp)
        current = self.registry.current(model)
        info = {"model": model, "model_version": current.version if current else 0, "params": result.params}
        self.datastore.save_label(image_id, tag, tmp, parts[1], info)


def check_output(output: str | None) -> str:
    value = (output or "all").lower()
    if value == "dicom_seg":
        raise BadRequest("output=dicom_seg needs a DICOMweb datastore; this server's datastore is local")
    if value not in OUTPUTS:
        raise Unprocessable(f"output must be one of {', '.join(OUTPUTS)}; got {output!r}")
    return value


def _wait(future: Future[InferResult], request: InferRequest) -> InferResult:
    try:
        return future.result(timeout=INFER_TIMEOUT_SECONDS)
    except FutureTimeout as exc:
        raise Unavailable(
            f"inference of {request.model!r} took longer than {INFER_TIMEOUT_SECONDS:.0f}s"
        ) from exc
