"""Policy registry: the base model and every trained version (v1, v2, ...) people can chat with."""
from __future__ import annotations

import json
from typing import Any

from storage.db import Database

BASE_POLICY = "base"


def ensure_base_policy(db: Database, base_model: str) -> int:
    """Register (or re-point) the ``base`` policy at the model the server was started with."""
    with db.transaction() as cur:
        row = cur.execute("SELECT id, base_model FROM policies WHERE name = ?", [BASE_POLICY]).fetchone()
        if row is None:
            return cur.execute("INSERT INTO policies (name, base_model) VALUES (?, ?) RETURNING id",
                               [BASE_POLICY, base_model]).fetchone()[0]
        if row[1] != base_model:
            cur.execute("UPDATE policies SET base_model = ? WHERE id = ?", [base_model, row[0]])
        return row[0]


def list_policies(db: Database, include_deleted: bool = False) -> list[dict[str, Any]]:
    """Policies newest last, with JSON columns decoded and timestamps as ISO strings."""
    rows = db.query(
        "SELECT p.id, p.name, parent.name AS parent, p.base_model, p.algorithm, p.adapter_path,"
        " p.data_hash, p.config, p.metrics, p.job_id, p.created_at, p.deleted_at"
        " FROM policies p LEFT JOIN policies parent ON parent.id = p.parent_id"
        + ("" if include_deleted else " WHERE p.deleted_at IS NULL") + " ORDER BY p.id")
    for row in rows:
        for key in ("config", "metrics"):
            row[key] = json.loads(row[key]) if row[key] else None
        for key in ("created_at", "deleted_at"):
            row[key] = row[key].isoformat() if row[key] else None
    return rows
