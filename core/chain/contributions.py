"""Contributions -> batches -> anchored roots (the proofs and claims on them are :mod:`core.chain.proofs`).

Contributions are *derived* from the tables the labeling and training code already writes (votes,
arena votes, ratings, gold edits, finished training jobs, admin redactions), so no UI path has to
remember to record them: :func:`collect_contributions` runs before every batch and is idempotent
(one contribution per source row, ``UNIQUE (source_table, source_id)``).

Each contribution gets a quality weight (agreement with the other labelers of the same item), a reward
amount, a random salt and ``content_hash = keccak256(salt || canonical content)``; only that hash goes
into the Merkle tree, so nothing readable reaches the chain. A batch has ONE leaf per contributor
committing to (address, amount, sub-root of their contributions); see :mod:`core.chain.merkle`.
Contributions of people without a linked wallet stay pending until they link one.
What the UIs read back (a person's contributions, amounts, claimable batches) is in :mod:`core.chain.views`.
"""

from __future__ import annotations

import json
import secrets
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from functools import partial
from typing import Any

from eth_utils import keccak

from core.chain.errors import ChainError, ChainUnavailable
from core.chain.ledger import Ledger, TxResult
from core.chain.merkle import ACCOUNT_LEAF, CONTRIBUTION_LEAF, MerkleTree
from core.errors import NotFound
from storage.db import Database, all_rows, first_column, one_value

TOKEN = 10**18
# Reward per contribution at full quality, in milli-tokens (1000 = 1 token).
REWARD_MILLI = {
    "vote": 1000,
    "arena_vote": 1000,
    "rating": 250,
    "gold_edit": 3000,
    "training": 2000,
    "admin_validation": 500,
}
KINDS = tuple(REWARD_MILLI)
TRAINING_MINUTES_PER_UNIT = 10  # a training job earns its reward once per started 10 minutes of compute


@dataclass(frozen=True)
class BatchPolicy:
    """When a batch is cut (the Wallet page edits these; stored in studio_kv)."""

    batch_size: int = field(
        default=50,
        metadata={
            "help": "Cut a batch once this many contributions of linked wallets are pending.",
            "min": 1,
            "max": 100_000,
        },
    )
    max_age_minutes: int = field(
        default=60, metadata={"help": "Or once the oldest pending contribution is this old.", "min": 1, "max": 525_600}
    )
    retry_base_seconds: int = field(
        default=5,
        metadata={"help": "First retry delay after a failed anchor; doubles each attempt.", "min": 1, "max": 3600},
    )
    retry_max_seconds: int = field(default=600, metadata={"help": "Longest retry delay.", "min": 1, "max": 86_400})


POLICY_KEY = "chain.batch_policy"


def load_batch_policy(db: Database) -> BatchPolicy:
    raw = db.scalar("SELECT value FROM studio_kv WHERE key = ?", [POLICY_KEY])
    return BatchPolicy(**json.loads(raw)) if raw else BatchPolicy()


def save_policy(db: Database, policy: BatchPolicy, user_id: int | None = None) -> None:
    from dataclasses import asdict

    db.write(
        lambda cur: cur.execute(
            "INSERT OR REPLACE INTO studio_kv (key, value, updated_by, updated_at) VALUES (?, ?, ?, current_timestamp)",
            [POLICY_KEY, json.dumps(asdict(policy)), user_id],
        )
    )


# ----------------------------------------------------------------------------- sources
# One query per kind: the columns after (id, user_id, created_at) are the contribution's content.
# ``{where}`` is filled with the anti-join (collect) or an id filter (re-reading content to verify).
_SOURCES: dict[str, tuple[str, str]] = {
    "preferences": (
        "vote",
        """
        SELECT p.id, p.labeler_id AS user_id, p.created_at, p.source, p.outcome, p.prompt_id,
               p.candidate_a, p.candidate_b
        FROM preferences p
        WHERE p.labeler_id IS NOT NULL AND p.retracted_at IS NULL AND p.redacted_at IS NULL
          AND p.source NOT LIKE 'import%' AND p.source <> 'judge' AND {where}""",
    ),
    "ratings": (
        "rating",
        """
        SELECT r.id, r.user_id, r.created_at, r.candidate_id, r.aspect, r.score
        FROM ratings r LEFT JOIN preferences p ON p.id = r.preference_id
        WHERE r.user_id IS NOT NULL AND p.retracted_at IS NULL AND p.redacted_at IS NULL AND {where}""",
    ),
    "gold_answers": (
        "gold_edit",
        """
        SELECT g.id, g.user_id, g.created_at, g.candidate_id, sha256(g.text) AS text_sha256
        FROM gold_answers g LEFT JOIN preferences p ON p.id = g.preference_id
        WHERE g.user_id IS NOT NULL AND p.retracted_at IS NULL AND p.redacted_at IS NULL AND {where}""",
    ),
    "jobs": (
        "training",
        """
        SELECT j.id, j.created_by AS user_id, j.finished_at AS created_at, j.algorithm,
               epoch(j.finished_at) - epoch(j.started_at) AS compute_seconds
        FROM jobs j
        WHERE j.status = 'succeeded' AND j.created_by IS NOT NULL AND j.finished_at IS NOT NULL AND {where}""",
    ),
    "audit_log": (
        "admin_validation",
        """
        SELECT a.id, a.user_id, a.created_at, a.action, a.target_table, a.target_id
        FROM audit_log a JOIN users u ON u.id = a.user_id
        WHERE a.action = 'redact' AND u.role = 'admin' AND {where}""",
    ),
}
_ALIAS = {"preferences": "p", "ratings": "r", "gold_answers": "g", "jobs": "j", "audit_log": "a"}


def canonical_content(table: str, row: dict[str, Any]) -> bytes:
    """The content a contribution's hash commits to: its source row, canonical JSON."""
    content = {"source_table": table, **{k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()}}
    return json.dumps(content, sort_keys=True, separators=(",", ":"), default=str).encode()


def content_hash(salt_hex: str, table: str, row: dict[str, Any]) -> str:
    return "0x" + keccak(bytes.fromhex(salt_hex) + canonical_content(table, row)).hex()


def _vote_weights(db: Database, ids: list[int]) -> dict[int, float]:
    """Share of an item's labelers who gave the same outcome (items labeled by one person: 1.0)."""
    return {
        row["id"]: row["weight"]
        for row in db.query(
            "SELECT id, CASE WHEN n_item > 1 THEN n_same / n_item ELSE 1.0 END AS weight FROM ("
            "  SELECT id, count(*) OVER (PARTITION BY prompt_id) AS n_item,"
            "         count(*) OVER (PARTITION BY prompt_id, outcome) AS n_same FROM preferences"
            "  WHERE prompt_id IS NOT NULL AND retracted_at IS NULL AND redacted_at IS NULL"
            "    AND prompt_id IN (SELECT prompt_id FROM preferences WHERE id IN (SELECT unnest(?))))"
            " WHERE id IN (SELECT unnest(?))",
            [ids, ids],
        )
    }


def _rating_weights(db: Database, ids: list[int]) -> dict[int, float]:
    """1 - distance to the median of the ratings of the same answer and aspect, on the 1-5 scale."""
    return {
        row["id"]: row["weight"]
        for row in db.query(
            "SELECT id, CASE WHEN n > 1 THEN greatest(0.0, 1.0 - abs(score - med) / 4.0) ELSE 1.0 END AS weight FROM ("
            "  SELECT id, score, count(*) OVER w AS n, median(score) OVER w AS med FROM ratings"
            "  WHERE (candidate_id, aspect) IN (SELECT (candidate_id, aspect) FROM ratings WHERE id IN (SELECT"
            " unnest(?)))"
            "  WINDOW w AS (PARTITION BY candidate_id, aspect))"
            " WHERE id IN (SELECT unnest(?))",
            [ids, ids],
        )
    }


def _amount(kind: str, weight: float, row: dict[str, Any]) -> int:
    units = 1
    if kind == "training":
        minutes = max(0.0, float(row.get("compute_seconds") or 0.0)) / 60.0
        units = max(1, int(-(-minutes // TRAINING_MINUTES_PER_UNIT)))
    milli = Decimal(REWARD_MILLI[kind] * units) * Decimal(str(round(weight, 6)))
    return int(milli * TOKEN) // 1000


COLLECT_CHUNK = 250  # source rows read, hashed and inserted per write


def collect_contributions(db: Database, pause: float = 0.0) -> int:
    """Record every not-yet-recorded contribution from the source tables; returns how many were new.

    Reading, weighting and hashing happen outside the database's writer; each chunk is then ONE multi-row
    insert, so labelers' votes never wait behind a long collection (measured: collecting thousands of votes
    inside the writer held every vote for up to a second). Idempotent and safe to run concurrently with
    itself: the table is unique on (source_table, source_id) and a row recorded meanwhile is skipped.
    ``pause`` (seconds between chunks) lets a background caller spread a large backlog out.
    """
    added = 0
    for table, (kind, sql) in _SOURCES.items():
        alias = _ALIAS[table]
        where = (
            f"NOT EXISTS (SELECT 1 FROM contributions c WHERE c.source_table = '{table}' AND c.source_id = {alias}.id)"
        )
        while True:
            rows = db.query(sql.format(where=where) + f" ORDER BY {alias}.id LIMIT {COLLECT_CHUNK}")
            if not rows:
                break
            ids = [row["id"] for row in rows]
            weights = (
                _vote_weights(db, ids)
                if table == "preferences"
                else _rating_weights(db, ids)
                if table == "ratings"
                else {}
            )
            inserts: list[tuple] = []
            for row in rows:
                row_kind = "arena_vote" if kind == "vote" and row.get("source") == "arena" else kind
                weight = float(weights.get(row["id"], 1.0))
                salt = secrets.token_hex(16)
                inserts.append(
                    (
                        row["user_id"],
                        row_kind,
                        table,
                        row["id"],
                        weight,
                        _amount(row_kind, weight, row),
                        salt,
                        content_hash(salt, table, row),
                        row["created_at"],
                    )
                )
            added += db.write(partial(_insert_contributions, rows=inserts))
            if len(rows) < COLLECT_CHUNK:
                break
            time.sleep(pause)
    return added


def _insert_contributions(cur, rows: list[tuple]) -> int:
    """One INSERT from an Arrow table: binding thousands of SQL parameters took ~0.2 s per 2,000 rows inside
    the writer (every vote waited), the Arrow scan takes milliseconds."""
    import pyarrow as pa

    names = ("user_id", "kind", "source_table", "source_id", "weight", "amount", "salt", "content_hash", "created_at")
    columns = {name: [row[i] for row in rows] for i, name in enumerate(names)}
    columns["amount"] = [str(a) for a in columns["amount"]]  # HUGEINT: exact as text, cast in SQL
    new_contributions = pa.table(columns)  # noqa: F841 - scanned by name below (DuckDB replacement scan)
    return len(
        first_column(
            cur.execute(
                "INSERT INTO contributions (user_id, kind, source_table, source_id, weight, amount, salt, content_hash,"
                " created_at) SELECT user_id, kind, source_table, source_id, weight, CAST(amount AS HUGEINT), salt,"
                " content_hash, created_at FROM new_contributions"
                " ON CONFLICT (source_table, source_id) DO NOTHING RETURNING id"
            )
        )
    )


def source_content(db: Database, contribution: dict[str, Any]) -> dict[str, Any] | None:
    """The contribution's source row as it is now (None once retracted or redacted)."""
    table = contribution["source_table"]
    _, sql = _SOURCES[table]
    rows = db.query(sql.format(where=f"{_ALIAS[table]}.id = ?"), [contribution["source_id"]])
    return rows[0] if rows else None


# ----------------------------------------------------------------------------- batches
def hex_to_bytes(value: str) -> bytes:
    return bytes.fromhex(value[2:] if value.startswith("0x") else value)


def subtree(contribs: list[dict[str, Any]]) -> MerkleTree:
    return MerkleTree.of(
        [(c["id"], hex_to_bytes(c["content_hash"]), int(c["amount"])) for c in contribs], CONTRIBUTION_LEAF
    )


def batchable_count(db: Database) -> tuple[int, datetime | None]:
    """(pending contributions of linked wallets, time of the oldest one)."""
    row = db.query(
        "SELECT count(*) AS n, min(c.created_at) AS oldest FROM contributions c"
        " JOIN wallet_links w ON w.user_id = c.user_id WHERE c.batch_id IS NULL"
    )[0]
    return int(row["n"]), row["oldest"]


def due_trigger(db: Database, policy: BatchPolicy, now: datetime | None = None) -> str | None:
    """'count' or 'age' when the policy says a batch is due, else None."""
    n, oldest = batchable_count(db)
    if n == 0:
        return None
    if n >= policy.batch_size:
        return "count"
    now = now or datetime.now(timezone.utc)
    if oldest is not None and now - oldest >= timedelta(minutes=policy.max_age_minutes):
        return "age"
    return None


def make_batch(db: Database, trigger: str) -> int | None:
    """Cut one batch from every pending contribution of a linked wallet; returns its id (None if empty).

    One transaction: the batch row, one leaf per contributor and the contributions' batch_id together.
    """

    def write(cur) -> int | None:
        rows = all_rows(
            cur.execute(
                "SELECT c.id, c.user_id, c.content_hash, c.amount, w.address FROM contributions c"
                " JOIN wallet_links w ON w.user_id = c.user_id WHERE c.batch_id IS NULL ORDER BY c.user_id, c.id"
            )
        )
        if not rows:
            return None
        by_user: dict[int, list[dict]] = defaultdict(list)
        for row in rows:
            by_user[row["user_id"]].append(row)
        leaves = []
        for user_id, contribs in by_user.items():
            amount = sum(int(c["amount"]) for c in contribs)
            leaves.append((user_id, contribs[0]["address"], amount, subtree(contribs).root))
        tree = MerkleTree.of([(addr, amount, sub) for _, addr, amount, sub in leaves], ACCOUNT_LEAF)
        total = sum(amount for _, _, amount, _ in leaves)
        batch_id = one_value(
            cur.execute(
                "INSERT INTO chain_batches (trigger, root, contributors, contributions, total_amount)"
                " VALUES (?, ?, ?, ?, ?) RETURNING id",
                [trigger, "0x" + tree.root.hex(), len(leaves), len(rows), total],
            )
        )
        cur.executemany(
            "INSERT INTO batch_leaves (batch_id, user_id, address, amount, subroot) VALUES (?, ?, ?, ?, ?)",
            [[batch_id, uid, addr, amount, "0x" + sub.hex()] for uid, addr, amount, sub in leaves],
        )
        cur.executemany("UPDATE contributions SET batch_id = ? WHERE id = ?", [[batch_id, r["id"]] for r in rows])
        return batch_id

    return db.write(write)


def record_tx(cur, ledger: Ledger, kind: str, args: dict[str, Any], result: TxResult) -> None:
    cur.execute(
        "INSERT INTO chain_txs (chain_key, kind, args, tx_hash, block_number, gas_used) VALUES (?, ?, ?, ?, ?, ?)",
        [ledger.chain_key, kind, json.dumps(args), result.tx_hash, result.block_number, result.gas_used],
    )


def backoff_seconds(policy: BatchPolicy, attempts: int) -> int:
    return min(policy.retry_max_seconds, policy.retry_base_seconds * 2 ** max(0, attempts - 1))


def anchor_batch(db: Database, ledger: Ledger, batch_id: int, policy: BatchPolicy | None = None) -> dict[str, Any]:
    """Anchor one queued batch; on failure it stays queued with the error and a later retry time.

    Never anchors twice: the chain is asked first (a batch whose receipt was lost is found by its
    event), and the contract itself ignores a repeated root for the same batch id.
    """
    policy = policy or load_batch_policy(db)
    found = db.query("SELECT * FROM chain_batches WHERE id = ?", [batch_id])
    if not found:
        raise NotFound(f"Batch {batch_id} does not exist", hint="pick a batch from the Wallet page")
    batch = found[0]
    if batch["status"] == "anchored":
        return batch
    root = hex_to_bytes(batch["root"])
    try:
        on_chain = ledger.root_of(batch_id)
        if on_chain == root:
            result, sent = ledger.anchor_event(batch_id), False
            if result is None:
                raise ChainUnavailable(
                    f"Batch {batch_id} is anchored but its event is not visible yet", hint="retried shortly"
                )
        elif on_chain is not None:
            raise ChainError(
                f"Batch id {batch_id} is already anchored on this contract with another root",
                hint="this contract was used by another studio; point STUDIO_CHAIN_CONTRACT at your own",
                code="chain_conflict",
            )
        else:
            result, sent = ledger.anchor(batch_id, root, batch["contributors"], int(batch["total_amount"])), True
    except ChainError as exc:
        last_error = f"[{exc.code}] {exc.message}"

        def fail(cur):
            attempts = batch["attempts"] + 1
            cur.execute(
                "UPDATE chain_batches SET attempts = ?, last_error = ?,"
                " next_attempt_at = current_timestamp + to_seconds(?) WHERE id = ?",
                [attempts, last_error, backoff_seconds(policy, attempts), batch_id],
            )

        db.write(fail)
        raise

    def done(cur):
        if sent:
            record_tx(
                cur,
                ledger,
                "anchor",
                {
                    "batch_id": batch_id,
                    "root": batch["root"],
                    "contributors": batch["contributors"],
                    "total_amount": str(batch["total_amount"]),
                },
                result,
            )
        cur.execute(
            "UPDATE chain_batches SET status = 'anchored', attempts = attempts + 1, last_error = NULL,"
            " chain_id = ?, contract = ?, tx_hash = ?, block_number = ?, gas_used = ?,"
            " anchored_at = current_timestamp WHERE id = ?",
            [ledger.chain_id, ledger.address, result.tx_hash, result.block_number, result.gas_used, batch_id],
        )

    db.write(done)
    return db.query("SELECT * FROM chain_batches WHERE id = ?", [batch_id])[0]


def anchor_due(
    db: Database, ledger: Ledger, policy: BatchPolicy | None = None, include_not_due: bool = False
) -> list[int]:
    """Anchor every queued batch whose retry time has come (or all queued ones); returns anchored ids.

    Stops at the first unreachable-RPC failure: the later batches would fail the same way.
    """
    policy = policy or load_batch_policy(db)
    sql = "SELECT id FROM chain_batches WHERE status = 'queued'"
    if not include_not_due:
        sql += " AND next_attempt_at <= current_timestamp"
    anchored = []
    for row in db.query(sql + " ORDER BY id"):
        try:
            anchor_batch(db, ledger, row["id"], policy)
            anchored.append(row["id"])
        except ChainUnavailable:
            break
        except ChainError:
            continue
    return anchored
