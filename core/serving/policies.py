"""Policy registry: the base model and every trained version (v1, v2, ...) people can chat with, and which of
them can be compared on the shared model (the serving layer knows what it can run; comparing and judging ask
here)."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any, TypedDict, cast

from core.errors import Conflict, NotFound, PermissionDenied, ValidationError
from storage.db import Database, one_row, one_value

BASE_POLICY = "base"


class Version(TypedDict):
    """A version's registry row, its JSON decoded: the base policy, a trained chat version (v1, v2, ...) or a reward
    model (rm1, ...). What every reader of one version gets (:func:`version_row`)."""

    id: int
    name: str
    parent_id: int | None
    parent: str | None  # the parent's name (None for the base)
    base_model: str
    algorithm: str | None  # None for the base policy; "reward" for a reward model
    adapter_path: str | None  # None for the base and for fully fine-tuned versions
    data_hash: str | None
    config: dict[str, Any]  # the training settings ({} for the base)
    metrics: dict[str, Any]  # the job's final metrics ({} when none were recorded)
    job_id: int | None
    created_at: dt.datetime
    deleted_at: dt.datetime | None


def version_row(db: Database, name: str) -> Version | None:
    """The version called ``name``, deleted or not (None: no such name). The one query the readers below share."""
    rows = db.query(
        "SELECT p.*, parent.name AS parent FROM policies p LEFT JOIN policies parent"
        " ON parent.id = p.parent_id WHERE p.name = ?",
        [name],
    )
    if not rows:
        return None
    row = rows[0]
    row["config"] = json.loads(row["config"]) if row["config"] else {}
    row["metrics"] = json.loads(row["metrics"]) if row["metrics"] else {}
    return cast(Version, row)


def ensure_base_policy(db: Database, base_model: str) -> int:
    """Register (or re-point) the ``base`` policy at the model the server was started with."""
    with db.transaction() as cur:
        row = one_row(cur.execute("SELECT id, base_model FROM policies WHERE name = ?", [BASE_POLICY]))
        if row is None:
            return one_value(
                cur.execute(
                    "INSERT INTO policies (name, base_model) VALUES (?, ?) RETURNING id", [BASE_POLICY, base_model]
                )
            )
        if row["base_model"] != base_model:
            cur.execute("UPDATE policies SET base_model = ? WHERE id = ?", [base_model, row["id"]])
        return row["id"]


def list_policies(db: Database, include_deleted: bool = False) -> list[dict[str, Any]]:
    """Policies newest last, with JSON columns decoded and timestamps as ISO strings."""
    rows = db.query(
        "SELECT p.id, p.name, parent.name AS parent, p.base_model, p.algorithm, p.adapter_path,"
        " p.data_hash, p.config, p.metrics, p.job_id, p.created_at, p.deleted_at"
        " FROM policies p LEFT JOIN policies parent ON parent.id = p.parent_id"
        + ("" if include_deleted else " WHERE p.deleted_at IS NULL")
        + " ORDER BY p.id"
    )
    for row in rows:
        for key in ("config", "metrics"):
            row[key] = json.loads(row[key]) if row[key] else None
        for key in ("created_at", "deleted_at"):
            row[key] = row[key].isoformat() if row[key] else None
    return rows


def register_policy(
    db: Database,
    name: str,
    parent_id: int | None,
    base_model: str,
    algorithm: str,
    adapter_path: str | None,
    *,
    data_hash: str | None = None,
    config: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    job_id: int | None = None,
) -> int:
    """Add a trained version (v1, v2, ...) to the registry; its adapter is served by hot-swap. What says where it
    came from (the data's hash, the config, the metrics, the job) is keyword-only: four optional values in a row
    are too easy to pass in the wrong order."""
    with db.transaction() as cur:
        return one_value(
            cur.execute(
                "INSERT INTO policies (name, parent_id, base_model, algorithm, adapter_path, data_hash, config,"
                " metrics, job_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                [
                    name,
                    parent_id,
                    base_model,
                    algorithm,
                    adapter_path,
                    data_hash,
                    json.dumps(config) if config is not None else None,
                    json.dumps(metrics) if metrics is not None else None,
                    job_id,
                ],
            )
        )


def servable_policies(db: Database) -> list[dict[str, Any]]:
    """Policies people can chat with: the base and every live version that has an adapter."""
    return db.query(
        "SELECT id, name, adapter_path FROM policies WHERE deleted_at IS NULL"
        " AND (name = ? OR adapter_path IS NOT NULL) ORDER BY id",
        [BASE_POLICY],
    )


def newest_version(db: Database) -> dict[str, Any] | None:
    """The newest live trained chat version: {"name", "parent" (base for first versions), "trained_at"}, or None.

    One definition (the ``chat_versions`` view) serves the labeling app's "label vN against its parent", the
    console's next-job suggestion and the "what changed" reports."""
    rows = db.query("SELECT name, against_name AS parent, trained_at FROM chat_versions ORDER BY id DESC LIMIT 1")
    return rows[0] if rows else None


def get_policy(db: Database, name: str) -> Version:
    """A live version (NotFound for an unknown or deleted one)."""
    version = version_row(db, name)
    if version is None or version["deleted_at"] is not None:
        raise NotFound(f"Version {name!r} does not exist (or was deleted)", hint="pick another version")
    return version


def live_policy(db: Database, name: str) -> Version:
    """A live version: what comparing, evaluating and judging read (NotFound for an unknown or deleted version,
    each with its own hint)."""
    version = version_row(db, name)
    if version is None:
        raise NotFound(f"Version {name!r} does not exist", hint="pick a version from the list")
    if version["deleted_at"] is not None:
        raise NotFound(
            f"Version {name!r} was deleted",
            hint="pick a live version (deleted ones stay on disk for the record but cannot be compared)",
        )
    return version


def comparable_policy(db: Database, name: str) -> Version:
    """A live chat policy that can run on the shared base model (the base, or a version with an adapter).

    Here, with the registry, because comparing (core.compare) and judging (core.judging) both need the check."""
    policy = live_policy(db, name)
    if policy["algorithm"] == "reward":
        raise ValidationError(
            f"{name} is a reward model, not a chat policy",
            hint="compare base or vN versions; pick rmN as the reward model instead",
        )
    if policy["name"] != BASE_POLICY and not policy["adapter_path"]:
        raise ValidationError(
            f"{name} is fully fine-tuned (its own weights, no adapter), so it cannot share a batch with other versions",
            hint="compare LoRA versions, or start the studio with --model <its model dir> to chat with it",
        )
    return policy


def comparable_policies(db: Database) -> list[str]:
    """Names of the versions the Compare page offers: base first, then every live adapter version."""
    return [
        r["name"]
        for r in db.query(
            "SELECT name FROM policies WHERE deleted_at IS NULL AND (name = ? OR adapter_path IS NOT NULL)"
            " AND coalesce(algorithm, '') <> 'reward' ORDER BY id",
            [BASE_POLICY],
        )
    ]


def default_against(db: Database, version: str) -> str:
    """The version ``version`` is compared with when none is named: its parent (the base for first versions).

    One definition for the "what changed" reports and the safety comparisons."""
    policy = comparable_policy(db, version)
    if policy["name"] == BASE_POLICY:
        raise ValidationError(
            "base has no parent to compare with",
            hint="pick a trained version (v1, v2, ...) or name the version to compare with",
        )
    return policy["parent"] or BASE_POLICY


def rename_policy(db: Database, admin: Any, name: str, new_name: str) -> None:
    """Admins may rename versions (not the base); names stay unique."""
    _require_admin(admin)
    new_name = new_name.strip()
    if name == BASE_POLICY or not re.fullmatch(r"[A-Za-z0-9][\w.-]{0,63}", new_name) or new_name == BASE_POLICY:
        raise ValidationError(
            f"Cannot rename {name!r} to {new_name!r}",
            hint="the base keeps its name; use letters, digits, '.', '_' or '-'",
        )
    get_policy(db, name)
    if db.scalar("SELECT count(*) FROM policies WHERE name = ?", [new_name]):
        raise Conflict(f"A policy named {new_name!r} already exists", hint="pick another name")
    with db.transaction() as cur:
        cur.execute("UPDATE policies SET name = ? WHERE name = ?", [new_name, name])
        cur.execute(
            "INSERT INTO audit_log (user_id, action, target_table, details) VALUES (?, 'rename', 'policies', ?)",
            [admin.id, json.dumps({"from": name, "to": new_name})],
        )


def delete_policy(db: Database, admin: Any, name: str) -> None:
    """Soft delete: the version disappears from menus; its files and records stay for reproducibility."""
    _require_admin(admin)
    if name == BASE_POLICY:
        raise ValidationError("The base policy cannot be deleted", hint="delete trained versions only")
    policy = get_policy(db, name)
    with db.transaction() as cur:
        cur.execute("UPDATE policies SET deleted_at = now() WHERE id = ?", [policy["id"]])
        cur.execute(
            "INSERT INTO audit_log (user_id, action, target_table, target_id) VALUES (?, 'delete', 'policies', ?)",
            [admin.id, policy["id"]],
        )


def _require_admin(user: Any) -> None:
    if not getattr(user, "is_admin", False):
        raise PermissionDenied("Only admins can change policy versions", hint="ask an admin")


def version_of_job(db: Database, job_id: int) -> str | None:
    """The name of the version a training job registered (v1, rm1, ...), or None while it has none (the job
    failed, was cancelled or has not finished)."""
    return db.scalar("SELECT name FROM policies WHERE job_id = ?", [job_id])


def run_dir_of(db: Database, policy: Version) -> Path | None:
    """The run directory of the job that trained ``policy`` (its frozen training data lives there), or None for the
    base and for versions without a job (imported)."""
    if not policy.get("job_id"):
        return None
    run_dir = db.scalar("SELECT run_dir FROM jobs WHERE id = ?", [policy["job_id"]])
    return Path(run_dir) if run_dir else None
