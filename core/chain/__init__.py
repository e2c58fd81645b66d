"""Proof-of-contribute: contributions -> Merkle batches -> roots anchored by a Vyper ledger contract.

Modules: ``contract`` (compile + cache), ``merkle`` (OpenZeppelin StandardMerkleTree), ``ledger``
(web3 client for any JSON-RPC endpoint), ``local`` (embedded py-evm chain rebuilt from the DB),
``contributions`` (collect, weigh, batch, anchor with retry), ``proofs`` (a contribution's proof, its
verification against the chain, the claim), ``views`` (what a contributor
and an admin read back: contributions, amounts, claimable batches), ``wallet`` (EIP-4361 link),
``service`` (the background batcher), ``public`` (reports anyone can check), ``errors`` (the package's errors,
each with a code and a hint) and ``__main__`` (the ``launch.py chain deploy|status`` CLI).

Independent of the labeling loop's packages: contributions are derived from the tables they write.
"""
