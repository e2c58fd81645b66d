"""Training sets: the labels in DuckDB turned into TRL datasets (conversational format).

Four builders, one per TRL dataset family. Each returns `Built(dataset, stats)`; the `*_rows` functions
return the same rows as plain dicts, `Rows(rows, stats)`, for training jobs, tests and export (which kind uses
which builder is the dataset-kind registry, core.data.kinds). `stats` is
`{"rows": n, "skipped": {reason: count}}`; a skipped vote counts once, under the first reason that
applies (`retracted`, `redacted`, `no_prompt`, `date`, `labeler`, `source`, `policy`, `flagged`,
`low_agreement`, `minority`, then per builder `tie`, `both_bad_without_gold`, `no_gold`,
`identical_answers`, `no_clear_label`, `cut_answer`).

| Builder | Columns | TRL trainers |
|---|---|---|
| `build_preference` | `prompt`, `chosen`, `rejected` | DPO, ORPO, CPO, ... |
| `build_reward` | the same, plus `margin` with `margin_from_ratings=True` | RewardTrainer |
| `build_unpaired` | `prompt`, `completion`, `label` | KTO, BCO |
| `build_sft` | `messages` | SFT |

`prompt` is the conversation before the labeled assistant turn (a list of `{"role", "content"}`, may be
multi-turn, may start with a system message); `chosen`, `rejected` and `completion` are one assistant
message each.

How labels become rows
----------------------

| Label | Preference / reward (`prompt`, `chosen`, `rejected`, `margin`) | Unpaired / KTO (`prompt`, `completion`, `label`) | SFT (`messages`) |
|---|---|---|---|
| Vote `a` / `b` | chosen = picked answer, rejected = the other | picked → `True`, other → `False` | prompt + picked answer (the vote's gold edit replaces it) |
| Vote `tie` | no pair (also with a gold edit) | no label from the vote; thumbs / ratings may still label the two answers | no row, unless the vote has a gold edit |
| Vote `both_bad` | no pair without a gold edit; with one: gold vs A and gold vs B | both → `False` | no row, unless the vote has a gold edit |
| Gold edit (the answer it should have been) | on `a`/`b`: the picked-vs-rejected pair is kept and an EXTRA pair gold vs rejected is added (unless the gold text equals the pick); `both_bad`: see above | gold text → `True` (skipped when equal to one of the two answers) | prompt + gold text; `only_gold=True` keeps only these rows |
| Thumbs up / down | not used | up → `True`, down → `False`; several thumbs on one answer: majority | not used |
| Aspect ratings 1–5 | `margin` = weighted rating of chosen − rejected, clamped at ≥ 0; `0.0` when either side is unrated (always for gold pairs) | only when an answer has no thumb and no vote label: weighted mean ≥ 4 → `True`, ≤ 2 → `False`, in between → no row | not used |
| `feedback` rows (API, score 0–1) | not used | prompt = one user message, `label = score >= 0.5` | not used |
| Retracted (undone) or redacted vote; redacted answer, message or prompt | ignored, with the ratings, thumbs and gold edit given with the vote | ignored | ignored |

* Precedence for one answer in KTO: thumbs > votes > ratings. A level with as many good as bad signals
  (1 up and 1 down) defers to the next level. Explicit thumbs beat the vote they were given with.
* Several gold edits of one vote: the latest counts. Rows with identical chosen and rejected text are
  skipped (`identical_answers`).
* Ratings: per aspect the mean over raters of that answer, then the weighted mean over aspects; weights
  from the `aspects` table (active aspects) unless `aspect_weights` is given; `Filters.aspects` restricts
  which aspects count.
* Gold edits, thumbs and ratings given without a vote use the prompt of the answer they refer to.
* Answers cut at the length limit (`candidates.cut`): a preference row marks each such side with `chosen_cut` /
  `rejected_cut` = `True` (the keys are absent otherwise, so exports keep the TRL schema); DPO trains that side
  as the start of an answer, without the chat template's end-of-turn (core.training.cut). A cut answer is never a
  finished one to imitate: SFT skips a picked answer that was cut, and KTO a desirable one (`cut_answer`).

Filters (`Filters`, core.data.filters) choose which labels count; core.data.signals holds the SQL that applies
them; the held-out evaluation split is core.data.split.
"""
from __future__ import annotations

import hashlib
from collections import Counter
from typing import Any, Callable, NamedTuple

import datasets

from core.data.filters import Filters
from core.data.signals import ANSWER_LABELS, FEEDBACK, LONE_GOLD, VOTE_PAIR_TEXTS, VOTES, query_params
from storage.db import Database

KTO_GOOD_RATING = 4.0   # weighted mean rating at or above this: a desirable answer
KTO_BAD_RATING = 2.0    # at or below this: an undesirable one
KTO_GOOD_SCORE = 0.5    # feedback score at or above this: desirable

_MESSAGES = datasets.List({"role": datasets.Value("string"), "content": datasets.Value("string")})
FEATURES = {
    "preference": datasets.Features({"prompt": _MESSAGES, "chosen": _MESSAGES, "rejected": _MESSAGES}),
    "reward": datasets.Features({"prompt": _MESSAGES, "chosen": _MESSAGES, "rejected": _MESSAGES,
                                 "margin": datasets.Value("float64")}),
    "unpaired": datasets.Features({"prompt": _MESSAGES, "completion": _MESSAGES,
                                   "label": datasets.Value("bool")}),
    "sft": datasets.Features({"messages": _MESSAGES}),
}


def _copies(vote: dict[str, Any], weight: float) -> int:
    """How many times a vote's rows enter a set: once for people; ``weight`` on average for AI votes, the fraction
    decided by a fixed hash of the vote (the same rows on every rebuild)."""
    if not vote["ai"]:
        return 1
    whole = int(weight)
    draw = int(hashlib.sha256(f"ai-weight:{vote['id']}".encode()).hexdigest()[:8], 16) / 0x1_0000_0000
    return whole + (draw < weight - whole)


# ----------------------------------------------------------------------------------------- results

class Rows(NamedTuple):
    rows: list[dict[str, Any]]
    stats: dict[str, Any]


class Built(NamedTuple):
    dataset: datasets.Dataset
    stats: dict[str, Any]


def to_dataset(kind: str, rows: list[dict[str, Any]]) -> datasets.Dataset:
    """Rows of one builder as a Dataset with a fixed schema (also when there are no rows)."""
    features = FEATURES[kind]
    return datasets.Dataset.from_dict({name: [row[name] for row in rows] for name in features},
                                      features=features)


def _stats(rows: list[dict[str, Any]], skipped: Counter) -> dict[str, Any]:
    return {"rows": len(rows), "skipped": dict(sorted(skipped.items()))}


def _assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def _user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def _same(x: str | None, y: str | None) -> bool:
    return x is not None and y is not None and x.strip() == y.strip()


# ----------------------------------------------------------------------------------------- builders

def preference_rows(db: Database, filters: Filters | None = None, *, margin_from_ratings: bool = False,
                    aspect_weights: dict[str, float] | None = None) -> Rows:
    """``prompt/chosen/rejected`` rows (plus ``margin`` when ``margin_from_ratings``)."""
    params = query_params(db, filters, aspect_weights)
    rows: list[dict[str, Any]] = []
    skipped: Counter = Counter()

    def pair(vote: dict, chosen: str, rejected: str, chosen_score=None, rejected_score=None,
             chosen_cut: bool = False, rejected_cut: bool = False) -> None:
        if _same(chosen, rejected):
            skipped["identical_answers"] += 1
            return
        row = {"prompt": vote["prompt"], "chosen": _assistant(chosen), "rejected": _assistant(rejected)}
        row |= {"chosen_cut": True} if chosen_cut else {}
        row |= {"rejected_cut": True} if rejected_cut else {}
        if margin_from_ratings:
            both_rated = chosen_score is not None and rejected_score is not None
            row["margin"] = max(0.0, chosen_score - rejected_score) if both_rated else 0.0
        rows.append(row)

    for vote in db.query(VOTES, params):
        if vote["skip"]:
            skipped[vote["skip"]] += 1
            continue
        copies = _copies(vote, params["ai_weight"])
        if not copies:
            skipped["ai_weight"] += 1
            continue
        first = len(rows)
        _vote_pairs(vote, pair, skipped)
        rows.extend(rows[first:] * (copies - 1))
    return Rows(rows, _stats(rows, skipped))


def preference_texts(db: Database, filters: Filters | None = None, since: Any = None) -> list[tuple[str, str, bool]]:
    """The chosen and rejected texts of :func:`preference_rows` (the same pairs, in the same order), each with whether
    its vote is on or after ``since`` (always True without it): what the label signature and the guided loop's pair
    counts need, from one read of the votes that leaves out the prompts and ratings the rows carry. For ``filters``
    without a window of their own, a vote they keep is kept with ``since`` added exactly when it falls in that window
    (the date is the first filter a vote meets): the recent pairs are those of ``preference_rows`` with ``since``."""
    params = query_params(db, filters)
    params["pairs_since"] = Filters(since=since).params(db)["since"]
    texts: list[tuple[str, str, bool]] = []

    def pair(vote: dict, chosen: str, rejected: str, *_scores_and_cuts: Any) -> None:
        if not _same(chosen, rejected):
            texts.append((chosen, rejected, vote["recent"]))

    for vote in db.query(VOTE_PAIR_TEXTS, params):
        copies = _copies(vote, params["ai_weight"])
        if not copies:
            continue
        first = len(texts)
        _vote_pairs(vote, pair, Counter())
        texts.extend(texts[first:] * (copies - 1))
    return texts


def _vote_pairs(vote: dict[str, Any], pair: Callable[..., None], skipped: Counter) -> None:
    """The preference pairs one vote gives (see the README table "Labels -> training data")."""
    outcome, gold = vote["outcome"], vote["gold"]
    if outcome in ("a", "b"):
        won, lost = ("a", "b") if outcome == "a" else ("b", "a")
        pair(vote, vote[f"{won}_text"], vote[f"{lost}_text"], vote[f"{won}_score"], vote[f"{lost}_score"],
             bool(vote[f"{won}_cut"]), bool(vote[f"{lost}_cut"]))
        if gold is not None and not _same(gold, vote[f"{won}_text"]):
            pair(vote, gold, vote[f"{lost}_text"], None, None, False, bool(vote[f"{lost}_cut"]))
    elif outcome == "both_bad" and gold is not None:
        pair(vote, gold, vote["a_text"], None, None, False, bool(vote["a_cut"]))
        pair(vote, gold, vote["b_text"], None, None, False, bool(vote["b_cut"]))
    else:
        skipped["tie" if outcome == "tie" else "both_bad_without_gold"] += 1


def build_preference(db: Database, filters: Filters | None = None) -> Built:
    """Conversational preference dataset (``prompt``, ``chosen``, ``rejected``) for DPO and friends."""
    rows, stats = preference_rows(db, filters)
    return Built(to_dataset("preference", rows), stats)


def build_reward(db: Database, filters: Filters | None = None, margin_from_ratings: bool = False,
                 aspect_weights: dict[str, float] | None = None) -> Built:
    """Preference dataset for RewardTrainer; with ``margin_from_ratings`` a ``margin`` column holds the
    weighted rating gap chosen − rejected (≥ 0; 0.0 when either answer is unrated)."""
    rows, stats = preference_rows(db, filters, margin_from_ratings=margin_from_ratings,
                                  aspect_weights=aspect_weights)
    return Built(to_dataset("reward" if margin_from_ratings else "preference", rows), stats)


def _answer_label(answer: dict[str, Any], use_ratings: bool) -> bool | None:
    """Thumbs win, then votes, then ratings; a level with as many good as bad signals defers."""
    for good, bad in ((answer["up"], answer["down"]), (answer["good"], answer["bad"])):
        if good != bad:
            return good > bad
    score = answer["score"] if use_ratings else None
    if score is not None and score >= KTO_GOOD_RATING:
        return True
    if score is not None and score <= KTO_BAD_RATING:
        return False
    return None


def unpaired_rows(db: Database, filters: Filters | None = None, *, use_ratings: bool = True,
                  include_feedback: bool = True, aspect_weights: dict[str, float] | None = None) -> Rows:
    """KTO ``prompt/completion/label`` rows: labeled answers, then gold edits, then ``feedback`` rows."""
    params = query_params(db, filters, aspect_weights)
    rows: list[dict[str, Any]] = []
    skipped: Counter = Counter()

    for answer in db.query(ANSWER_LABELS, params):
        label = None if answer["skip"] else _answer_label(answer, use_ratings)
        if label is None:
            skipped[answer["skip"] or "no_clear_label"] += 1
            continue
        if label and answer["cut"]:
            skipped["cut_answer"] += 1
            continue
        rows.append({"prompt": answer["prompt"], "completion": _assistant(answer["text"]), "label": label})

    for vote in db.query(VOTES, params):   # votes labeled their answers above; here: stats and gold edits
        if vote["skip"]:
            skipped[vote["skip"]] += 1
            continue
        if vote["outcome"] == "tie":
            skipped["tie"] += 1
        gold = vote["gold"]
        if gold is not None and not (_same(gold, vote["a_text"]) or _same(gold, vote["b_text"])):
            rows.append({"prompt": vote["prompt"], "completion": _assistant(gold), "label": True})
    for gold in db.query(LONE_GOLD, params):
        if gold["skip"]:
            skipped[gold["skip"]] += 1
        else:
            rows.append({"prompt": gold["prompt"], "completion": _assistant(gold["text"]), "label": True})

    if include_feedback:
        for fb in db.query(FEEDBACK, params):
            if fb["skip"]:
                skipped[fb["skip"]] += 1
            else:
                rows.append({"prompt": _user(fb["prompt"]), "completion": _assistant(fb["response"]),
                             "label": fb["score"] >= KTO_GOOD_SCORE})
    return Rows(rows, _stats(rows, skipped))


def build_unpaired(db: Database, filters: Filters | None = None, *, use_ratings: bool = True,
                   include_feedback: bool = True, aspect_weights: dict[str, float] | None = None) -> Built:
    """Unpaired preference dataset (``prompt``, ``completion``, ``label``) for KTO / BCO."""
    rows, stats = unpaired_rows(db, filters, use_ratings=use_ratings, include_feedback=include_feedback,
                                aspect_weights=aspect_weights)
    return Built(to_dataset("unpaired", rows), stats)


def sft_rows(db: Database, filters: Filters | None = None, *, only_gold: bool = False) -> Rows:
    """``messages`` rows: prompt + the answer it should be (gold edit, else the picked answer)."""
    params = query_params(db, filters)
    rows: list[dict[str, Any]] = []
    skipped: Counter = Counter()
    for vote in db.query(VOTES, params):
        if vote["skip"]:
            skipped[vote["skip"]] += 1
            continue
        answer = vote["gold"]
        if answer is None and not only_gold and vote["outcome"] in ("a", "b"):
            if vote[f"{vote['outcome']}_cut"]:
                skipped["cut_answer"] += 1
                continue
            answer = vote[f"{vote['outcome']}_text"]
        if answer is None:
            skipped[{"tie": "tie", "both_bad": "both_bad_without_gold"}.get(vote["outcome"], "no_gold")] += 1
            continue
        copies = _copies(vote, params["ai_weight"])
        if not copies:
            skipped["ai_weight"] += 1
        rows.extend({"messages": vote["prompt"] + _assistant(answer)} for _ in range(copies))
    for gold in db.query(LONE_GOLD, params):
        if gold["skip"]:
            skipped[gold["skip"]] += 1
        else:
            rows.append({"messages": gold["prompt"] + _assistant(gold["text"])})
    return Rows(rows, _stats(rows, skipped))


def build_sft(db: Database, filters: Filters | None = None, *, only_gold: bool = False) -> Built:
    """Conversational language-modeling dataset (``messages``) for SFT."""
    rows, stats = sft_rows(db, filters, only_gold=only_gold)
    return Built(to_dataset("sft", rows), stats)
