"""Operator metrics: /metrics on a real server, read with Prometheus' own parser (who may read it: test_roles)."""

from __future__ import annotations

import httpx
from gradio_client import Client
from prometheus_client.parser import text_string_to_metric_families

from app.label_sections import SAME_VERSION
from tests.support.servers import Server

VOTE = {"answer_a": "A clear answer.", "answer_b": "meh", "outcome": "a"}


def scrape(url: str, **kwargs) -> dict[str, list]:
    reply = httpx.get(url + "/metrics", timeout=10, **kwargs)
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {family.name: family.samples for family in text_string_to_metric_families(reply.text)}


def value(families: dict[str, list], name: str, **labels) -> float:
    return next(s.value for s in families[name] if all(s.labels.get(k) == v for k, v in labels.items()))


def test_metrics_count_votes_generation_jobs_backlog_and_latencies(shared_server: Server):
    url = shared_server.url
    before = scrape(url)
    for i in range(3):
        answer = httpx.post(url + "/api/votes", json={**VOTE, "prompt": f"metrics vote {i}"}, timeout=10)
        assert answer.status_code == 201
    client = Client(url + "/label/", verbose=False)
    client.submit("Hello metrics", "base", SAME_VERSION, 0.7, 0.9, 6, api_name="/send").result()
    client.close()

    after = scrape(url)
    assert value(after, "studio_votes") == value(before, "studio_votes") + 3
    assert value(after, "studio_labelers_active") >= 1
    assert value(after, "studio_generation_tokens") >= 2, "the pair's tokens are counted"  # counter: _total dropped
    assert value(after, "studio_generation_waiting") == 0
    assert value(after, "studio_jobs", state="running") == 0
    assert value(after, "studio_chain_backlog_contributions") >= 0
    durations = after["studio_http_request_duration_seconds"]
    votes = [s for s in durations if s.labels.get("route") == "/votes" and s.name.endswith("_count")]
    assert votes and votes[0].value >= 3 and votes[0].labels["code"] == "201"
    assert httpx.get(url + "/api/metrics", timeout=10).text.startswith("# HELP"), "also under /api"
