"""Gas benchmark on the embedded chain: batched Merkle anchoring vs one transaction per contribution.

batched     1,000 contributions (votes) from 10 contributors, each with a linked wallet, collected,
            cut into ONE batch (one leaf per contributor), anchored (one transaction) and claimed by every
            contributor (10 transactions). gas_per_contribution = (anchor gas + all claim gas) / 1,000.
per_record  the seed ONI way: every contribution in its own transaction that stores its hash and mints
            its reward (the contract's ``record``); per_record_gas = mean gas of such a transaction.
gas_ratio = gas_per_contribution / per_record_gas. Target <= 0.02.

Last line: RESULT gas_per_contribution=... per_record_gas=... gas_ratio=...
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from eth_account import Account  # noqa: E402
from eth_account.messages import encode_defunct  # noqa: E402

from core.chain import contributions as cb, proofs  # noqa: E402
from core.chain.local import open_embedded  # noqa: E402
from core.chain.wallet import issue_challenge, link_wallet  # noqa: E402
from core.labeling.identity import ensure_user  # noqa: E402
from storage.db import Database  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contributions", type=int, default=1000)
    parser.add_argument("--contributors", type=int, default=10)
    parser.add_argument(
        "--per-record-sample", type=int, default=1000, help="per-record transactions to send (all 1,000 by default)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Database.in_data_dir(tmp)
        users = []
        for i in range(args.contributors):
            user, key = ensure_user(db, f"labeler{i}", "labeler", "bench"), Account.create()
            message = issue_challenge(db, user, key.address, domain="bench", uri="http://bench/", chain_id=1)
            link_wallet(
                db, user, message, Account.sign_message(encode_defunct(text=message), key.key).signature.to_0x_hex()
            )
            users.append((user, key))
        with db.transaction() as cur:
            cur.executemany(
                "INSERT INTO preferences (outcome, labeler_id) VALUES ('a', ?)",
                [[users[i % len(users)][0].id] for i in range(args.contributions)],
            )
        t0 = time.perf_counter()
        assert cb.collect_contributions(db) == args.contributions
        batch_id = cb.make_batch(db, "cli")
        ledger = open_embedded(db, Path(tmp) / "build")
        cb.anchor_due(db, ledger)
        anchor_gas = db.scalar("SELECT gas_used FROM chain_batches WHERE id = ?", [batch_id])
        claim_gas = [proofs.claim(db, ledger, batch_id, user.id).gas_used for user, _ in users]
        batched_s = time.perf_counter() - t0
        assert all(ledger.balance_of(key.address) > 0 for _, key in users)
        gas_per_contribution = (anchor_gas + sum(claim_gas)) / args.contributions

        contribs = db.query(
            "SELECT c.content_hash, c.amount, w.address FROM contributions c"
            " JOIN wallet_links w ON w.user_id = c.user_id ORDER BY c.id LIMIT ?",
            [args.per_record_sample],
        )
        t0 = time.perf_counter()
        per_record = [
            ledger.record(c["address"], bytes.fromhex(c["content_hash"][2:]), int(c["amount"])).gas_used
            for c in contribs
        ]
        per_record_s = time.perf_counter() - t0
        per_record_gas = statistics.mean(per_record)
        db.close()
    print(
        f"batched: anchor {anchor_gas:,} gas + {len(claim_gas)} claims {sum(claim_gas):,} gas "
        f"for {args.contributions} contributions ({batched_s:.1f}s)"
    )
    print(f"per record: {len(per_record)} transactions, mean {per_record_gas:,.0f} gas ({per_record_s:.1f}s)")
    print(
        f"RESULT gas_per_contribution={gas_per_contribution:.1f} per_record_gas={per_record_gas:.1f} "
        f"gas_ratio={gas_per_contribution / per_record_gas:.4f}"
    )


if __name__ == "__main__":
    main()
