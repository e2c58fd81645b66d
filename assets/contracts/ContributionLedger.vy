# pragma version ~=0.4.3
"""
@title RLHF Studio contribution ledger
@notice The operator anchors one Merkle root per batch of contributions (once per batch id); each
        contributor claims the batch's reward tokens (ERC-20, minted on claim) with a Merkle proof, once.
        Leaves follow OpenZeppelin's StandardMerkleTree convention: keccak256(keccak256(abi.encode(
        address account, uint256 amount, bytes32 subroot))), pairs hashed sorted. The sub-root commits
        to the contributor's individual contributions of the batch (salted hashes, no raw content).
@dev Built from snekmate's audited modules: ERC-20 (minting role held by this contract's deployer and
     used only from `claim` / `record`), ownable, and Merkle proof verification.
"""

from snekmate.auth import ownable
from snekmate.tokens import erc20
from snekmate.utils import merkle_proof_verification as merkle

initializes: ownable
initializes: erc20[ownable := ownable]

exports: (
    erc20.transfer,
    erc20.approve,
    erc20.transferFrom,
    erc20.balanceOf,
    erc20.totalSupply,
    erc20.allowance,
    erc20.name,
    erc20.symbol,
    erc20.decimals,
    erc20.owner,
)

MAX_PROOF: constant(uint256) = 32

event BatchAnchored:
    batch_id: indexed(uint256)
    root: bytes32
    contributors: uint256
    total_amount: uint256

event Claimed:
    batch_id: indexed(uint256)
    account: indexed(address)
    amount: uint256

event Recorded:
    account: indexed(address)
    content_hash: bytes32
    amount: uint256

roots: public(HashMap[uint256, bytes32])
batch_totals: public(HashMap[uint256, uint256])
claimed: public(HashMap[uint256, HashMap[address, bool]])
records: public(HashMap[bytes32, address])


@deploy
def __init__():
    ownable.__init__()
    erc20.__init__("RLHF Studio Contribution", "RLHF", 18, "RLHF Studio", "1")


@external
def anchor(batch_id: uint256, root: bytes32, contributors: uint256, total_amount: uint256):
    """
    @notice Anchor a batch root. Idempotent: the same root again is a no-op (no second event), another
            root for an anchored batch id reverts.
    """
    ownable._check_owner()
    assert root != empty(bytes32), "ledger: empty root"
    existing: bytes32 = self.roots[batch_id]
    if existing == root:
        return
    assert existing == empty(bytes32), "ledger: batch already anchored"
    self.roots[batch_id] = root
    self.batch_totals[batch_id] = total_amount
    log BatchAnchored(batch_id=batch_id, root=root, contributors=contributors, total_amount=total_amount)


@internal
@pure
def _leaf(account: address, amount: uint256, subroot: bytes32) -> bytes32:
    return keccak256(keccak256(abi_encode(account, amount, subroot)))


@external
@view
def verify(batch_id: uint256, account: address, amount: uint256, subroot: bytes32,
           proof: DynArray[bytes32, MAX_PROOF]) -> bool:
    """@notice True when (account, amount, subroot) is a leaf of the anchored root of `batch_id`."""
    root: bytes32 = self.roots[batch_id]
    if root == empty(bytes32):
        return False
    return merkle._verify(proof, root, self._leaf(account, amount, subroot))


@external
def claim(batch_id: uint256, account: address, amount: uint256, subroot: bytes32,
          proof: DynArray[bytes32, MAX_PROOF]):
    """
    @notice Mint `amount` tokens to `account` for its leaf in batch `batch_id`. Anyone may submit the
            claim (the tokens always go to the leaf's account); each leaf pays out once.
    """
    root: bytes32 = self.roots[batch_id]
    assert root != empty(bytes32), "ledger: unknown batch"
    assert not self.claimed[batch_id][account], "ledger: already claimed"
    assert merkle._verify(proof, root, self._leaf(account, amount, subroot)), "ledger: invalid proof"
    self.claimed[batch_id][account] = True
    erc20._mint(account, amount)
    log Claimed(batch_id=batch_id, account=account, amount=amount)


@external
def record(account: address, content_hash: bytes32, amount: uint256):
    """
    @notice The per-contribution way (store one hash and mint, one transaction each), kept only so the
            gas benchmark can compare it with batched anchoring.
    """
    ownable._check_owner()
    assert self.records[content_hash] == empty(address), "ledger: already recorded"
    self.records[content_hash] = account
    erc20._mint(account, amount)
    log Recorded(account=account, content_hash=content_hash, amount=amount)
