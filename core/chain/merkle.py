"""Merkle trees in OpenZeppelin's StandardMerkleTree convention, so any EVM verifier accepts our proofs.

Convention (``@openzeppelin/merkle-tree``, "standard-v1"): a leaf is
``keccak256(keccak256(abi.encode(values...)))`` (double hashing, so a leaf can never be mistaken for an
inner node), leaves are sorted by hash, the tree is a complete binary tree stored in an array with the
leaves at the end, and each inner node hashes its two children in sorted order, so a proof is just the
list of siblings (no left/right flags). This is what snekmate's ``merkle_proof_verification`` and
OpenZeppelin's ``MerkleProof.sol`` verify.

The studio uses two levels: one tree per contributor over their contributions of a batch (leaf
``(uint256 contribution_id, bytes32 content_hash, uint256 amount)``) whose root is the *sub-root*, and
one batch tree with ONE leaf per contributor ``(address account, uint256 amount, bytes32 subroot)``.
A single contribution is then provable with two proofs: contribution -> sub-root -> batch root.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eth_abi import encode
from eth_utils import keccak

from core.errors import ValidationError

CONTRIBUTION_LEAF = ("uint256", "bytes32", "uint256")
ACCOUNT_LEAF = ("address", "uint256", "bytes32")


def leaf_hash(types: Sequence[str], values: Sequence[Any]) -> bytes:
    """keccak256(keccak256(abi.encode(values))): the StandardMerkleTree leaf."""
    return keccak(keccak(encode(list(types), list(values))))


def hash_pair(a: bytes, b: bytes) -> bytes:
    """Inner node: keccak256 of the two children concatenated in ascending order."""
    return keccak(a + b) if a < b else keccak(b + a)


def process_proof(leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root a leaf and its proof lead to (what the contract computes)."""
    node = leaf
    for sibling in proof:
        node = hash_pair(node, sibling)
    return node


def verify(root: bytes, leaf: bytes, proof: Sequence[bytes]) -> bool:
    return process_proof(leaf, proof) == root


@dataclass
class MerkleTree:
    """A StandardMerkleTree over ``values`` encoded as ``types``. ``tree[0]`` is the root."""

    types: tuple[str, ...]
    values: list[tuple]
    tree: list[bytes]
    index_of_value: list[int]  # tree index of values[i]

    @classmethod
    def of(cls, values: Sequence[Sequence[Any]], types: Sequence[str]) -> MerkleTree:
        if not values:
            raise ValidationError("A Merkle tree needs at least one leaf", hint="batch at least one contribution")
        hashed = [(leaf_hash(types, v), i) for i, v in enumerate(values)]
        hashed.sort(key=lambda item: item[0])
        if any(hashed[k][0] == hashed[k + 1][0] for k in range(len(hashed) - 1)):
            raise ValidationError("Two Merkle leaves are identical", hint="leaves must be unique")
        n = len(hashed)
        tree: list[bytes] = [b""] * (2 * n - 1)
        index_of_value = [0] * n
        for position, (leaf, value_index) in enumerate(hashed):
            tree[len(tree) - 1 - position] = leaf
            index_of_value[value_index] = len(tree) - 1 - position
        for i in range(len(tree) - 1 - n, -1, -1):
            tree[i] = hash_pair(tree[2 * i + 1], tree[2 * i + 2])
        return cls(tuple(types), [tuple(v) for v in values], tree, index_of_value)

    @property
    def root(self) -> bytes:
        return self.tree[0]

    def leaf(self, value_index: int) -> bytes:
        return self.tree[self.index_of_value[value_index]]

    def proof(self, value_index: int) -> list[bytes]:
        """Sibling hashes from the leaf of ``values[value_index]`` up to the root."""
        i = self.index_of_value[value_index]
        path = []
        while i > 0:
            path.append(self.tree[i + 1] if i % 2 == 1 else self.tree[i - 1])
            i = (i - 1) // 2
        return path
