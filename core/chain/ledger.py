"""Ledger client: the deployed contract on any EVM JSON-RPC endpoint (web3.py 8), or the embedded chain.

Transactions are signed locally with the operator key and sent raw, so the same code drives the
embedded py-evm chain, anvil and any public network. Every RPC failure becomes ``ChainUnavailable``
(callers keep the work queued and retry), every revert a ``ChainError`` with the contract's reason.

The operator key comes from ``STUDIO_CHAIN_OPERATOR_KEY`` or an encrypted keystore file
(``STUDIO_CHAIN_KEYSTORE`` + ``STUDIO_CHAIN_KEYSTORE_PASSWORD``), read at the moment of use. It is kept
only inside an :class:`Operator`, whose repr shows the address, and it never appears in an error.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from eth_account import Account
from eth_utils import to_checksum_address

from core.chain.contract import CompiledContract
from core.chain.errors import ChainError, ChainUnavailable

T = TypeVar("T")
KEY_ENV = "STUDIO_CHAIN_OPERATOR_KEY"
KEYSTORE_ENV = "STUDIO_CHAIN_KEYSTORE"
KEYSTORE_PASSWORD_ENV = "STUDIO_CHAIN_KEYSTORE_PASSWORD"


class Operator:
    """The account that deploys, anchors and relays claims. Holds the key; never prints it."""

    __slots__ = ("_account",)

    def __init__(self, account: Any) -> None:
        self._account = account

    @property
    def address(self) -> str:
        return self._account.address

    def sign(self, tx: dict[str, Any]) -> bytes:
        return bytes(self._account.sign_transaction(tx).raw_transaction)

    def __repr__(self) -> str:
        return f"Operator({self.address})"

    __str__ = __repr__

    def __reduce__(self):  # never pickled into a cache, a log record or a child process
        raise TypeError("the operator key cannot be serialised")


def operator_from_key(key: str | bytes) -> Operator:
    try:
        return Operator(Account.from_key(key))
    except Exception:  # the exception text could echo the key: replace it entirely
        raise ChainError(
            "The operator key is not a valid secp256k1 private key",
            hint=f"set {KEY_ENV} to a 0x-prefixed 32-byte hex key",
        ) from None


def load_operator(env: Mapping[str, str] | None = None) -> Operator:
    """The operator from the environment: a raw key, or an encrypted keystore file and its password."""
    env = os.environ if env is None else env
    if env.get(KEY_ENV):
        return operator_from_key(env[KEY_ENV].strip())
    keystore = env.get(KEYSTORE_ENV)
    if keystore:
        path = Path(keystore).expanduser()
        if not path.is_file():
            raise ChainError(
                f"The operator keystore {path} does not exist", hint=f"set {KEYSTORE_ENV} to a keystore file"
            )
        if KEYSTORE_PASSWORD_ENV not in env:
            raise ChainError(
                "The operator keystore needs a password",
                hint=f"set {KEYSTORE_PASSWORD_ENV} in the server's environment",
            )
        try:
            key = Account.decrypt(json.loads(path.read_text()), env[KEYSTORE_PASSWORD_ENV])
        except Exception:
            raise ChainError(
                f"Cannot decrypt the operator keystore {path}", hint="check the keystore file and its password"
            ) from None
        return operator_from_key(key)
    raise ChainError(
        "No operator key for the external chain", hint=f"set {KEY_ENV}, or {KEYSTORE_ENV} and {KEYSTORE_PASSWORD_ENV}"
    )


@dataclass(frozen=True)
class TxResult:
    tx_hash: str
    block_number: int
    gas_used: int


def _hex(value: bytes | str) -> str:
    return value if isinstance(value, str) else "0x" + bytes(value).hex()


def _is_revert(exc: Exception) -> bool:
    from web3.exceptions import ContractLogicError

    if isinstance(exc, ContractLogicError):
        return True
    try:
        from eth_tester.exceptions import TransactionFailed
    except ImportError:  # pragma: no cover - eth-tester is a dependency
        return False
    return isinstance(exc, TransactionFailed)


def _revert_reason(exc: Exception) -> str:
    text = getattr(exc, "message", None) or str(exc)
    return text.replace("execution reverted: ", "").strip() or "reverted"


class Ledger:
    """The ledger contract on one chain, used by the operator."""

    def __init__(
        self,
        w3: Any,
        compiled: CompiledContract,
        address: str,
        operator: Operator,
        fixed_fees: dict[str, int] | None = None,
        embedded: bool = False,
    ) -> None:
        self.w3 = w3
        self.compiled = compiled
        self.address = to_checksum_address(address)
        self.contract = w3.eth.contract(address=self.address, abi=compiled.abi)
        self.operator = operator
        self.fixed_fees = fixed_fees
        self.embedded = embedded
        # One transaction at a time from this process: nonces stay in order, and the in-process
        # py-evm chain is not safe to use from several threads at once (reads take the lock too).
        self._lock = threading.RLock()
        self.chain_id = self._rpc(lambda: w3.eth.chain_id)

    @property
    def chain_key(self) -> str:
        return f"{self.chain_id}:{self.address}"

    # -- plumbing ----------------------------------------------------------------------------------
    @staticmethod
    def _rpc(call: Callable[[], T]) -> T:
        """Run one RPC call: connection trouble -> ChainUnavailable, a revert -> ChainError."""
        try:
            return call()
        except ChainError:
            raise
        except Exception as exc:  # web3, requests, aiohttp, socket and eth-tester all raise their own
            if _is_revert(exc):
                raise ChainError(
                    f"The ledger contract refused: {_revert_reason(exc)}",
                    hint="nothing was changed on chain",
                    code="chain_reverted",
                ) from None
            raise ChainUnavailable(
                f"The chain RPC failed: {type(exc).__name__}: {str(exc)[:200]}",
                hint="the work stays queued and is retried with backoff",
            ) from None

    @classmethod
    def deploy(
        cls,
        w3: Any,
        compiled: CompiledContract,
        operator: Operator,
        fixed_fees: dict[str, int] | None = None,
        embedded: bool = False,
    ) -> Ledger:
        """Deploy a fresh ledger owned by the operator."""
        factory = w3.eth.contract(abi=compiled.abi, bytecode=compiled.bytecode)
        tx = cls._rpc(
            lambda: factory.constructor().build_transaction(cls._tx_params(w3, operator, fixed_fees, gas=3_000_000))
        )
        receipt = cls._send(w3, operator, tx)
        return cls(w3, compiled, receipt["contractAddress"], operator, fixed_fees, embedded)

    @staticmethod
    def _tx_params(w3: Any, operator: Operator, fixed_fees: dict[str, int] | None, gas: int | None = None) -> dict:
        params: dict[str, Any] = {
            "from": operator.address,
            "chainId": w3.eth.chain_id,
            "nonce": w3.eth.get_transaction_count(operator.address, "pending"),
        }
        if gas is not None:
            params["gas"] = gas
        if fixed_fees:
            params.update(fixed_fees)
        return params

    @classmethod
    def _send(cls, w3: Any, operator: Operator, tx: dict[str, Any], timeout: float = 60) -> Any:
        raw = operator.sign(tx)
        tx_hash = cls._rpc(lambda: w3.eth.send_raw_transaction(raw))
        receipt = cls._rpc(lambda: w3.eth.wait_for_transaction_receipt(tx_hash, timeout=timeout, poll_latency=0.1))
        if receipt["status"] != 1:
            raise ChainError(
                f"Transaction {_hex(tx_hash)} reverted", hint="nothing was changed on chain", code="chain_reverted"
            )
        return receipt

    def _read(self, call: Callable[[], T]) -> T:
        with self._lock:
            return self._rpc(call)

    def _transact(self, fn: Any) -> TxResult:
        with self._lock:
            # Simulate first: a revert is reported with its reason and costs no gas.
            self._rpc(lambda: fn.call({"from": self.operator.address}))
            tx = self._rpc(lambda: fn.build_transaction(self._tx_params(self.w3, self.operator, self.fixed_fees)))
            receipt = self._send(self.w3, self.operator, tx)
        return TxResult(_hex(receipt["transactionHash"]), int(receipt["blockNumber"]), int(receipt["gasUsed"]))

    # -- writes ------------------------------------------------------------------------------------
    def anchor(self, batch_id: int, root: bytes, contributors: int, total_amount: int) -> TxResult:
        return self._transact(self.contract.functions.anchor(batch_id, root, contributors, total_amount))

    def claim(self, batch_id: int, account: str, amount: int, subroot: bytes, proof: Sequence[bytes]) -> TxResult:
        return self._transact(
            self.contract.functions.claim(batch_id, to_checksum_address(account), amount, subroot, list(proof))
        )

    def record(self, account: str, content_hash: bytes, amount: int) -> TxResult:
        """One contribution per transaction (only for the gas comparison benchmark)."""
        return self._transact(self.contract.functions.record(to_checksum_address(account), content_hash, amount))

    # -- reads -------------------------------------------------------------------------------------
    def root_of(self, batch_id: int) -> bytes | None:
        root = bytes(self._read(lambda: self.contract.functions.roots(batch_id).call()))
        return None if root == bytes(32) else root

    def is_claimed(self, batch_id: int, account: str) -> bool:
        return bool(self._read(lambda: self.contract.functions.claimed(batch_id, to_checksum_address(account)).call()))

    def balance_of(self, account: str) -> int:
        return int(self._read(lambda: self.contract.functions.balanceOf(to_checksum_address(account)).call()))

    def verify_leaf(self, batch_id: int, account: str, amount: int, subroot: bytes, proof: Sequence[bytes]) -> bool:
        """The contract's own check of a contributor leaf against the anchored root."""
        return bool(
            self._read(
                lambda: self.contract.functions.verify(
                    batch_id, to_checksum_address(account), amount, subroot, list(proof)
                ).call()
            )
        )

    def operator_balance(self) -> int:
        return int(self._read(lambda: self.w3.eth.get_balance(self.operator.address)))

    def anchor_event(self, batch_id: int) -> TxResult | None:
        """Where batch ``batch_id`` was anchored (after a lost receipt, the chain still knows)."""
        logs = self._read(
            lambda: self.contract.events.BatchAnchored().get_logs(from_block=0, argument_filters={"batch_id": batch_id})
        )
        if not logs:
            return None
        log = logs[0]
        receipt = self._read(lambda: self.w3.eth.get_transaction_receipt(log["transactionHash"]))
        return TxResult(_hex(log["transactionHash"]), int(log["blockNumber"]), int(receipt["gasUsed"]))


def connect_rpc(
    url: str,
    compiled: CompiledContract,
    address: str,
    operator: Operator,
    chain_id: int | None = None,
    timeout: float = 10.0,
) -> Ledger:
    """The ledger on an external JSON-RPC endpoint; checks the chain id and that code is deployed."""
    from web3 import HTTPProvider, Web3

    w3 = Web3(HTTPProvider(url, request_kwargs={"timeout": timeout}))
    ledger = Ledger(w3, compiled, address, operator)
    if chain_id is not None and ledger.chain_id != chain_id:
        raise ChainError(
            f"The RPC endpoint serves chain {ledger.chain_id}, not {chain_id}",
            hint="check STUDIO_CHAIN_ID and STUDIO_CHAIN_RPC_URL",
        )
    if not Ledger._rpc(lambda: w3.eth.get_code(ledger.address)):
        raise ChainError(
            f"No contract at {ledger.address} on chain {ledger.chain_id}",
            hint="deploy it with `launch.py chain deploy` and set STUDIO_CHAIN_CONTRACT",
        )
    return ledger
