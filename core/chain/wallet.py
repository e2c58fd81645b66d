"""Link a wallet to an account by signing a server-issued EIP-4361 ("Sign-In with Ethereum") message.

The message follows EIP-4361's grammar exactly (the ``siwe`` reference implementation parses and verifies it in
the tests), so wallets that recognise Sign-In with Ethereum show it as such.

The server writes the message (domain, address, statement naming the studio user, URI, chain id, a
single-use random nonce, issue and expiry times) and keeps it; the wallet signs it with EIP-191
``personal_sign``; :func:`link_wallet` accepts the link only if the text is exactly the one issued for
this user, unused and unexpired, and the signature recovers to the message's address. So nobody can
link an address without that address's key, and a signature cannot be replayed.
"""

from __future__ import annotations

import re
import secrets
from datetime import datetime, timedelta, timezone

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils import is_address, to_checksum_address

from core.chain.errors import WalletLinkError
from core.errors import Conflict, ValidationError
from core.labeling.identity import User
from storage.db import Database, one_row

CHALLENGE_TTL = timedelta(minutes=10)
_NONCE = re.compile(r"^Nonce: ([A-Za-z0-9]{8,})$", re.MULTILINE)
# EIP-4361's statement allows RFC 3986 reserved and unreserved characters and spaces only (no quotes, no
# non-ASCII letters): a user name outside that set is named by its account number instead.
_STATEMENT_SAFE = re.compile(r"^[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;= ]+$")


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def issue_challenge(
    db: Database,
    user: User,
    address: str,
    *,
    domain: str,
    uri: str,
    chain_id: int,
    now: datetime | None = None,
    ttl: timedelta = CHALLENGE_TTL,
) -> str:
    """A fresh EIP-4361 message for ``user`` to sign with ``address``; stored with its nonce."""
    if not is_address(address.strip()):
        raise ValidationError(f"{address!r} is not an Ethereum address", hint="paste a 0x... address of 40 hex digits")
    address = to_checksum_address(address.strip())
    now = (now or datetime.now(timezone.utc)).replace(microsecond=0)
    nonce = secrets.token_hex(12)
    who = f"user {user.name}" if _STATEMENT_SAFE.match(user.name) else f"account #{user.id}"
    message = (
        f"{domain} wants you to sign in with your Ethereum account:\n{address}\n\n"
        f"Link this Ethereum account to RLHF Studio {who} to receive contribution rewards.\n\n"
        f"URI: {uri}\nVersion: 1\nChain ID: {chain_id}\nNonce: {nonce}\n"
        f"Issued At: {_iso(now)}\nExpiration Time: {_iso(now + ttl)}"
    )
    db.write(
        lambda cur: cur.execute(
            "INSERT INTO wallet_challenges (nonce, user_id, address, message, issued_at, expires_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [nonce, user.id, address, message, now, now + ttl],
        )
    )
    return message


def link_wallet(db: Database, user: User, message: str, signature: str, now: datetime | None = None) -> str:
    """Verify the signed message and link its address to ``user``; returns the checksummed address."""
    message = message.replace("\r\n", "\n").strip()
    match = _NONCE.search(message)
    if not match:
        raise WalletLinkError("The message has no nonce", hint="sign the exact message the Wallet page issued")
    nonce = match.group(1)
    now = now or datetime.now(timezone.utc)
    try:
        recovered = Account.recover_message(encode_defunct(text=message), signature=signature.strip())
    except Exception:
        raise WalletLinkError(
            "The signature is malformed",
            hint="paste the 0x... signature (65 bytes) your wallet produced for this message",
        ) from None

    def write(cur) -> str:
        row = one_row(
            cur.execute(
                "SELECT user_id, address, message, expires_at, used_at FROM wallet_challenges WHERE nonce = ?", [nonce]
            )
        )
        if row is None or row["user_id"] != user.id:
            raise WalletLinkError("Unknown nonce for this account", hint="ask the Wallet page for a new message")
        address, issued, expires_at, used_at = row["address"], row["message"], row["expires_at"], row["used_at"]
        if issued != message:
            raise WalletLinkError("The message differs from the one issued", hint="sign the issued text unchanged")
        if used_at is not None:
            raise WalletLinkError("This message was already used", hint="each message links once; ask for a new one")
        if now >= expires_at:
            raise WalletLinkError("The message has expired", hint="ask the Wallet page for a new message")
        if recovered != address:
            raise WalletLinkError(
                f"The signature was made by {recovered}, not {address}",
                hint="sign with the wallet whose address is in the message",
            )
        taken = one_row(
            cur.execute("SELECT user_id FROM wallet_links WHERE address = ? AND user_id <> ?", [address, user.id])
        )
        if taken:
            raise Conflict(f"{address} is already linked to another account", hint="use another address")
        cur.execute("UPDATE wallet_challenges SET used_at = ? WHERE nonce = ?", [now, nonce])
        cur.execute("DELETE FROM wallet_links WHERE user_id = ?", [user.id])
        cur.execute(
            "INSERT INTO wallet_links (user_id, address, message, signature) VALUES (?, ?, ?, ?)",
            [user.id, address, message, signature.strip()],
        )
        return address

    return db.write(write)


def linked_address(db: Database, user_id: int) -> str | None:
    return db.scalar("SELECT address FROM wallet_links WHERE user_id = ?", [user_id])


SIGNING_SNIPPET = """\
# Sign the message with any key, without the studio (pip install eth-account):
from eth_account import Account
from eth_account.messages import encode_defunct
message = open("message.txt").read()          # the text the Wallet page issued, unchanged
key = open("my.key").read().strip()            # your private key (stays on your machine)
print(Account.sign_message(encode_defunct(text=message), private_key=key).signature.to_0x_hex())
"""
