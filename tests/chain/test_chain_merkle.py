"""Merkle trees match OpenZeppelin's StandardMerkleTree; the contract compiles once and is cached."""

from __future__ import annotations

import os
import time

import pytest

from core.chain.contract import compile_ledger
from core.chain.merkle import ACCOUNT_LEAF, CONTRIBUTION_LEAF, MerkleTree, leaf_hash, process_proof, verify
from core.errors import ValidationError

# A tree dumped by @openzeppelin/merkle-tree (StandardMerkleTree.of(values, ["address"]).dump()),
# published in a public repository: tree array and each value's treeIndex.
OZ_VALUES = [
    "0x502F683Bcfc45c9A561612DEF5134b1D6F84E249",
    "0x69e875145bf2C43440bA6828a00B42Aee5FFa15f",
    "0x4D556cD8f34d0Ed80365b3ccb759bb0e52c42C33",
    "0x68F8d65013a578bd43648159E5c033Dc6a63EA37",
]
OZ_TREE = [
    "4a3361a1fcecee8b81b1c25690ed97aa9cccf42ed826fb3f7ceb13471366795f",
    "2243bfd4c93a8aa8fd21e7e557c52ebdb35a609eef60140ac3ff08d5568fa5cd",
    "c2a30a2b7789971e3c9dff630d4e0c55a95841a18b884ea20b2f05c8d44520be",
    "f6eeac672fb859af408ae3b270b11d6796e7a58e7d532ec4e3616047c19bb760",
    "f670de186cb7c104725a305f9149d5562c007cb7fc48e294b2a4db7c845849f9",
    "e48a34534b23bb9966fe0a81b897cd43ba4529463d93a606d5dbc80ba4603e1f",
    "aedead091d86a0169f79751d6fc62e52bc017d2e6fe2174ea392cc43743557aa",
]
OZ_TREE_INDEX = [5, 4, 6, 3]


def test_tree_matches_openzeppelin_dump():
    tree = MerkleTree.of([[v] for v in OZ_VALUES], ["address"])
    assert [node.hex() for node in tree.tree] == OZ_TREE
    assert tree.index_of_value == OZ_TREE_INDEX
    for i in range(len(OZ_VALUES)):
        assert verify(tree.root, tree.leaf(i), tree.proof(i))


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 13])
def test_every_leaf_proves_and_tampering_fails(n):
    values = [(i, bytes([i]) * 32, 10**18 + i) for i in range(n)]
    tree = MerkleTree.of(values, CONTRIBUTION_LEAF)
    for i, value in enumerate(values):
        proof = tree.proof(i)
        assert process_proof(leaf_hash(CONTRIBUTION_LEAF, value), proof) == tree.root
        forged = (value[0], value[1], value[2] + 1)
        assert not verify(tree.root, leaf_hash(CONTRIBUTION_LEAF, forged), proof)
        if proof:
            bad = [bytes(32)] + proof[1:]
            assert not verify(tree.root, tree.leaf(i), bad)


def test_two_level_proof_reaches_the_batch_root():
    alice = [(1, b"\x01" * 32, 5), (2, b"\x02" * 32, 7)]
    sub = MerkleTree.of(alice, CONTRIBUTION_LEAF)
    accounts = [("0x" + "11" * 20, 12, sub.root), ("0x" + "22" * 20, 3, b"\x09" * 32)]
    top = MerkleTree.of(accounts, ACCOUNT_LEAF)
    assert verify(sub.root, sub.leaf(1), sub.proof(1))
    assert verify(top.root, leaf_hash(ACCOUNT_LEAF, accounts[0]), top.proof(0))


def test_empty_or_duplicate_leaves_refused():
    with pytest.raises(ValidationError):
        MerkleTree.of([], ["uint256"])
    with pytest.raises(ValidationError):
        MerkleTree.of([[1], [1]], ["uint256"])


def test_contract_compiles_once_and_rebuilds_when_source_changes(tmp_path):
    source = tmp_path / "ContributionLedger.vy"
    from core.chain.contract import LEDGER_SOURCE

    source.write_text(LEDGER_SOURCE.read_text())
    first = compile_ledger(tmp_path / "cache", source)
    names = {f["name"] for f in first.abi if f["type"] == "function"}
    assert {"anchor", "claim", "verify", "balanceOf", "roots", "claimed"} <= names
    assert first.bytecode.startswith("0x") and len(first.bytecode) > 1000
    cached = list((tmp_path / "cache").iterdir())
    assert len(cached) == 1
    mtime = os.path.getmtime(cached[0])
    time.sleep(0.01)
    again = compile_ledger(tmp_path / "cache", source)
    assert again == first and os.path.getmtime(cached[0]) == mtime
    source.write_text(source.read_text() + "\n# changed\n")
    changed = compile_ledger(tmp_path / "cache", source)
    assert changed.source_hash != first.source_hash
    assert len(list((tmp_path / "cache").iterdir())) == 2
