"""What a contributor and an admin read about proof of contribution: a person's contributions and their
status, token amounts, claimable batches, the batch list, and token amounts as text.

Read-only views over the tables :mod:`core.chain.contributions` writes, kept apart from the batching, anchoring
and proof protocol there; the Wallet page, the label app's rewards panel, the public reports and the CLI show
these, so no UI needs its own SQL.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from core.chain.contributions import TOKEN
from storage.db import Database

# A contribution's status from its batch: pending (not batched yet), batched (root not anchored yet), anchored.
_STATUS = (
    "CASE WHEN c.batch_id IS NULL THEN 'pending' WHEN b.status = 'anchored' THEN 'anchored'"
    " ELSE 'batched' END AS status"
)


def contributions_of(db: Database, user_id: int) -> list[dict[str, Any]]:
    """A contributor's contributions with their batch status (pending / batched / anchored)."""
    return db.query(
        "SELECT c.id, c.kind, c.weight, c.amount, c.content_hash, c.created_at, c.batch_id, "
        + _STATUS
        + ", b.tx_hash, b.block_number, l.claim_tx"
        " FROM contributions c LEFT JOIN chain_batches b ON b.id = c.batch_id"
        " LEFT JOIN batch_leaves l ON l.batch_id = c.batch_id AND l.user_id = c.user_id"
        " WHERE c.user_id = ? ORDER BY c.id DESC",
        [user_id],
    )


def amounts_of(db: Database, user_id: int) -> dict[str, int]:
    """Token amounts (base units): pending (not batched), batched (not anchored), claimable, claimed."""
    pending = db.scalar(
        "SELECT coalesce(sum(amount), 0) FROM contributions WHERE user_id = ? AND batch_id IS NULL", [user_id]
    )
    rows = db.query(
        "SELECT b.status, l.amount, l.claim_tx FROM batch_leaves l"
        " JOIN chain_batches b ON b.id = l.batch_id WHERE l.user_id = ?",
        [user_id],
    )
    out = {"pending": int(pending), "batched": 0, "claimable": 0, "claimed": 0}
    for row in rows:
        key = "batched" if row["status"] != "anchored" else "claimed" if row["claim_tx"] else "claimable"
        out[key] += int(row["amount"])
    return out


def status_counts(db: Database, user_id: int) -> dict[str, int]:
    """How many of a contributor's contributions are pending (not batched), batched and anchored."""
    rows = db.query(
        "SELECT " + _STATUS + ", count(*) AS n FROM contributions c"
        " LEFT JOIN chain_batches b ON b.id = c.batch_id WHERE c.user_id = ? GROUP BY 1",
        [user_id],
    )
    return {"pending": 0, "batched": 0, "anchored": 0} | {r["status"]: int(r["n"]) for r in rows}


def claimable_batches(db: Database, user_id: int) -> list[dict[str, Any]]:
    """The anchored batches a contributor has not claimed yet (``batch_id``, ``amount`` of their leaf), oldest
    first: what the Wallet page's claim button pays out, one claim per batch."""
    return db.query(
        "SELECT l.batch_id, l.amount FROM batch_leaves l JOIN chain_batches b ON b.id = l.batch_id"
        " WHERE l.user_id = ? AND b.status = 'anchored' AND l.claim_tx IS NULL ORDER BY l.batch_id",
        [user_id],
    )


def unanchored_batch_count(db: Database) -> int:
    """How many batches are not anchored yet (queued or failed): after an anchor attempt, whether any are left."""
    return int(db.scalar("SELECT count(*) FROM chain_batches WHERE status <> 'anchored'"))


def batches(db: Database, limit: int = 200) -> list[dict[str, Any]]:
    """The newest batches first, with their anchoring state (the Wallet page's admin table, the CLI)."""
    return db.query("SELECT * FROM chain_batches ORDER BY id DESC LIMIT ?", [limit])


def tokens(amount: int) -> str:
    """Base units -> a readable token amount."""
    return f"{Decimal(int(amount)) / TOKEN:.3f}"
