"""Errors of the chain package: each with a stable code and a hint (see core/errors.py)."""

from __future__ import annotations

from core.errors import StudioError


class ChainError(StudioError):
    """The ledger could not be compiled, deployed, reached or used."""

    code = "chain_error"
    http_status = 503


class ChainUnavailable(ChainError):
    """The JSON-RPC endpoint is down or too slow; queued batches are retried later."""

    code = "chain_unavailable"


class WalletLinkError(StudioError):
    """A wallet link message or signature was refused (wrong nonce, expired, other address...)."""

    code = "wallet_link_refused"
    http_status = 403


class ProofError(StudioError):
    """A contribution cannot be proven (not anchored yet, unknown, or the proof does not match)."""

    code = "proof_invalid"
    http_status = 409
