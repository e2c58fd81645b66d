"""Operator metrics: ``GET /metrics`` (and ``/api/metrics``) in the Prometheus text format.

What an operator of a team studio watches: labeling activity (votes, labelers active), generation (requests
waiting, rows decoding, tokens generated and the throughput while busy), training jobs by state, the chain
backlog (contributions waiting for a batch, batches waiting to be anchored) and REST request latencies.
Counters only ever grow within one server process (Prometheus' ``rate()`` turns them into per-second figures);
gauges are read when scraped. Admins only in team mode (scrape with an admin's personal API token).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the studio calls render(self, ...): a type only, no import at run time
    from core.studio import Studio

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
ACTIVE_WINDOW_MINUTES = 15
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Latencies:
    """A histogram of request durations per (route template, method, status code); thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._series: dict[tuple[str, str, str], list[float]] = {}  # bucket counts..., sum, count

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, str(status))
        with self._lock:
            series = self._series.setdefault(key, [0.0] * (len(LATENCY_BUCKETS) + 2))
            for i, bound in enumerate(LATENCY_BUCKETS):
                if seconds <= bound:
                    series[i] += 1
            series[-2] += seconds
            series[-1] += 1

    def lines(self) -> list[str]:
        name = "studio_http_request_duration_seconds"
        out = [
            f"# HELP {name} REST API request durations, by route template, method and status code.",
            f"# TYPE {name} histogram",
        ]
        with self._lock:
            items = sorted(self._series.items())
        for (route, method, status), series in items:
            labels = f'route="{_escape(route)}",method="{method}",code="{status}"'
            for bound, count in zip(LATENCY_BUCKETS, series):
                out.append(f'{name}_bucket{{{labels},le="{bound:g}"}} {count:g}')
            out.append(f'{name}_bucket{{{labels},le="+Inf"}} {series[-1]:g}')
            out.append(f"{name}_sum{{{labels}}} {series[-2]:.6f}")
            out.append(f"{name}_count{{{labels}}} {series[-1]:g}")
        return out


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _metric(name: str, kind: str, help_text: str, samples: list[tuple[dict[str, str], float]]) -> list[str]:
    out = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    for labels, value in samples:
        label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
        out.append(f"{name}{{{label_text}}} {value:g}" if label_text else f"{name} {value:g}")
    return out


def labeling_figures(db: Any) -> dict[str, int]:
    """Votes kept (not undone), votes in the last window, and labelers who voted in it (imports included)."""
    row = db.query(
        "SELECT count(*) FILTER (WHERE retracted_at IS NULL) AS votes,"
        f" count(*) FILTER (WHERE created_at > now() - INTERVAL {ACTIVE_WINDOW_MINUTES} MINUTE) AS recent,"
        f" count(DISTINCT labeler_id) FILTER (WHERE created_at > now() - INTERVAL {ACTIVE_WINDOW_MINUTES} MINUTE)"
        " AS active FROM preferences"
    )[0]
    return {k: int(v or 0) for k, v in row.items()}


def job_states(db: Any) -> dict[str, int]:
    return {r["status"]: int(r["n"]) for r in db.query("SELECT status, count(*) AS n FROM jobs GROUP BY status")}


def chain_backlog(db: Any) -> dict[str, int]:
    """Contributions not in a batch yet, and batches not anchored yet."""
    row = db.query(
        "SELECT (SELECT count(*) FROM contributions WHERE batch_id IS NULL) AS contributions,"
        " (SELECT count(*) FROM chain_batches WHERE status <> 'anchored') AS batches"
    )[0]
    return {k: int(v or 0) for k, v in row.items()}


def render(studio: Studio, latencies: Latencies) -> str:
    """Every metric of ``studio`` as one Prometheus text exposition."""
    from core.serving.scheduler import scheduler_for

    lines: list[str] = []
    labeling = labeling_figures(studio.db)
    lines += _metric(
        "studio_votes", "gauge", "Preference votes stored (undone ones not counted).", [({}, labeling["votes"])]
    )
    lines += _metric(
        "studio_votes_recent",
        "gauge",
        f"Votes in the last {ACTIVE_WINDOW_MINUTES} minutes.",
        [({}, labeling["recent"])],
    )
    lines += _metric(
        "studio_labelers_active",
        "gauge",
        f"Labelers who voted in the last {ACTIVE_WINDOW_MINUTES} minutes.",
        [({}, labeling["active"])],
    )

    loaded = studio.loaded_model()
    if loaded is not None:
        scheduler = scheduler_for(loaded)
        load, stats = scheduler.load(), scheduler.stats
        lines += _metric(
            "studio_generation_waiting",
            "gauge",
            "Generation requests waiting for room in the batch.",
            [({}, load["waiting"])],
        )
        lines += _metric(
            "studio_generation_running_rows", "gauge", "Rows (answers) decoding now.", [({}, load["running_rows"])]
        )
        lines += _metric(
            "studio_generation_requests_total", "counter", "Generation requests accepted.", [({}, stats.requests)]
        )
        lines += _metric(
            "studio_generation_refused_total",
            "counter",
            "Requests refused because the line was full.",
            [({}, stats.refused)],
        )
        lines += _metric(
            "studio_generation_tokens_total",
            "counter",
            "Tokens generated (every row of every step).",
            [({}, stats.tokens)],
        )
        lines += _metric(
            "studio_generation_busy_seconds_total",
            "counter",
            "Seconds the scheduler spent decoding.",
            [({}, round(stats.busy_s, 3))],
        )
        lines += _metric(
            "studio_generation_tokens_per_second",
            "gauge",
            "Tokens per second while decoding (tokens / busy seconds since start).",
            [({}, round(stats.tokens / stats.busy_s, 2) if stats.busy_s else 0.0)],
        )
    backup = studio.backup
    if backup is not None:
        since = backup.seconds_since_last_good()
        lines += _metric(
            "studio_backup_seconds_since_last_good",
            "gauge",
            "Seconds since the last good backup (since the studio started, if none yet).",
            [({}, round(since if since is not None else backup.seconds_running(), 1))],
        )
        lines += _metric(
            "studio_backup_failures",
            "gauge",
            "Failed backup tries since the last good one.",
            [({}, backup.status()["failures"])],
        )
    states = job_states(studio.db)
    lines += _metric(
        "studio_jobs",
        "gauge",
        "Training jobs by state.",
        [
            ({"state": s}, states.get(s, 0))
            for s in sorted(
                {"queued", "running", "paused", "succeeded", "failed", "cancelled", "interrupted"} | set(states)
            )
        ],
    )
    backlog = chain_backlog(studio.db)
    lines += _metric(
        "studio_chain_backlog_contributions",
        "gauge",
        "Contributions not yet in a batch.",
        [({}, backlog["contributions"])],
    )
    lines += _metric(
        "studio_chain_backlog_batches", "gauge", "Batches not yet anchored on the chain.", [({}, backlog["batches"])]
    )
    lines += latencies.lines()
    return "\n".join(lines) + "\n"
