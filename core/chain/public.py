"""JSON-ready reports for external checks (the REST API's ``/api/contributions/{user}`` and
``/api/contributions/{user}/proof/{id}``): everything needed to verify a contribution without the studio.

The salt and the canonical content are included only for the contributor and admins (``with_secret``):
with them anyone can recompute ``content_hash = keccak256(salt || content)``; without them the hash on the
chain reveals nothing about the content.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from core.chain import contributions as cb, proofs, views
from core.chain.wallet import linked_address
from core.errors import NotFound
from storage.db import Database


def _user_id(db: Database, name: str) -> int:
    user_id = db.scalar("SELECT id FROM users WHERE name = ?", [name])
    if user_id is None:
        raise NotFound(f"No user named {name!r}", hint="use the name shown in the labeling app")
    return int(user_id)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, int) and abs(value) >= 2**53:  # token amounts: exact as strings
        return str(value)
    return value


def contributions_report(db: Database, name: str) -> dict[str, Any]:
    """A contributor's linked address, token amounts and contributions with their anchoring status."""
    user_id = _user_id(db, name)
    rows = [{k: _plain(v) for k, v in r.items()} for r in views.contributions_of(db, user_id)]
    for row in rows:
        row["amount"] = str(row["amount"])
    return {
        "user": name,
        "address": linked_address(db, user_id),
        "amounts": {k: str(v) for k, v in views.amounts_of(db, user_id).items()},
        "contributions": rows,
    }


def proof_report(db: Database, name: str, contribution_id: int, with_secret: bool = False) -> dict[str, Any]:
    """The two-level proof of one contribution plus where its batch root is anchored."""
    user_id = _user_id(db, name)
    owner = db.scalar("SELECT user_id FROM contributions WHERE id = ?", [contribution_id])
    if owner != user_id:
        raise NotFound(f"{name} has no contribution {contribution_id}", hint="list them at /api/contributions/{user}")
    proof = proofs.contribution_proof(db, contribution_id).to_dict()
    batch = db.query(
        "SELECT status, chain_id, contract, tx_hash, block_number FROM chain_batches WHERE id = ?", [proof["batch_id"]]
    )[0]
    report: dict[str, Any] = {
        "proof": proof,
        "anchor": batch,
        "leaf_encoding": {
            "contribution": ["uint256", "bytes32", "uint256"],
            "account": ["address", "uint256", "bytes32"],
        },
        "convention": "OpenZeppelin StandardMerkleTree: leaf = keccak256(keccak256(abi.encode(...))), sorted pairs",
    }
    if with_secret:
        c = db.query("SELECT * FROM contributions WHERE id = ?", [contribution_id])[0]
        source = cb.source_content(db, c)
        report["salt"] = c["salt"]
        report["content"] = None if source is None else cb.canonical_content(c["source_table"], source).decode()
    return report
