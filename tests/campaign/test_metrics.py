"""``/metrics`` parses with the Prometheus text parser and moves when requests are made."""

from __future__ import annotations

import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Server


def scrape(url: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    text = requests.get(f"{url}/metrics", timeout=10).text
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def test_metrics_parse_and_move(server: Server) -> None:
    u = server.url
    before = scrape(u)
    assert before["labelloop_leases_held"][()] == 0
    for i in range(3):
        assert (
            requests.post(f"{u}/activelearning/random", json={"client_id": f"reader-{i}"}).status_code == 200
        )
    requests.get(f"{u}/datastore/image", params={"image": "nosuch"}, timeout=10)
    after = scrape(u)
    assert after["labelloop_leases_held"][()] == 3
    count = after["labelloop_next_sample_seconds_count"][(("strategy", "random"),)]
    assert count == 3
    key = (("endpoint", "datastore.get_image"), ("method", "GET"), ("status", "404"))
    assert after["labelloop_request_seconds_count"][key] >= 1
    assert "labelloop_inference_in_flight" in after
    lanes = {dict(k)["lane"] for k in after["labelloop_inference_runs_total"]}
    assert lanes == {"request", "background"}  # annotators' predictions counted apart from audits
    assert requests.get(f"{u}/metrics", timeout=10).headers["X-Request-ID"]
