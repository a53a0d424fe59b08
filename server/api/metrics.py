"""``/metrics``: Prometheus metrics (prometheus-client), in a registry of this app (not the library's
global one): request latency per route, next-sample latency, the inference queue, jobs by state,
leases held, DICOM instances received and the index backlog. Counts that live in the database are
read when scraped."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from server.api.common import services_of
from server.api.openapi import Reply, operation
from server.jobs import models as jm
from server.models import Image
from server.services import Services

bp = Blueprint("metrics", __name__)
KEY = "labelloop.metrics"


class StateCollector(Collector):
    """What the database and the services know, read at scrape time."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def collect(self) -> Iterator[Metric]:
        ctx = self.services
        now = time.time()
        with ctx.db.session() as s:
            jobs = s.execute(
                select(jm.Job.kind, jm.Job.status, func.count()).group_by(jm.Job.kind, jm.Job.status)
            )
            by_state = GaugeMetricFamily("labelloop_jobs", "Jobs by kind and state", labels=["kind", "state"])
            for kind, status, n in jobs:
                by_state.add_metric([kind, status], float(n))
            leases = s.scalar(select(func.count()).select_from(Image).where(Image.lease_expires > now)) or 0
        yield by_state
        yield GaugeMetricFamily(
            "labelloop_leases_held", "Studies leased to an annotator now", value=float(leases)
        )
        if "inference" in ctx.__dict__:
            inference = ctx.inference
            yield GaugeMetricFamily(
                "labelloop_inference_in_flight",
                "Inference requests running or waiting",
                value=inference.in_flight,
            )
            wait = CounterMetricFamily(
                "labelloop_inference_wait_seconds",
                "Time predictions waited for a worker, per lane (request: annotators; background: audits)",
                labels=["lane"],
            )
            runs = CounterMetricFamily(
                "labelloop_inference_runs",
                "Predictions run, per lane (request: annotators; background: audits)",
                labels=["lane"],
            )
            for lane, count in inference.runs.items():
                runs.add_metric([lane], float(count))
                wait.add_metric([lane], inference.wait_seconds[lane])
            yield wait
            yield runs
        dicom = ctx.dicom
        if dicom is not None:
            dicom_status: dict[str, Any] = dicom.status()
            yield GaugeMetricFamily(
                "labelloop_dicom_instances",
                "DICOM instances received (in catalogued series)",
                value=float(dicom_status["instances"]),
            )
            backlog = (dicom_status.get("listener") or {}).get("index_backlog", 0)
            yield GaugeMetricFamily(
                "labelloop_dicom_index_backlog",
                "Instances on disk not yet in the catalogue",
                value=float(backlog),
            )


class Metrics:
    def __init__(self, services: Services) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Histogram(
            "labelloop_request_seconds",
            "HTTP request latency by route",
            ["endpoint", "method", "status"],
            registry=self.registry,
        )
        self.next_sample = Histogram(
            "labelloop_next_sample_seconds",
            "Next-sample latency by strategy",
            ["strategy"],
            buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )
        self.registry.register(StateCollector(services))


def install(app: Flask) -> None:
    """Time every request (its route's name, not its URL: ids do not become label values)."""
    metrics = Metrics(services_of(app))
    app.extensions[KEY] = metrics

    @app.before_request
    def _start() -> None:
        g.metrics_t0 = time.perf_counter()

    @app.after_request
    def _observe(resp: Response) -> Response:
        t0 = g.get("metrics_t0")
        if t0 is not None:
            seconds = time.perf_counter() - t0
            endpoint = request.endpoint or "unmatched"
            metrics.requests.labels(endpoint, request.method, str(resp.status_code)).observe(seconds)
            if endpoint == "activelearning.next_sample" and request.view_args:
                metrics.next_sample.labels(str(request.view_args.get("strategy", ""))[:64]).observe(seconds)
        return resp


@bp.get("/metrics")
@operation(
    "Prometheus metrics (text exposition format)", ok=Reply("the metrics", {"text/plain": {"type": "string"}})
)
def metrics() -> Any:
    found = current_app.extensions[KEY]
    assert isinstance(found, Metrics)
    return Response(generate_latest(found.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})
