"""Shared setup for the chain tests: a real DuckDB with labels from three people, two wallets linked."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from eth_account import Account
from eth_account.messages import encode_defunct

from core.chain.wallet import issue_challenge, link_wallet
from core.labeling.identity import User, ensure_user
from storage.db import Database


def sign(message: str, key: bytes) -> str:
    return Account.sign_message(encode_defunct(text=message), private_key=key).signature.to_0x_hex()


def link(db: Database, user: User, account) -> str:
    message = issue_challenge(db, user, account.address, domain="studio.test", uri="http://studio.test/", chain_id=1337)
    return link_wallet(db, user, message, sign(message, account.key))


@dataclass
class Labels:
    db: Database
    alice: User
    bob: User
    carol: User
    alice_key: object
    bob_key: object


def seed_labels(data_dir: Path, link_wallets: bool = True) -> Labels:
    """alice and bob vote on the same queued prompts (they disagree once), carol votes without a wallet;
    plus ratings, a gold edit, a finished training job and an admin redaction."""
    db = Database.in_data_dir(data_dir)
    alice, bob = ensure_user(db, "alice", "admin", "test"), ensure_user(db, "bob", "labeler", "test")
    carol = ensure_user(db, "carol", "labeler", "test")
    with db.transaction() as cur:
        for p in (1, 2):
            cur.execute("INSERT INTO prompts (id, text, source) VALUES (?, ?, 'seed')", [p, f"prompt {p}"])
            for c in (2 * p - 1, 2 * p):
                cur.execute("INSERT INTO candidates (id, prompt_id, text) VALUES (?, ?, ?)", [c, p, f"answer {c}"])
        votes = [(alice, 1, "a"), (bob, 1, "a"), (carol, 1, "b"), (alice, 2, "b"), (bob, 2, "a")]
        for user, prompt, outcome in votes:
            cur.execute(
                "INSERT INTO preferences (prompt_id, candidate_a, candidate_b, outcome, labeler_id)"
                " VALUES (?, ?, ?, ?, ?)",
                [prompt, 2 * prompt - 1, 2 * prompt, outcome, user.id],
            )
        cur.execute(
            "INSERT INTO ratings (candidate_id, user_id, aspect, score) VALUES (1, ?, 'helpfulness', 5),"
            " (1, ?, 'helpfulness', 4)",
            [alice.id, bob.id],
        )
        cur.execute("INSERT INTO gold_answers (candidate_id, user_id, text) VALUES (2, ?, 'a better answer')", [bob.id])
        cur.execute(
            "INSERT INTO jobs (algorithm, status, created_by, started_at, finished_at) VALUES"
            " ('dpo', 'succeeded', ?, now() - INTERVAL 25 MINUTE, now())",
            [alice.id],
        )
        cur.execute("INSERT INTO jobs (algorithm, status, created_by) VALUES ('sft', 'failed', ?)", [alice.id])
        cur.execute(
            "INSERT INTO audit_log (user_id, action, target_table, target_id) VALUES (?, 'redact', 'preferences', 99)",
            [alice.id],
        )
    a_key, b_key = Account.create(), Account.create()
    if link_wallets:
        link(db, alice, a_key)
        link(db, bob, b_key)
    return Labels(db, alice, bob, carol, a_key, b_key)
