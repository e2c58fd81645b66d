"""The chain behind a version, from the labels to the Hub: what a reader of its card (or a script) needs to trust it.

labels snapshot (data hash, rows, how many people labeled) -> job (id, algorithm, parent, when) -> the evidence
about the version (the "what changed" verdict, people's blind check, safety, benchmarks) -> its release gate ->
every push of it to the Hub (and any gate override). Counts only, never names or text: a card is public.
"""

from __future__ import annotations

import json
from typing import Any

from core.compare.arena import blind_check
from core.compare.gate import evaluate_gate, gate_overrides
from core.compare.report import latest_report
from core.compare.safety import latest_safety, safety_change
from core.errors import StudioError, ValidationError
from core.serving.policies import BASE_POLICY, Version, default_against, live_policy
from storage.db import Database


def _labels(db: Database, policy: Version, job: dict[str, Any] | None) -> dict[str, Any]:
    """The frozen training data: its hash and rows, and how many people (and AI judges) had labeled by then."""
    config = json.loads(job["config"]) if job and job["config"] else {}
    filters = config.get("filters") or {}
    counts = {"people": 0, "ai_judges": 0}
    if job is not None:
        rows = db.query(
            "SELECT coalesce(u.kind, 'human') AS kind, count(DISTINCT p.labeler_id) AS n FROM preferences p"
            " LEFT JOIN users u ON u.id = p.labeler_id WHERE p.retracted_at IS NULL AND p.created_at <= ?"
            " AND (? IS NULL OR list_contains(?, u.name)) GROUP BY ALL",
            [job["created_at"], filters.get("labelers"), filters.get("labelers")],
        )
        for row in rows:
            counts["ai_judges" if row["kind"] == "ai" else "people"] += row["n"]
    return {
        "data_hash": policy["data_hash"],
        "examples": config.get("examples"),
        "held_out": config.get("eval_examples"),
        "labelers": counts,
        "filters": filters,
    }


def lineage(db: Database, version: str) -> dict[str, Any]:
    """Every link of ``version``'s chain as plain data (REST ``GET /api/policies/{name}/lineage``, model cards)."""
    policy = live_policy(db, version)
    policy["data_hash"] = db.scalar("SELECT data_hash FROM policies WHERE id = ?", [policy["id"]])
    if version == BASE_POLICY:
        raise ValidationError("The base model has no lineage", hint="ask for a trained version (v1, v2, ...)")
    jobs = (
        db.query(
            "SELECT id, algorithm, status, config, created_at, finished_at FROM jobs WHERE id = ?", [policy["job_id"]]
        )
        if policy["job_id"] is not None
        else []
    )
    job = jobs[0] if jobs else None
    try:
        against = default_against(db, version)
    except StudioError:  # a full fine-tune: compared with nothing on the shared model
        against = policy["parent"] or BASE_POLICY
    try:
        report = latest_report(db, version, against, thorough_first=True)
    except StudioError:
        report = None
    safety = latest_safety(db, version)
    change = safety_change(db, version, against)
    pushes = db.query(
        "SELECT h.repo_id, h.repo_type, h.commit_url, h.pushed_at, e.kind FROM hub_pushes h"
        " JOIN exports e ON e.id = h.export_id WHERE e.policy_id = ? AND e.kind <> 'dataset' ORDER BY h.id",
        [policy["id"]],
    )
    return {
        "version": version,
        "parent": against,
        "labels": _labels(db, policy, job),
        "job": None
        if job is None
        else {
            "id": job["id"],
            "algorithm": job["algorithm"],
            "status": job["status"],
            "created_at": job["created_at"].isoformat(),
            "finished_at": job["finished_at"].isoformat() if job["finished_at"] else None,
        },
        "report": None if report is None else {"verdict": report["verdict"], "summary": report["summary"]},
        "blind_check": blind_check(db, version, against),
        "safety": None
        if safety is None
        else {
            "unsafe_rate": safety["unsafe_rate"],
            "over_refusal_rate": safety["over_refusal_rate"],
            "judged_by": safety["judged_by"],
            "less_safe_than_parent": bool(change and change["worse"]),
        },
        "benchmarks": None,
        "gate": evaluate_gate(db, version, against).to_dict(),
        "gate_overrides": [{k: o[k] for k in ("reason", "by", "at", "target")} for o in gate_overrides(db, version)],
        "pushes": [
            {
                "repo_id": p["repo_id"],
                "kind": p["kind"],
                "commit_url": p["commit_url"],
                "pushed_at": p["pushed_at"].isoformat(),
            }
            for p in pushes
        ],
    }


def card_lines(chain: dict[str, Any]) -> list[str]:
    """The model card's "Lineage" section."""
    labels, job = chain["labels"], chain["job"]
    people, ai = labels["labelers"]["people"], labels["labelers"]["ai_judges"]
    lines = [
        "## Lineage",
        "",
        f"1. **Labels**: {labels['examples'] if labels['examples'] is not None else 'n/a'} training rows "
        f"({labels['held_out'] or 0} held out), frozen as data hash `{(labels['data_hash'] or 'n/a')[:16]}`, "
        f"from {people} {'person' if people == 1 else 'people'}" + (f" and {ai} AI judge(s)" if ai else "") + ".",
        "2. **Job**: "
        + (
            f"#{job['id']} ({job['algorithm']}, {job['status']}, finished "
            f"{(job['finished_at'] or 'n/a')[:16]}) from `{chain['parent']}`."
            if job
            else "none recorded (an imported or registered version)."
        ),
    ]
    report = chain["report"]
    lines.append("3. **What changed**: " + (report["summary"] if report else "no report yet."))
    blind = chain["blind_check"]
    lines.append(
        "4. **Blind check by people**: "
        + (
            f"{blind['wins']} wins, {blind['losses']} losses, {blind['ties']} ties against `{chain['parent']}`."
            if blind
            else "no blind votes yet."
        )
    )
    safety = chain["safety"]
    lines.append(
        "5. **Safety**: "
        + (
            f"unsafe answers {_pct(safety['unsafe_rate'])}, over-refusals {_pct(safety['over_refusal_rate'])} "
            f"(judged by {safety['judged_by']})"
            + ("; less safe than its parent" if safety["less_safe_than_parent"] else "")
            + "."
            if safety
            else "not evaluated yet."
        )
    )
    lines.append("6. **Benchmarks**: not measured per version yet.")
    gate = chain["gate"]
    lines.append(
        "7. **Release gate**: "
        + (
            "passed"
            if gate["passed"]
            else "failed (" + ", ".join(c["name"] for c in gate["checks"] if c["status"] == "fail") + ")"
        )
        + " when this card was written; the Hub copy of this card shows the gate at push time."
    )
    return lines + [""]


def _pct(rate: float | None) -> str:
    return "n/a" if rate is None else f"{rate:.0%}"
