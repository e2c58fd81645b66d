"""Small helpers shared by console pages."""
import streamlit as st


def not_yet_available(what: str, issue: str) -> None:
    """An honest notice for a page whose feature has not landed yet (no fake content)."""
    st.info(f"**Not yet available.** {what} arrives with the {issue}. "
            "Nothing on this page is simulated; it stays empty until then.", icon=":material/construction:")


def current_user():
    """The console user: from the team login (HTTP Basic) or the local admin in local mode."""
    from app.auth import basic_credentials
    from core.studio import current

    name, _ = basic_credentials(st.context.headers.get("authorization", "") or "")
    return current().directory.user(name)


def admin_only() -> bool:
    """True for admins; otherwise shows a notice so the page can stop."""
    if current_user().is_admin:
        return True
    st.warning("This page is for admins. Ask an admin if you need something here.", icon=":material/lock:")
    return False
