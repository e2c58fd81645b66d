"""Account page: who you are, how to sign out, and your personal API tokens (create, list, revoke); admins revoke
anyone's."""

import pandas as pd
import streamlit as st

from core.labeling import tokens
from core.studio import current
from pages.common import LABEL_SIGN_OUT_URL, SIGN_OUT_URL, can, require_page, shown_errors, sign_in_method

ROLE_MEANS = {
    "admin": "every page and action of the studio",
    "labeler": "labeling, your own items and the figures everyone may see; the admin pages (training, "
    "comparing, exporting, labeling setup) are not in your sidebar",
}

studio = current()
st.title("Account")
viewer, _ = require_page("account")
st.markdown(f"Signed in as **{viewer.name}**, role **{viewer.role}**: {ROLE_MEANS.get(viewer.role, viewer.role)}.")
method = sign_in_method()
if method == "local":
    st.info(
        "Local mode: there is one user (the local admin) and no login, so there is nothing to sign out of and "
        "the REST API needs no token here. Logins and tokens matter in team mode (`STUDIO_AUTH_MODE=team`).",
        icon=":material/info:",
    )
elif method == "huggingface":
    st.markdown(
        "You signed in with Hugging Face, in the labeling app; the console and the REST API use that same "
        "sign-in. Signing out ends it everywhere: the console then asks you to sign in again."
    )
    st.link_button("Sign out", SIGN_OUT_URL, icon=":material/logout:")
else:
    st.markdown(
        "**Signing out.** You signed in to the console through your browser's own login prompt (HTTP Basic). The "
        "browser keeps that login and sends it with every request until it quits; no page can reliably make it "
        "forget it, so the console has no sign-out button. To sign out:\n"
        "- close every window of this browser so that it quits (on macOS quit it with Cmd+Q; Chrome keeps running "
        "in the background while *Continue running background apps* is on);\n"
        "- on a shared computer, open the studio in a private window instead: closing that window signs you out.\n\n"
        f"The labeling app has a login of its own: [sign out of the labeling app]({LABEL_SIGN_OUT_URL})."
    )

st.subheader("Personal API tokens")
st.caption(
    "For scripts and notebooks: `curl -H 'Authorization: Bearer rlhf_...' .../api/votes`. A token acts as "
    "you; a **label** token can only do what a labeler can, an **admin** token what an admin can (and only "
    "while you are one). The token is shown once; the studio keeps only a hash of it."
)

revoked = st.session_state.pop("token_revoked", None)
if revoked is not None:
    st.success(f"Token #{revoked} revoked: it stops working now.", icon=":material/block:")
created = st.session_state.pop("new_token", None)
if created is not None:
    st.success(
        f"Token **{created['name']}** ({created['scope']}) created. Copy it now: it is not shown again.",
        icon=":material/key:",
    )
    st.code(created["token"], language=None)

with st.form("new-token", clear_on_submit=True):
    left, right = st.columns([3, 1])
    name = left.text_input("What is it for?", placeholder="e.g. labeling script", max_chars=100)
    scopes = list(tokens.SCOPES) if viewer.is_admin else ["label"]
    scope = right.selectbox(
        "Scope",
        scopes,
        help="label: votes, feedback and your own data; admin: everything an admin can do through the API",
    )
    if st.form_submit_button("Create token", type="primary", icon=":material/add:"):
        with shown_errors():
            new = tokens.create_token(studio.db, viewer, name, scope)
            st.session_state["new_token"] = {"name": new.name, "scope": new.scope, "token": new.token}
            st.rerun()


def token_table(rows: list[dict], key: str) -> None:
    """The tokens with a revoke button for each live one."""
    if not rows:
        st.caption("No tokens yet.")
        return
    frame = pd.DataFrame(rows)
    frame["status"] = frame["revoked_at"].map(lambda t: "revoked" if pd.notna(t) else "active")
    st.dataframe(
        frame[["id", "owner", "name", "scope", "prefix", "status", "created_at", "last_used_at"]],
        hide_index=True,
        width="stretch",
        column_config={
            "prefix": "Starts with",
            "last_used_at": st.column_config.DatetimeColumn("Last used", format="YYYY-MM-DD HH:mm"),
            "created_at": st.column_config.DatetimeColumn("Created", format="YYYY-MM-DD HH:mm"),
        },
    )
    live = [r for r in rows if r["revoked_at"] is None]
    if live:
        left, right = st.columns([3, 1])
        choice = left.selectbox(
            "Token to revoke",
            [r["id"] for r in live],
            key=f"{key}-pick",
            format_func=lambda i: next(
                f"#{r['id']} {r['owner']}: {r['name']} ({r['prefix']}…)" for r in live if r["id"] == i
            ),
        )
        if right.button("Revoke", key=f"{key}-revoke", icon=":material/block:", width="stretch"):
            with shown_errors():
                tokens.revoke_token(studio.db, viewer, int(choice))
                st.session_state["token_revoked"] = int(choice)
                st.rerun()


token_table(tokens.list_tokens(studio.db, viewer), "mine")

if can(viewer, "account.everyone"):
    st.subheader("Everyone's tokens (admin)")
    token_table(tokens.list_tokens(studio.db, viewer, everyone=True), "all")
