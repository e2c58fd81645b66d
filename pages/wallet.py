"""Wallet page: link a wallet, see contributions and rewards, claim, verify; admins run the batches."""

from pathlib import Path

import pandas as pd
import streamlit as st

from core.chain import contributions as cb, proofs, views
from core.chain.service import service_for
from core.chain.wallet import SIGNING_SNIPPET, issue_challenge, link_wallet, linked_address
from core.errors import StudioError
from core.studio import current
from pages.common import can, dataclass_form, require_page, shown_errors

studio = current()
user, _ = require_page("wallet")
service = service_for(studio)
db = studio.db
st.title("Wallet")
st.caption(
    "Every accepted contribution (vote, arena vote, rating, gold edit, finished training job, admin "
    "validation) is batched into a Merkle root anchored on an EVM chain; each contributor claims reward "
    "tokens with a proof and can verify any contribution against the root read from the chain."
)

_signer = st.components.v2.component(
    name="wallet_signer",
    html='<button id="sign" type="button">Sign with my browser wallet</button> <span id="status"></span>',
    js=(Path(__file__).resolve().parent / "wallet_signer.js").read_text(),
)


ledger = service.try_ledger()
if ledger is None:
    st.warning(
        f"The chain is not reachable: {service.describe()['error']}. Contributions keep being recorded and "
        "batched; anchoring is retried with backoff.",
        icon=":material/cloud_off:",
    )

# -------------------------------------------------------------------------------------- wallet link
st.subheader("Your wallet")
address = linked_address(db, user.id)
if address:
    st.markdown(f"Linked address: `{address}`")
with st.expander("Link a wallet" if not address else "Link another wallet", expanded=not address):
    new_address = st.text_input("Address to link", key="link-address", placeholder="0x...")
    if st.button("Get the message to sign", key="link-issue"):
        host = st.context.headers.get("host", "localhost")
        with shown_errors():
            st.session_state["link-message"] = issue_challenge(
                db,
                user,
                new_address,
                domain=host,
                uri=f"http://{host}/wallet",
                chain_id=ledger.chain_id if ledger else int(studio.settings.chain_id or 0),
            )
    message = st.session_state.get("link-message")
    if message:
        st.markdown(
            "Sign this message (EIP-4361) with the wallet of that address. It expires in 10 minutes and works once."
        )
        st.code(message, language=None)
        signed = _signer(
            data={"message": message, "address": message.splitlines()[1]}, key="signer", on_signed_change=lambda: None
        )
        signature = (signed.signed or {}).get("signature") if signed is not None else None
        pasted = st.text_input("Or paste the signature (0x..., from any wallet or CLI)", key="link-signature")
        with st.popover("Sign without a browser wallet"):
            st.code(SIGNING_SNIPPET, language="python")
        if signature or st.button("Link this wallet", key="link-submit", disabled=not pasted):
            with shown_errors():
                linked = link_wallet(db, user, message, signature or pasted)
                st.session_state.pop("link-message", None)
                st.success(f"Linked {linked}.", icon=":material/link:")
                st.rerun()

# -------------------------------------------------------------------------------------- contributions
st.subheader("Your contributions")
if st.button("Refresh (record new contributions)", key="collect"):
    cb.collect_contributions(db)
amounts = views.amounts_of(db, user.id)
cols = st.columns(5)
cols[0].metric("Pending", views.tokens(amounts["pending"]), help="recorded, not in a batch yet (needs a linked wallet)")
cols[1].metric("Batched", views.tokens(amounts["batched"]), help="in a batch waiting to be anchored")
cols[2].metric("Claimable", views.tokens(amounts["claimable"]))
cols[3].metric("Claimed", views.tokens(amounts["claimed"]))
balance = None
if ledger and address:
    try:
        balance = ledger.balance_of(address)
    except StudioError:
        pass
cols[4].metric("Token balance", views.tokens(balance) if balance is not None else "—", help="read from the chain")

rows = views.contributions_of(db, user.id)
if not rows:
    st.info("No contributions yet: vote, rate or edit answers in the labeling app.", icon=":material/info:")
else:
    frame = pd.DataFrame(rows)
    st.dataframe(
        frame.pivot_table(index="kind", columns="status", values="id", aggfunc="count", fill_value=0),
        width="stretch",
        placeholder="",
    )
    frame["tokens"] = frame["amount"].map(views.tokens)
    st.dataframe(
        frame[
            [
                "id",
                "kind",
                "status",
                "weight",
                "tokens",
                "batch_id",
                "tx_hash",
                "block_number",
                "claim_tx",
                "content_hash",
                "created_at",
            ]
        ],
        hide_index=True,
        width="stretch",
        placeholder="",
    )

claimable = views.claimable_batches(db, user.id)
if claimable and ledger:
    if st.button(
        f"Claim {views.tokens(sum(int(r['amount']) for r in claimable))} tokens "
        f"({len(claimable)} batch{'es' if len(claimable) > 1 else ''})",
        type="primary",
        key="claim",
    ):
        for row in claimable:
            with shown_errors():
                result = proofs.claim(db, ledger, row["batch_id"], user.id)
                st.success(f"Batch {row['batch_id']} claimed in {result.tx_hash} (block {result.block_number}).")

if rows:
    st.markdown(
        "**Verify a contribution** — recomputes the two-level proof here and checks it against the root "
        "read from the chain."
    )
    anchored = [r["id"] for r in rows if r["status"] == "anchored"]
    choice = st.selectbox(
        "Contribution",
        [r["id"] for r in rows],
        key="verify-id",
        index=[r["id"] for r in rows].index(anchored[0]) if anchored else 0,
    )
    if st.button("Verify", key="verify"):
        with shown_errors():
            result = proofs.verify_contribution(db, ledger, int(choice))
            (st.success if result.ok else st.error)(("Verified: " if result.ok else "Not verified: ") + result.detail)
            st.json(result.checks)
            if result.batch_id is not None:
                with st.expander("Proof (check it yourself with any StandardMerkleTree verifier)"):
                    st.json(proofs.contribution_proof(db, int(choice)).to_dict())

# -------------------------------------------------------------------------------------- admin
if not can(user, "wallet.admin"):
    st.stop()
st.divider()
st.subheader("Batches (admin)")
info = service.describe()
chain_cols = st.columns(4)
chain_cols[0].markdown(f"**Chain**: {info['mode']}" + (f" `{info['rpc_url']}`" if info["rpc_url"] else ""))
chain_cols[1].markdown(f"**Chain id**: {info['chain_id'] or '—'}")
chain_cols[2].markdown(f"**Contract**: `{info['contract'] or '—'}`")
if ledger:
    try:
        chain_cols[3].markdown(f"**Operator** `{ledger.operator.address}`: {ledger.operator_balance() / 1e18:.4f} ETH")
    except StudioError as exc:
        chain_cols[3].markdown(f"**Operator**: unreachable ({exc.code})")

with st.form("batch-policy"):
    policy = cb.BatchPolicy(**dataclass_form(cb.BatchPolicy, "policy", defaults=vars(cb.load_batch_policy(db))))
    if st.form_submit_button("Save batching rules"):
        cb.save_policy(db, policy, user.id)
        st.success("Saved: the background worker batches by count or age with these rules.")

left, right = st.columns(2)


def after_batch_action(notice: str) -> None:
    """Rerun the page so the contributions and amounts above show the new batch state; keep the notice."""
    st.session_state["batch-notice"] = notice
    st.rerun()


if left.button("Cut a batch now", key="cut"):
    batch_id = service.cut_batch("admin")
    after_batch_action(
        f"Batch {batch_id} queued." if batch_id else "Nothing to batch (pending contributions need a linked wallet)."
    )
if right.button("Anchor queued batches now (retry failed)", key="anchor"):
    with shown_errors():
        done = service.anchor(include_not_due=True)
        waiting = views.unanchored_batch_count(db)
        # the background worker may have anchored the batch a moment ago: only blame errors if some are left
        after_batch_action(
            f"Anchored: {done}"
            if done
            else "Nothing anchored; see the errors below."
            if waiting
            else "Nothing left to anchor: every batch is anchored."
        )
if "batch-notice" in st.session_state:
    st.info(st.session_state.pop("batch-notice"))

batch_rows = views.batches(db)
if batch_rows:
    frame = pd.DataFrame(batch_rows)
    frame["total_tokens"] = frame["total_amount"].map(views.tokens)
    st.dataframe(
        frame[
            [
                "id",
                "status",
                "trigger",
                "contributors",
                "contributions",
                "total_tokens",
                "gas_used",
                "tx_hash",
                "block_number",
                "attempts",
                "last_error",
                "next_attempt_at",
                "root",
                "created_at",
            ]
        ],
        hide_index=True,
        width="stretch",
        placeholder="",
    )
    anchored_gas = [r["gas_used"] for r in batch_rows if r["gas_used"]]
    if anchored_gas:
        n = sum(r["contributions"] for r in batch_rows if r["gas_used"])
        st.caption(
            f"Anchoring gas: {sum(anchored_gas):,} for {n} contributions "
            f"({sum(anchored_gas) / max(1, n):,.0f} per contribution)."
        )
else:
    st.info("No batches yet.", icon=":material/info:")
