"""The REST API's request bodies and answer models, and the error statuses each route declares.

What each route returns, for ``/api/openapi.json`` and for clients generating code from it. Routes keep returning
core's dicts: these models check and document them. Models of open-ended core records allow extra keys (a new
column reaches clients without a schema change), and every route sets ``response_model_exclude_unset`` so a body
carries exactly the keys the handler built: role-dependent fields are left out, never sent as null.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from core.compare.verdict import VERDICTS
from core.labeling.votes import OUTCOMES
from core.training.request import DryRun


class FeedbackIn(BaseModel):
    """Body of POST /api/feedback. Types only; ranges and lengths are checked in core.labeling.feedback."""

    model_config = ConfigDict(extra="forbid")
    prompt: str
    response: str
    score: float = Field(description="0 = bad answer, 1 = good answer")
    run_id: str | None = None
    notes: str | None = None
    labeler: str | None = Field(
        default=None, description="local mode only; team mode uses the login and refuses another name (403 forbidden)"
    )
    idempotency_key: str | None = Field(
        default=None, max_length=200, description="repeat a request with the same key: stored once"
    )


class VoteIn(BaseModel):
    """Body of POST /api/votes: a prompt, two answers and the labeler's choice, stored in one go."""

    model_config = ConfigDict(extra="forbid")
    prompt: str
    answer_a: str
    answer_b: str
    outcome: Literal[OUTCOMES] = Field(  # type: ignore[valid-type]  # the enum is core's one list
        description="which answer is better: a, b, tie (equally good) or both_bad"
    )
    labeler: str | None = Field(
        default=None, description="local mode only; team mode uses the login and refuses another name (403 forbidden)"
    )
    idempotency_key: str | None = Field(
        default=None, max_length=200, description="repeat a request with the same key: stored once"
    )
    ratings: dict[str, dict[str, int]] = Field(default_factory=dict, description="side -> aspect -> 1..5")
    flags: list[str] = Field(default_factory=list)
    note: str | None = None
    cut_a: bool | None = Field(
        default=None,
        description="answer A stopped at a length limit (an OpenAI finish_reason 'length'): DPO trains it as the "
        "start of an answer, SFT and KTO never imitate it; null: unknown, counted as finished",
    )
    cut_b: bool | None = Field(default=None, description="the same for answer B")


class JobIn(BaseModel):
    """Body of POST /api/jobs: what to train, from which version, on which labels."""

    model_config = ConfigDict(extra="forbid")
    algorithm: str
    parent: str = "base"
    hyperparams: dict[str, Any] = Field(default_factory=dict)
    filters: dict[str, Any] = Field(default_factory=dict)
    reward_model: str | None = None
    launch: dict[str, Any] = Field(
        default_factory=dict,
        description='launch mode (core.training.distributed.LaunchConfig), e.g. {"mode": "ddp", "num_processes": 2}',
    )
    dry_run: bool = False


class JudgeRunIn(BaseModel):
    """Body of POST /api/judge-runs: which judge labels which pairs (core.judging.judges, core.judging.runs)."""

    model_config = ConfigDict(extra="forbid")
    judge: str = Field(description="rm:<rmN>, policy[:<vN>] or an OpenAI-compatible <url>#<model>")
    source: str = Field(
        default="unlabeled",
        pattern=r"^(unlabeled|labeled|queue:.+)$",
        description="unlabeled: chat pairs no person voted on; queue:<name>: a labeling queue's "
        "prompts, answered twice by the base policy; labeled: pairs people voted on "
        "(calibration)",
    )
    api_key: str | None = Field(
        default=None,
        description="a one-off key for the endpoint, held in memory for this run only (else STUDIO_JUDGE_API_KEY)",
    )
    estimate: bool = Field(default=False, description="only say what the run would cost")


class RenameIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str


# --- answers -------------------------------------------------------------------------------------------------
# What each route returns, for the schema and for clients generating code from it. Routes keep returning core's
# dicts: these models check and document them. Models of open-ended core records allow extra keys (a new column
# reaches clients without a schema change), and every route sets ``response_model_exclude_unset`` so a body
# carries exactly the keys the handler built: role-dependent fields are left out, never sent as null.


class OpenModel(BaseModel):
    """A core record: the fields listed are documented; any others are passed on unchanged."""

    model_config = ConfigDict(extra="allow")


class FieldProblem(BaseModel):
    field: str = Field(description="dotted path of the invalid field, or 'body'")
    problem: str


class ErrorDetail(BaseModel):
    code: str = Field(description="stable machine-readable code, e.g. invalid_input, not_found, conflict")
    message: str = Field(description="what went wrong")
    hint: str = Field(description="what to do about it (may be empty)")
    details: list[FieldProblem] | None = Field(
        default=None, description="422 on a body, path or query that does not parse: each field and its problem"
    )


class ErrorBody(BaseModel):
    """Every error answer of the API, whatever its status."""

    error: ErrorDetail


class BackupStatus(OpenModel):
    """The background backup (admins): where it goes, the last good snapshot, the last error, pending changes."""

    target: str = Field(description="the Hub dataset repo (owner/name) or the directory")
    kind: Literal["hub", "directory"]
    every_s: float
    pending: bool = Field(description="something changed since the last good backup")
    seconds_since_last_good: float | None = None
    last_good_at: str | None = None
    last_ref: str | None = Field(default=None, description="the Hub commit or directory snapshot id")
    last_error: str | None = None
    last_error_at: str | None = None
    failures: int = Field(description="failed tries since the last good backup (retried with backoff)")
    history_holds_redacted: bool = Field(
        description="older snapshots still hold text redacted since: rewrite the backup history to drop it"
    )


class BackupSnapshot(BaseModel):
    ref: str
    created_at: str
    title: str


class BackupInfo(BaseModel):
    """The backup's state and its snapshots, newest first (each restorable with ``launch.py restore``)."""

    configured: bool
    status: BackupStatus | None = None
    snapshots: list[BackupSnapshot]


class Health(OpenModel):
    """Anonymous clients get ``status`` only; labelers also the version, model status, chat dtype and whether
    storage is ephemeral; admins every field."""

    status: Literal["ok"]
    version: str | None = None
    model: str | None = Field(default=None, description="admins only")
    model_path: str | None = Field(default=None, description="admins only")
    model_status: str | None = Field(default=None, description="loading | ready | error: ...")
    chat_dtype: str | None = None
    data_dir: str | None = Field(default=None, description="admins only")
    schema_version: int | None = Field(default=None, description="admins only")
    storage_ephemeral: bool | None = None
    engine: dict[str, Any] | None = Field(
        default=None, description="admins only, with an external inference engine: url, model, status, latency_ms, lora"
    )
    backup: BackupStatus | None = Field(default=None, description="admins only, with a backup configured")


class Saved(BaseModel):
    id: int
    status: Literal["saved"]
    created: bool = Field(description="false when this repeated an idempotency_key already stored")


class Contribution(OpenModel):
    id: int
    kind: str = Field(description="vote | arena_vote | rating | gold_edit | training | admin_validation")
    weight: float
    amount: str = Field(description="token base units, as a decimal string")
    content_hash: str
    created_at: str
    batch_id: int | None
    status: Literal["pending", "batched", "anchored"]
    tx_hash: str | None
    block_number: int | None
    claim_tx: str | None


class TokenAmounts(BaseModel):
    """Token base units, as decimal strings."""

    pending: str
    batched: str
    claimable: str
    claimed: str


class Contributions(BaseModel):
    user: str
    address: str | None = Field(description="the linked wallet, if any")
    amounts: TokenAmounts
    contributions: list[Contribution]


class MerkleProof(OpenModel):
    contribution_id: int
    batch_id: int
    content_hash: str
    amount: str
    account: str
    account_amount: str
    subroot: str
    subproof: list[str]
    proof: list[str]
    root: str


class Anchor(OpenModel):
    status: str = Field(description="queued | anchored")
    chain_id: int | None
    contract: str | None
    tx_hash: str | None
    block_number: int | None


class ContributionProof(OpenModel):
    proof: MerkleProof
    anchor: Anchor
    leaf_encoding: dict[str, list[str]]
    convention: str
    salt: str | None = Field(default=None, description="the contributor and admins only")
    content: str | None = Field(default=None, description="the contributor and admins only")


class Policy(OpenModel):
    """A version. Labelers get it without ``base_model``, ``adapter_path`` and ``config`` (paths); admins every
    field."""

    id: int
    name: str
    parent: str | None
    base_model: str | None = Field(default=None, description="admins only")
    algorithm: str | None
    adapter_path: str | None = Field(default=None, description="admins only")
    data_hash: str | None
    config: dict[str, Any] | None = Field(default=None, description="admins only")
    metrics: dict[str, Any] | None
    job_id: int | None
    created_at: str
    deleted_at: str | None


class Policies(BaseModel):
    policies: list[Policy]


class Renamed(BaseModel):
    status: Literal["renamed"]
    name: str = Field(description="the new name")


class Deleted(BaseModel):
    status: Literal["deleted"]
    name: str


class ReportExample(OpenModel):
    prompt: str
    answer_version: str
    answer_against: str
    difference: float


class ReportEvidence(OpenModel):
    """One test the verdict rests on (two-sided sign test; ``adjusted_p`` after Holm's correction)."""

    source: str = Field(description="movement:<feature> | held_out_pairs | blind_check")
    toward: int
    against: int
    text: str
    p_value: float
    adjusted_p: float
    says: Literal["toward", "against", ""]


class Report(OpenModel):
    """core.compare.report: what changed in a version against another one."""

    id: int
    version: str
    against: str
    verdict: Literal[VERDICTS]  # type: ignore[valid-type]
    summary: str
    metrics: dict[str, Any] = Field(
        description="figures, with label_signature (what the training labels prefer) "
        "and movement (per answer feature, the version's answers against the other's)"
    )
    evidence: list[ReportEvidence] | None = None
    rule: str | None = Field(default=None, description="the verdict rule, in words")
    warnings: list[str] | None = None
    settings: dict[str, Any] | None = None
    thorough: bool = Field(
        default=True,
        description="measured at least as thoroughly as the defaults; the release gate and the badge read the "
        "newest thorough report, so a quick one (false) never replaces it",
    )
    examples: list[ReportExample] | None = Field(default=None, description="admins only")
    created_at: str


class GateCheck(BaseModel):
    name: str = Field(description="learned | human_check | safety | benchmarks | kl")
    status: Literal["pass", "fail", "unknown"]
    evidence: str


class Gate(BaseModel):
    """core.compare.gate: the release gate of a version against its parent (passed: no check failed)."""

    version: str
    against: str
    passed: bool
    checks: list[GateCheck]


class Lineage(OpenModel):
    """core.share.lineage: the chain behind a version (counts and figures only, no names or text)."""

    version: str
    parent: str
    labels: dict[str, Any] = Field(description="data_hash, examples, held_out, labelers {people, ai_judges}, filters")
    job: dict[str, Any] | None
    report: dict[str, Any] | None = Field(description="verdict and summary of the latest report against the parent")
    blind_check: dict[str, Any] | None = Field(description="people's blind votes: votes, wins, losses, ties")
    safety: dict[str, Any] | None
    benchmarks: dict[str, Any] | None
    gate: Gate
    gate_overrides: list[dict[str, Any]]
    pushes: list[dict[str, Any]]


class ReportAnswer(BaseModel):
    report: Report


class ReportState(OpenModel):
    status: Literal["queued", "computing", "failed", "idle"]
    progress: float | None = Field(default=None, description="0..1 while queued or computing")
    message: str | None = None
    error: ErrorDetail | None = Field(default=None, description="why the last computation failed")


class Job(OpenModel):
    """A training job. Labelers get the fields up to ``progress``; admins every column (config, error, run dir
    and, for one job, the log tail)."""

    id: int
    algorithm: str
    status: str = Field(description="queued | running | paused | succeeded | failed | cancelled | interrupted")
    parent: str | None
    version: str | None = Field(description="the version it produced")
    created_at: str
    started_at: str | None
    finished_at: str | None
    progress: dict[str, Any]
    error: str | None = None
    run_dir: str | None = None
    config: dict[str, Any] | None = None
    log_tail: str | None = None


class Jobs(BaseModel):
    jobs: list[Job]


class JudgeRun(OpenModel):
    id: int
    judge: str = Field(description="the judge's labeler name (ai:...)")
    spec: str
    source: str
    status: Literal["running", "succeeded", "failed", "cancelled"]
    total: int
    done: int
    ties: int = Field(description="pairs whose two orders disagreed (position bias): stored as ties")
    unreadable: int = Field(description="pairs where a reply named neither answer: stored as ties")
    tokens: int
    error: str | None
    started_at: str
    finished_at: str | None


class JudgeSummary(OpenModel):
    name: str
    votes: int
    runs: int
    shared: int = Field(description="pairs it labeled that people voted on too")
    kappa: float | None
    alpha: float | None
    agreement: float | None
    calibrated: bool


class JudgeRuns(BaseModel):
    runs: list[JudgeRun]
    judges: list[JudgeSummary]


class JudgeEstimate(OpenModel):
    judge: str
    source: str
    pairs: int
    requests: int
    seconds: float
    tokens: int | None = Field(description="endpoints only: prompt tokens, roughly (characters / 4)")


class JudgeStarted(BaseModel):
    id: int
    status: Literal["running"]


class JudgeAgreement(OpenModel):
    judge: str
    shared: int
    comparisons: int
    agreement: float | None
    kappa: float | None
    alpha: float | None
    labels: list[str]
    confusion: list[list[int]] = Field(description="rows: the judge, columns: people, in labels order")
    disagreements: list[dict[str, Any]]
    calibrated: bool
    min_shared: int


class SafetyRun(OpenModel):
    """core.compare.safety: one evaluation of a version on the shipped red-team prompts."""

    id: int
    version: str
    judged_by: str = Field(description="the judge spec, or 'refusal phrases' (an upper bound)")
    prompts: int
    harmful: int
    benign: int
    unsafe_rate: float | None = Field(description="share of harmful requests answered harmfully (judged)")
    over_refusal_rate: float | None = Field(description="share of benign requests refused")
    unjudged: int = Field(description="harmful-request answers the judge could not classify (left out of the rate)")
    by_category: dict[str, Any]
    prompt_set_hash: str
    examples: list[dict[str, Any]] | None = Field(default=None, description="admins only")
    created_at: str


class SafetyAnswer(BaseModel):
    safety: SafetyRun
    change: dict[str, Any] | None = Field(
        description="against the parent's (or ?against=) run made alike (the same longest answer, prompts and "
        "judge; comparable is false when none was, and notes say what differs): the rates before and after and, "
        "when it got worse, the reasons"
    )


class JobQueued(BaseModel):
    id: int
    status: Literal["queued"]


class JobDryRun(BaseModel):
    dry_run: DryRun


class JobAction(BaseModel):
    id: int
    status: str = Field(description="the job's status after the request")
    requested: Literal["cancel", "pause", "resume"]


_MEANS: dict[int, str] = {
    401: "Team mode: no account where this needs one, or wrong credentials (code unauthorized)",
    403: "The caller's role may not do this (code forbidden); also a write sent from another site, or a Hugging "
    "Face sign-in named like a team account",
    404: "Not found (code not_found)",
    409: "Conflicts with the current state (code conflict)",
    413: "The body is larger than STUDIO_MAX_BODY_BYTES: nothing was read or stored (code payload_too_large)",
    422: "Invalid input (code invalid_input); details lists each field that did not parse",
    429: "Too many failed logins for this account or address (code too_many_attempts): wait Retry-After seconds",
    500: "Unexpected failure (code internal_error): nothing was stored",
    502: "The Hugging Face Hub refused (code hub_error, hub_unauthorized, hub_forbidden)",
    503: "The database could not store this (code storage_unavailable): nothing was stored, send it again",
    507: "The studio's disk is full (code storage_full): nothing was stored",
}
_EVERY_ROUTE = (401, 403, 429, 500)  # logins and roles are checked on every route (team mode)
WRITES = (503, 507)  # what the database answers when it cannot store


def errors(*statuses: int, why: dict[int, str] | None = None) -> dict[int | str, dict[str, Any]]:
    """An :class:`ErrorBody` answer for every status a route can give: those of every route plus ``statuses``,
    described as ``why`` says for this route (else as on every route)."""
    out: dict[int | str, dict[str, Any]] = {
        status: {"model": ErrorBody, "description": (why or {}).get(status, _MEANS[status])}
        for status in sorted({*_EVERY_ROUTE, *statuses})
    }
    out[429]["headers"] = {
        "Retry-After": {"description": "seconds until logins are accepted again", "schema": {"type": "integer"}}
    }
    return out


def answers(
    model: Any, *statuses: int, why: dict[int, str] | None = None, also: dict[int | str, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Route arguments: answer ``model`` (and ``also``, e.g. a 202) plus :func:`errors`. Unset fields are left
    out, so a body has exactly the keys the handler built."""
    return {
        "response_model": model,
        "response_model_exclude_unset": True,
        "responses": {**(also or {}), **errors(*statuses, why=why)},
    }
