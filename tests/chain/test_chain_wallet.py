"""Wallet linking: only the key holder links its address, with a fresh, unexpired, single-use message."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from eth_account import Account

from core.chain.errors import WalletLinkError
from core.chain.wallet import issue_challenge, link_wallet, linked_address
from core.errors import Conflict, ValidationError
from core.labeling.identity import ensure_user
from tests.support.chain import sign


def _challenge(db, user, address, **kw):
    return issue_challenge(
        db, user, address, domain="studio.test", uri="http://studio.test/wallet", chain_id=31337, **kw
    )


def test_message_is_eip4361_and_links_once(db):
    user, key = ensure_user(db, "ada", "labeler", "test"), Account.create()
    message = _challenge(db, user, key.address.lower())
    lines = message.splitlines()
    assert lines[0] == "studio.test wants you to sign in with your Ethereum account:"
    assert lines[1] == key.address  # checksummed
    for field in ("URI: http://studio.test/wallet", "Version: 1", "Chain ID: 31337"):
        assert field in lines
    assert any(line.startswith("Nonce: ") for line in lines)
    assert any(line.startswith("Expiration Time: ") for line in lines)
    signature = sign(message, key.key)
    assert link_wallet(db, user, message, signature) == key.address
    assert linked_address(db, user.id) == key.address
    with pytest.raises(WalletLinkError, match="already used"):  # nonce is single-use
        link_wallet(db, user, message, signature)


@pytest.mark.parametrize("name", ["ada", "Zoë Ünal", 'bob "the builder"', "o'neil-2"])
def test_the_message_parses_and_verifies_with_the_siwe_reference_implementation(db, name):
    from siwe import SiweMessage  # installed without its web3<8 pin (Makefile): only its parser is used

    user, key = ensure_user(db, name, "labeler", "test"), Account.create()
    message = _challenge(db, user, key.address)
    parsed = SiweMessage.from_message(message)  # raises on anything outside EIP-4361's ABNF grammar
    assert (parsed.domain, parsed.address, parsed.chain_id) == ("studio.test", key.address, 31337)
    assert parsed.uri == "http://studio.test/wallet" and parsed.version == "1"
    assert parsed.statement.startswith("Link this Ethereum account to RLHF Studio")
    assert (name in parsed.statement) == all(ord(c) < 128 and c != '"' for c in name)
    parsed.verify(sign(message, key.key))  # the signature checks out by the reference's own rules
    assert link_wallet(db, user, message, sign(message, key.key)) == key.address


def test_refused_links(db):
    ada, eve = ensure_user(db, "ada", "labeler", "test"), ensure_user(db, "eve", "labeler", "test")
    ada_key, eve_key = Account.create(), Account.create()

    # another address's signature: eve signs a message naming ada's address
    message = _challenge(db, eve, ada_key.address)
    with pytest.raises(WalletLinkError, match="not " + ada_key.address):
        link_wallet(db, eve, message, sign(message, eve_key.key))

    # wrong nonce: a message with a nonce the server never issued (or altered)
    message = _challenge(db, ada, ada_key.address)
    forged = message.replace("Nonce: ", "Nonce: 00")
    with pytest.raises(WalletLinkError, match="Unknown nonce"):
        link_wallet(db, ada, forged, sign(forged, ada_key.key))
    # a nonce issued to somebody else
    with pytest.raises(WalletLinkError, match="Unknown nonce"):
        link_wallet(db, eve, message, sign(message, ada_key.key))
    # an altered text with the right nonce (e.g. a later expiry)
    altered = message.replace("Chain ID: 31337", "Chain ID: 1")
    with pytest.raises(WalletLinkError, match="differs"):
        link_wallet(db, ada, altered, sign(altered, ada_key.key))

    # expired
    old = _challenge(db, ada, ada_key.address, now=datetime.now(timezone.utc) - timedelta(hours=1))
    with pytest.raises(WalletLinkError, match="expired"):
        link_wallet(db, ada, old, sign(old, ada_key.key))

    with pytest.raises(WalletLinkError, match="malformed"):
        link_wallet(db, ada, message, "0x1234")
    with pytest.raises(ValidationError):
        _challenge(db, ada, "0xnot-an-address")
    assert linked_address(db, ada.id) is None and linked_address(db, eve.id) is None

    # the genuine signature still works, and the address cannot be linked to a second account
    link_wallet(db, ada, message, sign(message, ada_key.key))
    stolen = _challenge(db, eve, ada_key.address)
    with pytest.raises(Conflict):
        link_wallet(db, eve, stolen, sign(stolen, ada_key.key))
