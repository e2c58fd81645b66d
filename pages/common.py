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


def dataclass_form(cls, key: str, choices: dict | None = None):
    """Widgets generated from a config dataclass (field, default, help from metadata) -> an instance.

    Sequence fields become multiselects when ``choices`` lists their options, text fields otherwise;
    ``float | None`` fields get an on/off toggle; date-like fields a date picker.
    """
    import dataclasses
    import typing
    from collections.abc import Sequence
    from datetime import date

    choices = choices or {}
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        label, help_text = f.name.replace("_", " ").capitalize(), f.metadata.get("help")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        hint_args = typing.get_args(hints[f.name]) or (hints[f.name],)
        widget_key = f"{key}-{f.name}"
        if f.name in choices:
            values[f.name] = tuple(st.multiselect(label, choices[f.name], default=[d for d in default
                                                  if d in choices[f.name]], help=help_text, key=widget_key))
        elif date in hint_args or any(getattr(a, "__name__", "") == "datetime" for a in hint_args):
            picked = st.date_input(label, value=None, help=help_text, key=widget_key)
            values[f.name] = picked
        elif float in hint_args:
            on = st.checkbox(label, value=default is not None, help=help_text, key=widget_key + "-on")
            values[f.name] = st.slider(label, 0.0, 1.0, float(default or 0.5), key=widget_key,
                                       label_visibility="collapsed", disabled=not on) if on else None
        elif any(typing.get_origin(a) in (Sequence, list, tuple) for a in hint_args) or isinstance(default, tuple):
            text = st.text_input(label, ", ".join(map(str, default)), help=help_text, key=widget_key)
            values[f.name] = tuple(v.strip() for v in text.split(",") if v.strip())
        else:
            values[f.name] = st.text_input(label, "" if default is None else str(default), help=help_text,
                                           key=widget_key) or None
    return cls(**values)
