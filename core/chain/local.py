"""The embedded chain: py-evm through eth-tester, in process, nothing to install or run.

Its state lives in memory, so a restart rebuilds it deterministically from the DB: a fresh genesis
(fixed funded operator account), the same contract deployed by the same account at nonce 0 (same
address), then every transaction the studio ever sent (``chain_txs``) replayed in order with fixed fees.
Same transactions in the same order give the same roots, balances and claims, the same transaction
hashes and the same block numbers; a replayed hash that differs from the recorded one is an error.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from core.chain.contract import compile_ledger
from core.chain.errors import ChainError
from core.chain.ledger import Ledger, operator_from_key
from storage.db import Database

log = logging.getLogger(__name__)
# Fixed fees make every replayed transaction byte-identical to the original (the base fee of an
# eth-tester chain stays far below 10 gwei with one transaction per block).
EMBEDDED_FEES = {"maxFeePerGas": 10 * 10**9, "maxPriorityFeePerGas": 10**9}


def open_embedded(db: Database, cache_dir: Path | str) -> Ledger:
    """Start the embedded chain, deploy the ledger and replay the recorded transactions."""
    from eth_tester import EthereumTester, PyEVMBackend
    from web3 import Web3
    from web3.providers.eth_tester import EthereumTesterProvider

    backend = PyEVMBackend(genesis_state=PyEVMBackend.generate_genesis_state(num_accounts=1))
    w3 = Web3(EthereumTesterProvider(EthereumTester(backend)))
    # A well-known development key funded at genesis: the embedded chain holds no real value.
    operator = operator_from_key(backend.account_keys[0].to_bytes())
    ledger = Ledger.deploy(w3, compile_ledger(cache_dir), operator, fixed_fees=EMBEDDED_FEES, embedded=True)
    replay(db, ledger)
    return ledger


def replay(db: Database, ledger: Ledger) -> int:
    """Re-send every recorded transaction of this chain in order; returns how many."""
    # Chain order is block order (one transaction per block here), whatever order the DB rows were written in.
    rows = db.query(
        "SELECT id, kind, args, tx_hash, block_number FROM chain_txs WHERE chain_key = ? ORDER BY block_number, id",
        [ledger.chain_key],
    )
    for row in rows:
        args = json.loads(row["args"])
        if row["kind"] == "anchor":
            result = ledger.anchor(
                args["batch_id"], bytes.fromhex(args["root"][2:]), args["contributors"], int(args["total_amount"])
            )
        elif row["kind"] == "claim":
            result = ledger.claim(
                args["batch_id"],
                args["account"],
                int(args["amount"]),
                bytes.fromhex(args["subroot"][2:]),
                [bytes.fromhex(p[2:]) for p in args["proof"]],
            )
        else:
            raise ChainError(
                f"Unknown recorded transaction kind {row['kind']!r}", hint="the chain_txs table is damaged"
            )
        if result.tx_hash != row["tx_hash"] or result.block_number != row["block_number"]:
            raise ChainError(
                f"Replaying transaction {row['id']} gave {result.tx_hash} in block "
                f"{result.block_number}, recorded {row['tx_hash']} in block {row['block_number']}",
                hint="the embedded chain is not deterministic any more; report this bug",
            )
    if rows:
        log.info("embedded chain: replayed %d transactions", len(rows))
    return len(rows)
