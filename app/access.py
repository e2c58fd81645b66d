"""Who may see and do what on every surface: the one rule table every UI asks (roles: core.labeling.roles).

Each resource (a REST route, a console page, a section of a page, an action of the labeling app) has one
:class:`~core.labeling.roles.Rule`. Surfaces call :func:`require` (raise unless allowed, return the scope) or
:func:`scope` (decide what to show). A resource without a rule is refused (fail closed), and
``tests/labeling/test_access.py`` fails when a route, console page or labeling-app action has no rule here, so a new
surface cannot ship without a decision.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.labeling.roles import ADMIN, ALL, ANONYMOUS, LABELER, NONE, OWN, SUMMARY, Rule, grant, role_of, scope_of

__all__ = [
    "ADMIN",
    "ALL",
    "ANONYMOUS",
    "LABELER",
    "NONE",
    "OWN",
    "SUMMARY",
    "API",
    "CONSOLE",
    "LABEL_APP",
    "RULES",
    "Rule",
    "scope",
    "require",
    "can",
    "owner_filter",
    "health_view",
    "job_view",
    "policy_view",
]


def _admin(why: str) -> Rule:
    return Rule(NONE, NONE, ALL, why)


def _own(why: str) -> Rule:
    return Rule(NONE, OWN, ALL, why)


def _summary(why: str) -> Rule:
    return Rule(NONE, SUMMARY, ALL, why)


def _team(why: str) -> Rule:
    return Rule(NONE, ALL, ALL, why)


# REST API routes, as FastAPI spells them (relative to /api).
API: dict[str, Rule] = {
    "GET /health": Rule(SUMMARY, SUMMARY, ALL, "anonymous: up or not; labelers: no paths; admins: everything"),
    "GET /docs": _team("the API reference"),
    "GET /openapi.json": _team("the API schema the reference is drawn from"),
    "GET /metrics": _admin("operator metrics: activity, generation queue, jobs, chain backlog, request latencies"),
    "POST /feedback": _own("scored feedback is stored with its sender"),
    "POST /votes": _own("a vote is stored as the caller's"),
    "GET /contributions/{name}": _own("a labeler's contributions and rewards are theirs"),
    "GET /contributions/{name}/proof/{contribution_id}": _own("proofs carry the contribution's salt"),
    "GET /policies": _summary(
        "version names, lineage, algorithm and figures; adapter paths, the base model's "
        "location and training configs are for admins"
    ),
    "PATCH /policies/{name}": _admin("renaming a version"),
    "DELETE /policies/{name}": _admin("deleting a version"),
    "GET /policies/{name}/report": _summary(
        "figures for labelers; the example prompts and answers are other people's held-out text"
    ),
    "POST /policies/{name}/report": _admin("computing a report uses the model for minutes"),
    "GET /policies/{name}/safety": _summary(
        "rates for labelers; the quoted red-team requests and answers are for admins"
    ),
    "POST /policies/{name}/safety": _admin("a safety evaluation uses the model for minutes"),
    "GET /policies/{name}/gate": _team("the release gate's checks: verdicts and figures, no one's text"),
    "GET /policies/{name}/lineage": _team(
        "a version's chain from labels to the Hub: counts and figures, no labeler's name"
    ),
    "GET /jobs": _summary("status and progress; configs, errors and run dirs are for admins"),
    "POST /jobs": _admin("training jobs"),
    "GET /jobs/{job_id}": _summary("status and progress; the log tail and config are for admins"),
    "POST /jobs/{job_id}/{action}": _admin("cancel, pause, resume"),
    "GET /judge-runs": _admin("AI judge runs: endpoints and errors"),
    "POST /judge-runs": _admin("AI judges use the model or a paid endpoint, and write labels"),
    "GET /judge-runs/{run_id}": _admin("an AI judge run: endpoint and error"),
    "POST /judge-runs/{run_id}/cancel": _admin("stopping an AI judge run"),
    "GET /judges/agreement": _admin("a judge's disagreements hold people's prompts and answers"),
    "GET /policies/{name}/benchmarks": _team("standard benchmark scores of a version and its parent: figures only"),
    "POST /policies/{name}/benchmarks": _admin("a benchmark run uses the model for minutes"),
    "GET /backup": _admin("backups hold every labeler's text; their target and snapshots are for admins"),
    "POST /backup": _admin("taking a backup"),
    "POST /backup/rewrite-history": _admin("rewriting the backup history deletes older snapshots"),
}

# Console pages (pages/*.py, by file stem) and their sections. Anonymous clients never reach the console in
# team mode (it asks for a login first); these rules say what a logged-in labeler gets.
CONSOLE: dict[str, Rule] = {
    "page:data": _summary("counts, charts, agreement and labeler activity of everyone (no text); sections below"),
    "data.recent_items": _own("the item table: labelers see and search their own votes"),
    "data.redact": _admin("redaction deletes text for good"),
    "data.audit_log": _admin("who did what, with ids and file names"),
    "data.scored_feedback": _own("API feedback: labelers see what they sent"),
    "data.training_set": _own("preview and JSONL download: built from the viewer's own labels"),
    "data.import": _admin("importing datasets"),
    "data.judge_runs": _admin("running AI judges (the model or a paid endpoint) and their runs"),
    "data.judge_disagreements": _admin("a judge's disagreements hold people's prompts and answers"),
    "page:labeling": _admin("queues, guidelines and aspects"),
    "page:train": _admin("launching training jobs"),
    "page:runs": _summary("job status, curves and the figures of each version's report"),
    "runs.log": _admin("log tails hold paths and tracebacks"),
    "runs.control": _admin("cancel, pause, resume"),
    "runs.report": _summary("figures for labelers; example answers for admins"),
    "runs.versions": _admin("rename and delete versions"),
    "page:compare": _admin("side-by-side generation and evaluation on held-out text"),
    "page:leaderboard": _team("arena ratings: aggregates of blind votes"),
    "page:export": _admin("pushing adapters and datasets to the Hub with a token"),
    "page:wallet": _own("the viewer's wallet, contributions and claims"),
    "wallet.admin": _admin("anchoring settings and every labeler's status"),
    "page:settings": _summary("hardware and defaults; paths, endpoints and files are for admins"),
    "settings.values": _summary("admin-only settings (paths, endpoints, files) are hidden from labelers"),
    "settings.backup": _admin("the backup's target, state and snapshots; backing up and rewriting its history"),
    "page:account": _own("the viewer's own API tokens"),
    "account.everyone": _admin("every user's API tokens, to revoke them"),
}

# The labeling app (Gradio, /label), by event name (private events too: the page calls them): every action
# works on the caller's own chats, votes and rewards; the page load lists queues and versions (no text).
LABEL_APP: dict[str, Rule] = {
    name: _own("the caller's own chat, votes and rewards")
    for name in (
        "send",
        "send_on_enter",
        "regenerate",
        "vote_a",
        "vote_b",
        "vote_tie",
        "vote_both_bad",
        "undo",
        "gold_from_a",
        "gold_from_b",
        "next_prompt",
        "skip",
        "new_chat",
        "my_rewards",
        "label_newest",
        "page_load",
        "arena_ask",
        "arena_ask_on_enter",
        "arena_vote_a",
        "arena_vote_b",
        "arena_vote_tie",
        "arena_vote_both_bad",
        "review_next",
        "review_vote_a",
        "review_vote_b",
        "review_vote_tie",
        "review_vote_both_bad",
        "blind_check_next",
        "blind_offer",
    )
}

RULES: dict[str, Rule] = {
    **{f"api {k}": v for k, v in API.items()},
    **CONSOLE,
    **{f"label:{k}": v for k, v in LABEL_APP.items()},
}


def scope(user: Any, resource: str) -> str:
    """What ``user`` gets on ``resource``: none | summary | own | all (``none`` for unknown resources)."""
    return scope_of(user, RULES.get(resource))


def require(user: Any, resource: str, owner: Any = None) -> str:
    """The caller's scope on ``resource``; raises when it is ``none``, or when it is ``own`` and ``owner`` (a
    user id or name) is somebody else."""
    return grant(user, RULES.get(resource), resource, owner)


def can(user: Any, resource: str) -> bool:
    return scope(user, resource) != NONE


def owner_filter(user: Any, resource: str) -> int | None:
    """For list reads: the user id to restrict rows to (``own`` scope), or None for every row."""
    return user.id if require(user, resource) == OWN else None


# --- what a scope shows ------------------------------------------------------------------------------------

_HEALTH_FIELDS = {
    ANONYMOUS: ("status",),
    LABELER: ("status", "version", "model_status", "chat_dtype", "storage_ephemeral"),
}
_JOB_SUMMARY_FIELDS = (
    "id",
    "algorithm",
    "status",
    "parent",
    "version",
    "created_at",
    "started_at",
    "finished_at",
    "progress",
)
_POLICY_SUMMARY_FIELDS = (
    "id",
    "name",
    "parent",
    "algorithm",
    "data_hash",
    "metrics",
    "job_id",
    "created_at",
    "deleted_at",
)


def health_view(health: dict[str, Any], user: Any) -> dict[str, Any]:
    """The health answer for ``user``: admins get every field; others no paths or model locations."""
    role = role_of(user)
    return health if role == ADMIN else {k: v for k, v in health.items() if k in _HEALTH_FIELDS[role]}


def job_view(job: Mapping[str, Any], granted: str) -> dict[str, Any]:
    """A job as a scope shows it: ``summary`` drops the config, error text, log and run dir."""
    return dict(job) if granted == ALL else {k: v for k, v in job.items() if k in _JOB_SUMMARY_FIELDS}


def policy_view(policy: dict[str, Any], granted: str) -> dict[str, Any]:
    """A version as a scope shows it: ``summary`` drops the adapter path, the base model (a local directory when
    the studio runs on one) and the training config (it holds model and reward-model paths)."""
    return policy if granted == ALL else {k: v for k, v in policy.items() if k in _POLICY_SUMMARY_FIELDS}
