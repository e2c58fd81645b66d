"""A person links a wallet on the console's Wallet page in a real browser (headless Chromium) with an
injected EIP-1193 wallet: window.ethereum answers personal_sign by signing with a real key (eth_account)."""

from __future__ import annotations

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct

from storage.db import Database
from tests.support import ARTIFACTS
from tests.support.servers import Server

pytestmark = pytest.mark.slow

INJECTED_WALLET = """
window.ethereum = {
  isTestWallet: true,
  request: async ({ method, params }) => {
    if (method === "eth_requestAccounts" || method === "eth_accounts") return [window.__walletAddress];
    if (method === "personal_sign") return await window.__walletSign(params[0], params[1]);
    throw new Error("unsupported method " + method);
  },
};
"""


def test_link_wallet_with_injected_browser_wallet(server: Server, page):
    key = Account.create()
    signed = []

    def wallet_sign(message_hex: str, account: str) -> str:
        assert account.lower() == key.address.lower()
        signed.append(bytes.fromhex(message_hex[2:]).decode())
        return Account.sign_message(encode_defunct(hexstr=message_hex), key.key).signature.to_0x_hex()

    page.expose_function("__walletSign", wallet_sign)
    page.add_init_script(f"window.__walletAddress = '{key.address}';" + INJECTED_WALLET)
    page.goto(server.url + "/wallet")
    field = page.get_by_label("Address to link")
    field.wait_for(timeout=60_000)
    field.fill(key.address)
    field.press("Enter")
    page.get_by_role("button", name="Get the message to sign").click()
    page.get_by_role("button", name="Sign with my browser wallet").click()
    page.wait_for_selector(f"text=Linked address: {key.address}", timeout=60_000)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "console-wallet.png"), full_page=True)
    assert "Traceback" not in page.content()
    assert signed and "wants you to sign in with your Ethereum account" in signed[0]
    server.stop()
    db = Database.in_data_dir(server.data_dir)
    assert db.query("SELECT address FROM wallet_links") == [{"address": key.address}]
    db.close()
