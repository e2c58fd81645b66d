"""Proofs and claims: tie one contribution to an anchored batch root, check it against the chain, pay it out.

Why it looks like this:
- A proof has two levels (see :mod:`core.chain.merkle`): the contribution's leaf up to its contributor's
  sub-root, then the contributor's leaf up to the batch root. :class:`Proof` carries both, so anyone can
  recompute the root without the server.
- Every proof is rebuilt from the database and checked against the stored root first: altered rows give a
  ProofError, never a proof that would fail on chain.
- :func:`verify_contribution` checks against the root READ FROM THE CHAIN, not the database's copy.
- A claim pays the contributor's leaf once; the transaction is recorded with the same writer as anchoring
  (:func:`core.chain.contributions.record_tx`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from core.chain import contributions as cb
from core.chain.errors import ChainError, ProofError
from core.chain.ledger import Ledger, TxResult
from core.chain.merkle import ACCOUNT_LEAF, CONTRIBUTION_LEAF, MerkleTree, leaf_hash, process_proof
from core.errors import NotFound, ValidationError
from storage.db import Database


@dataclass(frozen=True)
class Proof:
    """Everything needed to check one contribution against a batch root, without the server."""

    contribution_id: int
    batch_id: int
    content_hash: str
    amount: int
    account: str
    account_amount: int
    subroot: str
    subproof: list[str]
    proof: list[str]
    root: str

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["amount"], out["account_amount"] = str(self.amount), str(self.account_amount)
        return out

    def recompute_root(self) -> bytes:
        """Contribution leaf -> sub-root (must equal ``subroot``) -> batch root."""
        leaf = leaf_hash(CONTRIBUTION_LEAF, (self.contribution_id, cb.hex_to_bytes(self.content_hash), self.amount))
        if process_proof(leaf, [cb.hex_to_bytes(p) for p in self.subproof]) != cb.hex_to_bytes(self.subroot):
            return b""
        top = leaf_hash(ACCOUNT_LEAF, (self.account, self.account_amount, cb.hex_to_bytes(self.subroot)))
        return process_proof(top, [cb.hex_to_bytes(p) for p in self.proof])


def _batch_tree(db: Database, batch_id: int) -> tuple[MerkleTree, list[dict[str, Any]]]:
    leaves = db.query("SELECT * FROM batch_leaves WHERE batch_id = ? ORDER BY user_id", [batch_id])
    tree = MerkleTree.of(
        [(r["address"], int(r["amount"]), cb.hex_to_bytes(r["subroot"])) for r in leaves], ACCOUNT_LEAF
    )
    return tree, leaves


def account_proof(db: Database, batch_id: int, user_id: int) -> tuple[dict[str, Any], list[bytes], bytes]:
    """(leaf row, proof, root) of a contributor in a batch, rebuilt from the DB and checked."""
    tree, leaves = _batch_tree(db, batch_id)
    index = next((i for i, r in enumerate(leaves) if r["user_id"] == user_id), None)
    if index is None:
        raise NotFound(f"No leaf of user {user_id} in batch {batch_id}", hint="the contribution is in another batch")
    stored = db.scalar("SELECT root FROM chain_batches WHERE id = ?", [batch_id])
    if "0x" + tree.root.hex() != stored:
        raise ProofError(
            f"Batch {batch_id} rebuilt from the database does not give its stored root",
            hint="the batch rows were altered; do not claim",
        )
    return leaves[index], tree.proof(index), tree.root


def contribution_proof(db: Database, contribution_id: int) -> Proof:
    """The two-level proof of one contribution (contribution -> sub-root -> batch root)."""
    rows = db.query("SELECT * FROM contributions WHERE id = ?", [contribution_id])
    if not rows:
        raise NotFound(f"Contribution {contribution_id} does not exist", hint="pick one from the Wallet page")
    c = rows[0]
    if c["batch_id"] is None:
        raise ProofError(
            f"Contribution {contribution_id} is not in a batch yet",
            hint="link a wallet and wait for (or cut) the next batch",
        )
    siblings = db.query(
        "SELECT id, content_hash, amount FROM contributions WHERE batch_id = ? AND user_id = ? ORDER BY id",
        [c["batch_id"], c["user_id"]],
    )
    sub = cb.subtree(siblings)
    position = next(i for i, s in enumerate(siblings) if s["id"] == contribution_id)
    leaf, proof, root = account_proof(db, c["batch_id"], c["user_id"])
    if "0x" + sub.root.hex() != leaf["subroot"]:
        raise ProofError(
            f"The contributions of batch {c['batch_id']} do not give the stored sub-root",
            hint="the contribution rows were altered",
        )
    return Proof(
        contribution_id,
        c["batch_id"],
        c["content_hash"],
        int(c["amount"]),
        leaf["address"],
        int(leaf["amount"]),
        leaf["subroot"],
        ["0x" + p.hex() for p in sub.proof(position)],
        ["0x" + p.hex() for p in proof],
        "0x" + root.hex(),
    )


@dataclass(frozen=True)
class Verification:
    ok: bool
    contribution_id: int
    batch_id: int | None
    checks: dict[str, bool | None]  # None = could not be checked (e.g. content redacted since)
    detail: str


def verify_contribution(db: Database, ledger: Ledger | None, contribution_id: int) -> Verification:
    """Recompute the proof locally and check it against the root READ FROM THE CHAIN (not the DB)."""
    rows = db.query("SELECT * FROM contributions WHERE id = ?", [contribution_id])
    if not rows:
        raise NotFound(f"Contribution {contribution_id} does not exist", hint="pick one from the Wallet page")
    c = rows[0]
    source = cb.source_content(db, c)
    content_ok = None if source is None else cb.content_hash(c["salt"], c["source_table"], source) == c["content_hash"]
    try:
        proof = contribution_proof(db, contribution_id)
    except ProofError as exc:
        return Verification(False, contribution_id, c["batch_id"], {"content": content_ok}, exc.message)
    recomputed = proof.recompute_root()
    checks: dict[str, bool | None] = {
        "content": content_ok,
        "proof_to_stored_root": recomputed == cb.hex_to_bytes(proof.root),
    }
    if ledger is None:
        return Verification(False, contribution_id, proof.batch_id, checks, "the chain is not reachable")
    on_chain = ledger.root_of(proof.batch_id)
    checks["root_on_chain"] = on_chain is not None and on_chain == recomputed
    checks["contract_verify"] = ledger.verify_leaf(
        proof.batch_id,
        proof.account,
        proof.account_amount,
        cb.hex_to_bytes(proof.subroot),
        [cb.hex_to_bytes(p) for p in proof.proof],
    )
    ok = all(v is not False for v in checks.values()) and bool(checks["root_on_chain"])
    detail = (
        f"batch {proof.batch_id}: root {('0x' + on_chain.hex()) if on_chain else 'not anchored'} on chain "
        f"{ledger.chain_id}" + ("" if content_ok is not None else "; content redacted since (hash kept)")
    )
    return Verification(ok, contribution_id, proof.batch_id, checks, detail)


def claim(db: Database, ledger: Ledger, batch_id: int, user_id: int) -> TxResult:
    """Relay the contributor's claim for one batch (tokens go to the leaf's address). Once per leaf."""
    status = db.scalar("SELECT status FROM chain_batches WHERE id = ?", [batch_id])
    if status != "anchored":
        raise ValidationError(f"Batch {batch_id} is not anchored yet", hint="claims open once the root is on chain")
    leaf, proof, _ = account_proof(db, batch_id, user_id)
    if leaf["claim_tx"]:
        raise ChainError(
            f"Batch {batch_id} was already claimed in {leaf['claim_tx']}",
            hint="each batch pays out once",
            code="already_claimed",
        )
    subroot = cb.hex_to_bytes(leaf["subroot"])
    result = ledger.claim(batch_id, leaf["address"], int(leaf["amount"]), subroot, proof)
    args = {
        "batch_id": batch_id,
        "account": leaf["address"],
        "amount": str(leaf["amount"]),
        "subroot": leaf["subroot"],
        "proof": ["0x" + p.hex() for p in proof],
    }

    def done(cur):
        cb.record_tx(cur, ledger, "claim", args, result)
        cur.execute(
            "UPDATE batch_leaves SET claim_tx = ?, claim_block = ?, claimed_at = current_timestamp"
            " WHERE batch_id = ? AND user_id = ?",
            [result.tx_hash, result.block_number, batch_id, user_id],
        )

    db.write(done)
    return result
