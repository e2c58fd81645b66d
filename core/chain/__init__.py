"""Proof-of-contribute: contributions -> Merkle batches -> roots anchored by a Vyper ledger contract.

Modules: ``contract`` (compile + cache), ``merkle`` (OpenZeppelin StandardMerkleTree), ``ledger``
(web3 client for any JSON-RPC endpoint), ``local`` (embedded py-evm chain rebuilt from the DB),
``contributions`` (collect, weigh, batch, anchor with retry, claim, verify), ``wallet`` (EIP-4361 link).
"""
