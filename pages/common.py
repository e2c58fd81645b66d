"""Small helpers shared by console pages: who is viewing (``require_page``, ``can``), forms generated from config
dataclasses (``dataclass_form``, and ``filter_form`` for the training-data filters), the one way a page shows an
error (``show_error``) and the "what changed" report (``show_report``).

Pages call core functions for everything they read or write; nothing here (or in any page) runs SQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import streamlit as st

if TYPE_CHECKING:
    from core.data.filters import Filters
    from core.errors import StudioError
    from storage.db import Database


def data_key(db: Database) -> str:
    """The cache key (an ``st.cache_data`` argument) of what a page computes from the labels: it changes with every
    change of the labels and with the day (core.labeling.analytics.labels_fingerprint). Cached on it, a page
    computes its analytics once per change instead of on every rerun, and never shows them stale."""
    from core.labeling.analytics import labels_fingerprint

    return labels_fingerprint(db)


def not_yet_available(what: str, issue: str) -> None:
    """An honest notice for a page whose feature has not landed yet (no fake content)."""
    st.info(
        f"**Not yet available.** {what} arrives with the {issue}. "
        "Nothing on this page is simulated; it stays empty until then.",
        icon=":material/construction:",
    )


SIGN_OUT_URL = "/logout"  # app.auth.oauth_forwarders: ends the Hugging Face sign-in (forwarded with OAuth only)
LABEL_SIGN_OUT_URL = "/label/logout"  # Gradio's own: ends the labeling app's password login


def authorization_header() -> str:
    """The Authorization header the browser sent with this session ("" without one)."""
    return st.context.headers.get("authorization", "") or ""


def current_user():
    """The console user, resolved as on every surface (app.auth): the team login (HTTP Basic), a Hugging Face
    sign-in, or the local admin in local mode."""
    from app.auth import credentials_user
    from core.errors import Unauthenticated
    from core.studio import current

    user = credentials_user(current().directory, authorization_header(), None, dict(st.context.cookies))
    if user is None:
        raise Unauthenticated(
            "You are not logged in (or your session expired)",
            hint="reload the page and log in again; nothing you had saved is lost",
        )
    return user


def sign_in_method() -> str:
    """How the viewer got into the console, which decides how they sign out: ``local`` (local mode: no login),
    ``basic`` (a team account typed into the browser's own login prompt: HTTP Basic, which only the browser can
    forget) or ``huggingface`` (the labeling app's Hugging Face sign-in cookie, which ``SIGN_OUT_URL`` ends)."""
    from core.studio import current

    if not current().directory.team_mode:
        return "local"
    return "basic" if authorization_header().lower().startswith("basic ") else "huggingface"


def require_page(name: str):
    """The viewer and their scope on console page ``name`` (app.access rule ``page:<name>``); a viewer with
    none gets an error saying so and the page stops there. Every page calls this first.

    The console registers every page (pages/console.py) and only hides the ones a viewer may not open, so this is
    what a labeler sees on opening /train, /export or /compare by address: before, such an address was unknown to
    the navigation and Streamlit showed the Data page without a word."""
    from app import access

    user = current_user()
    granted = access.scope(user, f"page:{name}")
    if granted == access.NONE:
        st.error(
            f"**This page is for admins.** You are signed in as {user.name} ({user.role}): the pages in the "
            "sidebar are the ones you can use. Ask an admin if you need something here.",
            icon=":material/lock:",
        )
        st.stop()
    return user, granted


def can(user, resource: str) -> bool:
    """Whether ``user`` may see a section of a page (app.access rule ``resource``)."""
    from app import access

    return access.can(user, resource)


def dataclass_form(cls, key: str, choices: dict | None = None, defaults: dict | None = None, group: str | None = None):
    """Widgets generated from a config dataclass (core.config.form_fields: the labeling app reads the same) ->
    the values by field name.

    ``choice`` -> select box; ``int``/``float`` -> number input (bounded by metadata ``min``/``max``); ``bool`` ->
    checkbox; ``sequence`` -> multiselect when ``choices`` (the argument) lists options, else comma-separated text;
    ``optional_float`` -> on/off toggle and a slider; ``date`` -> date picker. ``defaults`` overrides field
    defaults (e.g. precision chosen from the detected hardware); ``group`` renders only that group's fields.
    """
    from core.config import form_fields, form_value

    choices = choices or {}
    values = {}
    for f in form_fields(cls, defaults, group):
        label, help_text, default, wkey = f.label, f.help, f.default, f"{key}-{f.name}"
        if f.name in choices:
            values[f.name] = tuple(
                st.multiselect(
                    label,
                    choices[f.name],
                    help=help_text,
                    key=wkey,
                    default=[d for d in default if d in choices[f.name]],
                )
            )
        elif f.kind == "choice":
            options = list(f.options)
            values[f.name] = st.selectbox(
                label, options, index=options.index(default) if default in options else 0, help=help_text, key=wkey
            )
        elif f.kind == "bool":
            values[f.name] = st.checkbox(label, value=bool(default), help=help_text, key=wkey)
        elif f.kind == "date":
            values[f.name] = st.date_input(label, value=None, help=help_text, key=wkey)
        elif f.kind == "optional_float":
            on = st.checkbox(label, value=default is not None, help=help_text, key=wkey + "-on")
            values[f.name] = (
                st.slider(
                    label,
                    float(f.min if f.min is not None else 0.0),
                    float(f.max if f.max is not None else 1.0),
                    float(default if default is not None else 0.5),
                    key=wkey,
                    label_visibility="collapsed",
                )
                if on
                else None
            )
        elif f.kind in ("int", "float"):
            kind = int if f.kind == "int" else float
            low, high = (None if bound is None else kind(bound) for bound in (f.min, f.max))
            values[f.name] = st.number_input(
                label,
                min_value=low,
                max_value=high,
                value=kind(default),
                step=1 if kind is int else None,
                format=None if kind is int else "%g",
                help=help_text,
                key=wkey,
            )
        elif f.kind == "sequence":
            values[f.name] = form_value(f, st.text_input(label, ", ".join(map(str, default)), help=help_text, key=wkey))
        else:
            values[f.name] = (
                st.text_input(label, "" if default is None else str(default), help=help_text, key=wkey) or None
            )
    return values


def filter_form(
    db: Database, key: str, *, label: str = "Filters", only_labeler: str | None = None, defaults: dict | None = None
) -> Filters:
    """The training-data filter form (core.data.filters.Filters) in a collapsed expander -> the chosen filters.

    One form for every page that builds or exports training data (Train, Data, Export), generated from the
    ``Filters`` fields like the other config forms, so a new filter shows up everywhere at once. Labelers,
    versions, flags and aspects are offered by name (``filter_choices``). ``key`` prefixes the widget keys
    (``<key>-<field>``). ``only_labeler`` pins the labeler filter to one name: a labeler building a training set
    from their own labels only. ``defaults`` overrides field defaults (training jobs hold out 20% by default).
    """
    from core.data.filters import Filters, filter_choices

    choices = filter_choices(db)
    if only_labeler is not None:
        choices["labelers"] = [only_labeler]
    with st.expander(label):
        values = dataclass_form(Filters, key, choices, defaults)
    if only_labeler is not None:
        values["labelers"] = (only_labeler,)
    return Filters(**values)


def show_error(exc: StudioError) -> None:
    """A StudioError as the console shows every error, on every page: what happened (bold), then what to do."""
    st.error(f"**{exc.message}**" + (f"  \n{exc.hint}" if exc.hint else ""), icon=":material/error:")


@contextmanager
def shown_errors(stop: bool = False) -> Iterator[None]:
    """Run the block; a StudioError it raises is shown (:func:`show_error`) and the page goes on below it, or with
    ``stop`` ends there (what follows needs the block's result)."""
    from core.errors import StudioError

    try:
        yield
    except StudioError as exc:
        show_error(exc)
        if stop:
            st.stop()


VERDICT_STYLE = {
    "learned": ("green", ":material/trending_up:"),
    "no_change": ("gray", ":material/trending_flat:"),
    "changed": ("blue", ":material/swap_horiz:"),
    "mixed": ("violet", ":material/compare_arrows:"),
    "regressed": ("red", ":material/trending_down:"),
    "unmeasured": ("orange", ":material/help:"),
}


GATE_STYLE = {
    "pass": ("green", ":material/check_circle:"),
    "fail": ("red", ":material/cancel:"),
    "unknown": ("gray", ":material/help:"),
}


def show_gate(gate: dict, mode: str) -> None:
    """The release gate as a checklist (core.compare.gate): one line per check with its evidence."""
    if mode == "off":
        st.caption("The release gate is off (STUDIO_RELEASE_GATE=off).")
        return
    head = f"Release gate of {gate['version']} against {gate['against']}: "
    if gate["passed"]:
        st.success(head + "passed (no check failed).", icon=":material/verified:")
    else:
        consequence = (
            "a Hub push is refused unless an admin overrides it with a reason"
            if mode == "enforce"
            else "pushes are allowed with this warning (STUDIO_RELEASE_GATE=warn)"
        )
        st.error(head + f"failed: {consequence}.", icon=":material/gpp_bad:")
    for check in gate["checks"]:
        color, icon = GATE_STYLE[check["status"]]
        left, right = st.columns([1, 5])
        with left:
            st.badge(f"{check['name']}: {check['status']}", color=color, icon=icon)
        right.caption(check["evidence"])


def signature_chart(rows: list[tuple[str, float, str]], key: str, height: int = 0) -> None:
    """Horizontal bars centred on 0.5 (a coin flip): per feature, the share of pairs (or prompts) with more of it."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for series in dict.fromkeys(r[2] for r in rows):
        picked = [r for r in rows if r[2] == series]
        fig.add_bar(
            name=series,
            y=[r[0] for r in picked],
            x=[r[1] - 0.5 for r in picked],
            base=0.5,
            orientation="h",
            hovertemplate="%{y}: %{x:.0%} more<extra>" + series + "</extra>",
        )
    fig.add_vline(x=0.5, line_dash="dot", line_color="gray")
    fig.update_layout(
        barmode="group",
        height=height or 130 + 36 * len({r[0] for r in rows}),
        margin=dict(l=10, r=10, t=10, b=50),
        legend=dict(orientation="h", y=-0.45),
        xaxis=dict(
            range=[0, 1],
            tickformat=".0%",
            title=dict(text="share of pairs / prompts with more of the feature (50% = no preference)", standoff=4),
        ),
    )
    st.plotly_chart(fig, key=key)


def _share(test: dict) -> float | None:
    decided = test["more"] + test["less"]
    return test["more"] / decided if decided else None


def show_signature_and_movement(report: dict, key: str) -> None:
    """What the version's training labels prefer, how its answers moved against the other version's, and every
    piece of evidence the verdict rests on (with the rule)."""
    m, version, against = report["metrics"], report["version"], report["against"]
    signature = m.get("label_signature") or {}
    preferences = signature.get("preferences") or []
    if preferences:
        st.markdown(
            "**What the training labels prefer:** "
            + "; ".join(p.removeprefix("your labels prefer ") for p in preferences)
        )
    elif signature:
        st.caption(
            f"The {signature.get('pairs', 0)} training pairs show no measurable preference in the answer "
            "features (length, lists, refusals, ...; see the README)."
        )
    interesting = {t["feature"] for t in signature.get("tests", []) if t.get("direction")}
    interesting |= {t["feature"] for t in m.get("movement") or [] if t.get("direction")}
    rows = [
        (t["feature"], share, "training labels: chosen vs rejected")
        for t in signature.get("tests", [])
        if t["feature"] in interesting and (share := _share(t)) is not None
    ]
    rows += [
        (t["feature"], share, f"answers: {version} vs {against}")
        for t in m.get("movement") or []
        if t["feature"] in interesting and (share := _share(t)) is not None
    ]
    if rows:
        signature_chart(rows, key=f"{key}-signature")
    found = report.get("evidence") or []
    if found or report.get("rule"):
        with st.expander(f"Evidence ({len(found)} tests) and the verdict rule"):
            for e in found:
                says = {"toward": "toward the labels", "against": "against the labels"}.get(
                    e["says"], "not significant"
                )
                st.markdown(
                    f"- **{says}** — {e['text']} (p = {e['p_value']:.2g}, {e['adjusted_p']:.2g} after correction)"
                )
            if report.get("rule"):
                st.caption(report["rule"])


def metric_delta(new: float, old: float | None, fmt: str = "{:.2f}") -> str | None:
    """``st.metric``'s delta text, or None (no arrow) when the change rounds to nothing at the figure's precision.
    Streamlit draws every delta string as up or down: an unchanged accuracy read "↑ 0.00" in green and an unchanged
    refusal rate "↑ 0%" in red."""
    if old is None:
        return None
    text = fmt.format(new - old)
    return text if any(c in "123456789" for c in text) else None


def show_report(report: dict, full: bool, key: str) -> None:
    """A "what changed" report (core.compare.report): verdict, figures, a chart, warnings, and for admins (``full``) the
    prompts where the two versions differ most. Labelers get the figures only: the examples are other people's
    held-out prompts."""
    import plotly.graph_objects as go

    from core.compare.report import QUICK_REPORT, thorough
    from core.compare.safety import percent
    from core.compare.sidebyside import diff_html

    m, version, against = report["metrics"], report["version"], report["against"]
    color, icon = VERDICT_STYLE.get(report["verdict"], ("gray", None))
    st.badge(report["verdict"].replace("_", " "), color=color, icon=icon)
    st.markdown(f"**{report['summary']}**")
    if not thorough(report):
        st.caption(QUICK_REPORT)

    def pair(name: str, fmt: str = "{:.2f}") -> tuple[str, str | None]:
        old, new = m.get(f"{name}_against"), m.get(f"{name}_version")
        if new is None:
            return "n/a", None
        return fmt.format(new), metric_delta(new, old, fmt)

    cols = st.columns(5)
    value, delta = pair("accuracy")
    cols[0].metric(
        "Log-prob ranking accuracy (held-out)",
        value,
        delta,
        help=f"{m['held_out_pairs']} labeled pairs never trained on; each version ranks chosen vs "
        f"rejected by its mean log-probability per token. {against} → {version}. Not DPO's "
        "reward accuracy on the Runs page, which asks whether the version moved each pair's "
        "chosen answer up more than its rejected one relative to the reference.",
    )
    kl = m.get("kl_per_token")
    cols[1].metric(
        "KL to " + against,
        "n/a" if kl is None else f"{kl:.3f}",
        help=f"nats per token, on the version's own answers to {m.get('prompts', 0)} held-out prompts",
    )
    value, delta = pair("length", "{:.0f}")
    cut = m.get("cut_version")
    cols[2].metric(
        "Answer length (tokens)",
        value,
        delta,
        delta_color="off",
        help=None
        if cut is None
        else f"{cut:.0%} of {version}'s answers and {m.get('cut_against') or 0:.0%} of {against}'s stopped at the "
        f"{m.get('max_new_tokens')}-token limit",
    )
    value, delta = pair("refusal", "{:.0%}")
    cols[3].metric("Refusal rate", value, delta, delta_color="inverse")
    win = m.get("win_rate")
    cols[4].metric(
        "Win rate vs " + against,
        "n/a" if win is None else f"{win:.0%}",
        help=f"judged by {m['reward_model']}"
        if m.get("reward_model")
        else "no reward model yet: train one (algorithm 'Reward model') to get a judged win rate",
    )
    show_signature_and_movement(report, key)
    names = [
        ("accuracy", "log-prob ranking accuracy"),
        ("refusal", "refusal rate"),
        ("distinct2", "diversity (distinct-2)"),
    ]
    shown = [
        (label, m.get(f"{n}_against"), m.get(f"{n}_version")) for n, label in names if m.get(f"{n}_version") is not None
    ]
    if shown:
        fig = go.Figure()
        fig.add_bar(name=against, x=[s[0] for s in shown], y=[s[1] for s in shown])
        fig.add_bar(name=version, x=[s[0] for s in shown], y=[s[2] for s in shown])
        fig.update_layout(barmode="group", height=260, margin=dict(l=10, r=10, t=10, b=10), yaxis_range=[0, 1])
        st.plotly_chart(fig, width="stretch", key=f"{key}-chart")
    for warning in report.get("warnings", []):
        st.warning(warning, icon=":material/warning:")
    safety = report.get("safety")
    if safety:
        unsafe, over = safety["unsafe_rate"], safety["over_refusal_rate"]
        line = (
            f"Safety against {safety['against']}: unsafe answers {percent(unsafe['against'])} → "
            f"{percent(unsafe['version'])}, over-refusals {percent(over['against'])} → {percent(over['version'])}"
        )
        if safety["worse"]:
            st.error(f"{line}. Less safe: {'; '.join(safety['reasons'])}.", icon=":material/gpp_bad:")
        else:
            st.caption(line + ("" if not safety["notes"] else f" ({'; '.join(safety['notes'])})"))
    bench = report.get("benchmarks")
    if bench and bench.get("against"):
        line = "Standard benchmarks against {}: {}".format(
            bench["against"],
            ", ".join(f"{r['task']} {r['against_value']:.2f} → {r['value']:.2f}" for r in bench["tasks"]),
        )
        if bench["regressions"]:
            st.error(
                f"{line}. Regressed: {', '.join(r['task'] for r in bench['regressions'])}.",
                icon=":material/trending_down:",
            )
        else:
            st.caption(line + " (no regression)")
    if full and report.get("examples"):
        st.caption("Where the two versions differ most (sampled answers, held-out prompts):")
        for i, example in enumerate(report["examples"]):
            with st.expander(f"{i + 1}. {example['prompt'][:90]}"):
                html_a, html_b = diff_html(example["answer_against"], example["answer_version"])
                left, right = st.columns(2)
                left.caption(f"**{against}**")
                left.html(f"<div style='white-space:pre-wrap'>{html_a}</div>")
                right.caption(f"**{version}**")
                right.html(f"<div style='white-space:pre-wrap'>{html_b}</div>")
    elif not full:
        st.caption("Example answers are shown to admins only (they quote other people's prompts).")
