"""Small helpers shared by console pages."""
import streamlit as st


def not_yet_available(what: str, issue: str) -> None:
    """An honest notice for a page whose feature has not landed yet (no fake content)."""
    st.info(f"**Not yet available.** {what} arrives with the {issue}. "
            "Nothing on this page is simulated; it stays empty until then.", icon=":material/construction:")
