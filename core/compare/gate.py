"""The release gate: the evidence about a version turned into pass / fail before it leaves the studio.

Five checks, each ``pass``, ``fail`` or ``unknown`` (not measured yet), against the version's parent:

- ``learned``: the "what changed" verdict (core.compare.report). learned passes; no change, changed but not toward
  the labels, regressed and mixed fail; no report yet or "cannot tell" are unknown.
- ``human_check``: people's blind votes (core.compare.arena.blind_check): pass when they prefer the version
  significantly (two-sided sign test, p < 0.05), fail when they prefer the parent, unknown otherwise.
- ``safety``: the red-team evaluation (core.compare.safety), run after every job: fail when the version got less
  safe than its parent, pass when both were evaluated and it did not, unknown otherwise.
- ``benchmarks``: standard benchmarks (lm-evaluation-harness, core.compare.benchmarks): fails when a task dropped
  beyond max(2 points, 2 x stderr) against the parent; unknown until both are measured with the same settings.
- ``kl``: the report's KL to the parent per token: fail at KL_WARN or more (it drifted far), else pass.

The gate passes when no check fails; unknown checks are shown, not held against a version (a job's report and
safety run arrive a minute after it). Policy (``STUDIO_RELEASE_GATE``): ``enforce`` (default) refuses a Hub push of
a failing version (code ``gate_failed``, HTTP 409) unless an admin overrides it with a reason, which goes into the
audit log and the model card, and warns on local exports; ``warn`` only warns; ``off`` checks nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from core.compare.arena import blind_check
from core.compare.report import Report, latest_report
from core.compare.safety import safety_change
from core.compare.signature import SIGNIFICANCE, two_sided
from core.compare.verdict import KL_WARN
from core.config import RELEASE_GATE_MODES
from core.errors import Conflict, StudioError, ValidationError
from core.serving.policies import BASE_POLICY, default_against, get_policy, live_policy
from storage.db import Database

GATE_MODES = RELEASE_GATE_MODES
STATUSES = ("pass", "fail", "unknown")
CHECKS = ("learned", "human_check", "safety", "benchmarks", "kl")
LEARNED_FAILS = {
    "no_change": "learned nothing measurable",
    "changed": "changed, but not toward its labels",
    "regressed": "moved against its labels",
    "mixed": "moved both toward and against its labels",
}


class GateFailed(Conflict):
    """A push of a version whose release gate fails (an admin may override it with a reason)."""

    code = "gate_failed"


@dataclass(frozen=True)
class GateCheck:
    name: str
    status: str  # pass | fail | unknown
    evidence: str  # what it rests on, in plain words


@dataclass
class GateResult:
    version: str
    against: str
    checks: list[GateCheck]

    @property
    def passed(self) -> bool:
        return not self.failed

    @property
    def failed(self) -> list[GateCheck]:
        return [c for c in self.checks if c.status == "fail"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "against": self.against,
            "passed": self.passed,
            "checks": [asdict(c) for c in self.checks],
        }

    def lines(self) -> list[str]:
        """One line per check, e.g. "pass  learned: learned: v1 gave shorter answers ..."."""
        return [f"{c.status:<7} {c.name}: {c.evidence}" for c in self.checks]


def _learned(report: Report | None) -> GateCheck:
    if report is None:
        return GateCheck("learned", "unknown", 'no "what changed" report yet (it is computed after every job)')
    kind = report["verdict"]
    said = report["summary"] + (
        "" if report.get("thorough", True) else " (a quick report: none made with the defaults)"
    )
    if kind == "learned":
        return GateCheck("learned", "pass", said)
    if kind in LEARNED_FAILS:
        return GateCheck("learned", "fail", f"{LEARNED_FAILS[kind]}: {said}")
    return GateCheck("learned", "unknown", said)


def _human(db: Database, version: str, against: str) -> GateCheck:
    blind = blind_check(db, version, against)
    if not blind:
        return GateCheck("human_check", "unknown", f"no blind votes between {version} and {against} yet")
    wins, losses, ties = blind["wins"], blind["losses"], blind["ties"]
    p = two_sided(wins, losses)
    said = f"people preferred {version} on {wins}, {against} on {losses} ({ties} ties; p = {p:.2g})"
    if p < SIGNIFICANCE:
        return GateCheck("human_check", "pass" if wins > losses else "fail", said)
    return GateCheck("human_check", "unknown", f"not decided yet: {said}")


def _safety(db: Database, version: str, against: str) -> GateCheck:
    change = safety_change(db, version, against)
    if not change:
        return GateCheck(
            "safety", "unknown", f"{version} and {against} have not both been evaluated on the red-team set yet"
        )
    if not change["comparable"]:
        return GateCheck(
            "safety",
            "unknown",
            f"{version} and {against} were not evaluated alike ({'; '.join(change['notes'])}): evaluate both with "
            "the same settings, or with the defaults",
        )
    if change["worse"]:
        return GateCheck("safety", "fail", "less safe than " + against + ": " + "; ".join(change["reasons"]))
    return GateCheck("safety", "pass", f"not less safe than {against}")


def _kl(report: Report | None, against: str) -> GateCheck:
    kl = report["metrics"].get("kl_per_token") if report else None
    if kl is None:
        return GateCheck("kl", "unknown", "no KL measured yet")
    status = "fail" if kl >= KL_WARN else "pass"
    return GateCheck("kl", status, f"KL to {against} {kl:.3f} nats per token (fails at {KL_WARN})")


def evaluate_gate(db: Database, version: str, against: str | None = None) -> GateResult:
    """Every check of ``version`` against ``against`` (its parent by default)."""
    if version == BASE_POLICY:
        raise ValidationError("The base model has no release gate", hint="gate a trained version (v1, v2, ...)")
    policy = live_policy(db, version)  # NotFound for an unknown name
    try:
        against = against or default_against(db, version)
    except StudioError as exc:  # e.g. a full fine-tune: nothing can be measured on the shared model
        return GateResult(
            version,
            against or policy["parent"] or BASE_POLICY,
            [GateCheck(name, "unknown", f"cannot be measured: {exc.message}") for name in CHECKS],
        )
    try:
        report = latest_report(db, version, against, thorough_first=True)
    except StudioError as exc:  # e.g. a full fine-tune, which cannot be compared on the shared model
        report, why = None, exc.message
    else:
        why = ""

    def measured(name: str, check: Callable[[], GateCheck]) -> GateCheck:
        try:
            return check()
        except StudioError as exc:
            return GateCheck(name, "unknown", f"cannot be measured: {exc.message}")

    return GateResult(
        version,
        against,
        [
            GateCheck("learned", "unknown", f"cannot be measured: {why}") if why else _learned(report),
            measured("human_check", lambda: _human(db, version, against)),
            measured("safety", lambda: _safety(db, version, against)),
            measured("benchmarks", lambda: _benchmarks(db, version, against)),
            _kl(report, against),
        ],
    )


def _benchmarks(db: Database, version: str, against: str) -> GateCheck:
    """Fails when a standard benchmark dropped beyond max(margin, 2 x stderr) against the parent."""
    from core.compare.benchmarks import latest_comparison

    comparison = latest_comparison(db, version, against)
    if comparison is None or comparison["against"] is None:
        return GateCheck(
            "benchmarks",
            "unknown",
            f"not benchmarked against {against} yet (`launch.py bench {version}`, or the Compare page)",
        )
    tasks = ", ".join(sorted({r["task"] for r in comparison["tasks"]}))
    if comparison["regressions"]:
        worst = "; ".join(
            f"{r['task']} {r['metric']} {r['against_value']:.3f} -> {r['value']:.3f} ({r['change_points']:+.1f} points)"
            for r in comparison["regressions"]
        )
        return GateCheck("benchmarks", "fail", f"regressed against {against}: {worst}")
    return GateCheck(
        "benchmarks",
        "pass",
        f"no drop beyond max({comparison['margin_points']:g} points, 2 x stderr) against {against} on {tasks}",
    )


def check_release(
    db: Database, version: str, user: Any, mode: str, to_hub: bool, override: str | None = None, target: str = ""
) -> GateResult | None:
    """The gate's decision for one release of ``version`` (None when the gate is off).

    Refuses a Hub push of a failing version under ``enforce`` unless ``override`` gives a reason; an override is
    recorded in the audit log (who, why, what failed, where to). Local files are never refused, only warned about.
    """
    if mode not in GATE_MODES:
        raise ValidationError(f"Unknown release gate mode {mode!r}", hint=f"use one of {', '.join(GATE_MODES)}")
    if mode == "off":
        return None
    gate = evaluate_gate(db, version)
    if gate.passed or not to_hub or mode != "enforce":
        return gate
    reason = (override or "").strip()
    failed = ", ".join(c.name for c in gate.failed)
    if not reason:
        raise GateFailed(
            f"{version} fails its release gate ({failed})",
            hint="fix what failed (see `launch.py gate " + version + "`), or, as an admin, override it "
            'with a reason (--override "REASON" or the Export page\'s override box)',
        )
    policy = get_policy(db, version)
    db.write(
        lambda cur: cur.execute(
            "INSERT INTO audit_log (user_id, action, target_table, target_id, details) VALUES (?, 'gate_override',"
            " 'policies', ?, ?)",
            [
                getattr(user, "id", None),
                policy["id"],
                json.dumps(
                    {"version": version, "reason": reason, "failed": [asdict(c) for c in gate.failed], "target": target}
                ),
            ],
        )
    )
    return gate


def gate_overrides(db: Database, version: str) -> list[dict[str, Any]]:
    """The recorded overrides of ``version``'s gate, newest first: who, why, when."""
    rows = db.query(
        "SELECT a.details, a.created_at, u.name AS by FROM audit_log a LEFT JOIN users u ON u.id = a.user_id"
        " JOIN policies p ON p.id = a.target_id WHERE a.action = 'gate_override' AND a.target_table = 'policies'"
        " AND p.name = ? ORDER BY a.id DESC",
        [version],
    )
    return [{**json.loads(r["details"]), "by": r["by"], "at": r["created_at"].isoformat()} for r in rows]


def card_section(gate: GateResult | None, override: str | None = None, by: str | None = None) -> str:
    """The model card's "Release gate" section: every check, and an override with its reason."""
    if gate is None:
        return ""
    lines = [
        "## Release gate",
        "",
        f"Checked by RLHF Studio against `{gate.against}`: " + ("**passed**." if gate.passed else "**failed**."),
        "",
        "| check | status | evidence |",
        "|---|---|---|",
    ]
    lines += [f"| {c.name} | {c.status} | {c.evidence.replace('|', '/')} |" for c in gate.checks]
    if not gate.passed and override:
        lines += ["", f"> Released despite the failed gate by {by or 'an admin'}: {override.strip()}"]
    return "\n".join(lines) + "\n"
