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


def dataclass_form(cls, key: str, choices: dict | None = None, defaults: dict | None = None,
                   group: str | None = None):
    """Widgets generated from a config dataclass (field, default, help from metadata) -> an instance.

    Metadata ``choices`` -> select box; ``min``/``max`` -> bounded number input; bool -> checkbox;
    sequence fields -> multiselect when ``choices`` (the argument) lists options, else comma-separated text;
    ``float | None`` -> on/off toggle; date fields -> date picker. ``defaults`` overrides field defaults
    (e.g. precision chosen from the detected hardware). ``group`` renders only fields whose metadata
    ``group`` matches (``"training"`` when unset), so long forms can be split into tabs.
    """
    import dataclasses
    import typing
    from collections.abc import Sequence
    from datetime import date

    choices, defaults = choices or {}, defaults or {}
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if group is not None and meta.get("group", "training") != group:
            continue
        label, help_text = f.name.replace("_", " ").capitalize(), meta.get("help")
        default = defaults.get(f.name, f.default if f.default is not dataclasses.MISSING else f.default_factory())
        args = typing.get_args(hints[f.name]) or (hints[f.name],)
        wkey = f"{key}-{f.name}"
        if f.name in choices:
            values[f.name] = tuple(st.multiselect(label, choices[f.name], help=help_text, key=wkey,
                                                  default=[d for d in default if d in choices[f.name]]))
        elif "choices" in meta:
            options = list(meta["choices"])
            values[f.name] = st.selectbox(label, options, index=options.index(default) if default in options else 0,
                                          help=help_text, key=wkey)
        elif bool in args:
            values[f.name] = st.checkbox(label, value=bool(default), help=help_text, key=wkey)
        elif date in args or any(getattr(a, "__name__", "") == "datetime" for a in args):
            values[f.name] = st.date_input(label, value=None, help=help_text, key=wkey)
        elif float in args and type(None) in args:
            on = st.checkbox(label, value=default is not None, help=help_text, key=wkey + "-on")
            values[f.name] = st.slider(label, float(meta.get("min", 0.0)), float(meta.get("max", 1.0)),
                                       float(default if default is not None else 0.5), key=wkey,
                                       label_visibility="collapsed") if on else None
        elif int in args or float in args:
            kind = int if int in args and float not in args else float
            bounds = {k: kind(meta[k]) for k in ("min", "max") if k in meta}
            values[f.name] = st.number_input(
                label, min_value=bounds.get("min"), max_value=bounds.get("max"), value=kind(default),
                step=1 if kind is int else None, format=None if kind is int else "%g", help=help_text, key=wkey)
        elif any(typing.get_origin(a) in (Sequence, list, tuple) for a in args) or isinstance(default, tuple):
            text = st.text_input(label, ", ".join(map(str, default)), help=help_text, key=wkey)
            values[f.name] = tuple(v.strip() for v in text.split(",") if v.strip())
        else:
            values[f.name] = st.text_input(label, "" if default is None else str(default), help=help_text,
                                           key=wkey) or None
    return values
