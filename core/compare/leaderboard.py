"""The leaderboard: arena battles (the FastChat clean-battle format) and their Bradley-Terry ratings.

Ratings follow the LMSYS Chatbot Arena method: a Bradley-Terry model ``P(i beats j) = 1 / (1 +
10^((R_j - R_i) / 400))`` fitted by maximum likelihood, ties (also "both bad") counting as half a win
for each side, on the Elo scale ``400 * r + 1000`` with the base policy anchored at 1000. Uncertainty
comes from a bootstrap: the battles are resampled with replacement (multinomial counts) ``rounds``
times with a fixed seed, the model is refitted each time, and the 2.5 / 97.5 percentiles give 95%
intervals. A version's rank is 1 + the number of versions whose interval lies entirely above its own,
so versions that cannot be told apart share a rank.

The fit is a damped Newton iteration in numpy on the concave log-likelihood. A tiny ridge term keeps
it finite when the maximum likelihood does not exist (a version that won or lost every battle, or
groups never compared with each other); those cases are reported as warnings, not hidden. On data
where the MLE exists the ridge moves ratings by far less than 0.1 point.

The arena tab that produces the battles lives in ``core.compare.arena``.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import ValidationError
from core.serving.policies import BASE_POLICY
from storage.db import Database

WINNERS = ("model_a", "model_b", "tie", "tie (bothbad)")
OUTCOME_TO_WINNER = {"a": "model_a", "b": "model_b", "tie": "tie", "both_bad": "tie (bothbad)"}
SCALE, BASE, INIT_RATING = 400.0, 10.0, 1000.0
ELO_PER_NAT = SCALE / math.log(BASE)  # natural-log strength -> rating points
RIDGE = 1e-5  # in natural-log units; see the module docstring
MIN_BATTLES = 10  # per version: below this the leaderboard warns
DEFAULT_ROUNDS, MIN_ROUNDS, DEFAULT_SEED = 200, 100, 42


class BattlesError(ValidationError):
    """A battles file or battle list cannot give a leaderboard."""

    code = "invalid_battles"


@dataclass(frozen=True)
class Battle:
    """One battle in the FastChat clean-battle shape."""

    model_a: str
    model_b: str
    winner: str


# ------------------------------------------------------------------------------------ reading battles


def check_battles(battles: Sequence[Battle], where: str = "battles") -> list[Battle]:
    """Refuse battles no leaderboard can be built from: unknown winners, self-battles, one model only."""
    unknown = [(i, b.winner) for i, b in enumerate(battles, 1) if b.winner not in WINNERS]
    if unknown:
        shown = ", ".join(f"#{i}: {w!r}" for i, w in unknown[:5]) + (" …" if len(unknown) > 5 else "")
        raise BattlesError(
            f"{len(unknown)} battle(s) in {where} have an unknown winner ({shown})",
            hint=f"winner must be one of {', '.join(WINNERS)}",
        )
    if not battles:
        raise BattlesError(f"There are no battles in {where}", hint="vote in the arena tab or pass a battles file")
    models = {m for b in battles for m in (b.model_a, b.model_b)}
    if len(models) < 2:
        raise BattlesError(
            f"{where} has only one model ({', '.join(models)})",
            hint="a leaderboard needs battles between at least two models",
        )
    selfs = [i for i, b in enumerate(battles, 1) if b.model_a == b.model_b]
    if selfs:
        raise BattlesError(
            f"{len(selfs)} battle(s) in {where} pit a model against itself (#{selfs[0]})",
            hint="drop them: a battle needs two different models",
        )
    return list(battles)


def read_battles_file(path: Path | str) -> list[Battle]:
    """Battles from a FastChat clean-battle file: JSON lines, or one JSON array (clean_battle_*.json).

    Each record needs ``model_a``, ``model_b`` and ``winner`` in {model_a, model_b, tie, tie (bothbad)};
    other fields (judge, tstamp, conversations, ...) are ignored. Errors name the line.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BattlesError(
            f"Cannot read the battles file {path}: {exc.strerror or exc}", hint="check the path"
        ) from exc
    except UnicodeDecodeError as exc:
        raise BattlesError(f"{path} is not UTF-8 text", hint="pass a JSONL file of battles") from exc
    if text.lstrip().startswith("["):
        try:
            records = list(enumerate(json.loads(text), 1))
        except ValueError as exc:
            raise BattlesError(f"{path} is not valid JSON: {exc}", hint="pass JSON lines or a JSON array") from exc
        label = "record"
    else:
        records = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append((number, json.loads(line)))
            except ValueError as exc:
                raise BattlesError(
                    f"Line {number} of {path} is not JSON: {exc}", hint="one battle object per line"
                ) from exc
        label = "line"
    battles = []
    for number, record in records:
        if (
            not isinstance(record, dict)
            or not all(isinstance(record.get(k), str) and record.get(k) for k in ("model_a", "model_b"))
            or "winner" not in record
        ):
            raise BattlesError(
                f"{label.capitalize()} {number} of {path} lacks model_a, model_b or winner",
                hint='each battle looks like {"model_a": "x", "model_b": "y", "winner": "tie"}',
            )
        battles.append(Battle(record["model_a"], record["model_b"], str(record["winner"])))
    return check_battles(battles, str(path))


def battles_from_db(db: Database) -> list[Battle]:
    """Arena battles under the versions' current names, without undone or redacted votes."""
    rows = db.query(
        "SELECT coalesce(pa.name, b.model_a) AS model_a, coalesce(pb.name, b.model_b) AS model_b, b.winner"
        " FROM battles b LEFT JOIN preferences p ON p.id = b.preference_id"
        " LEFT JOIN policies pa ON pa.id = b.policy_a_id LEFT JOIN policies pb ON pb.id = b.policy_b_id"
        " WHERE p.id IS NULL OR (p.retracted_at IS NULL AND p.redacted_at IS NULL) ORDER BY b.id"
    )
    return [Battle(r["model_a"], r["model_b"], r["winner"]) for r in rows]


def battles_jsonl(battles: Iterable[Battle]) -> str:
    """The FastChat clean-battle JSONL text of ``battles`` (what ``launch.py leaderboard --battles`` reads)."""
    return "".join(json.dumps({"model_a": b.model_a, "model_b": b.model_b, "winner": b.winner}) + "\n" for b in battles)


# ------------------------------------------------------------------------------------ Bradley-Terry


@dataclass
class Tally:
    """Battles reduced to what the likelihood needs: ``wins[i, j]`` = wins of i over j, ties half each."""

    models: list[str]
    wins: np.ndarray
    games: np.ndarray  # wins + wins.T: battles between i and j

    @property
    def battles_per_model(self) -> np.ndarray:
        return self.games.sum(axis=1)


class _Encoded:
    """Battles as distinct (i, j, kind) cells with counts, so a bootstrap round is one multinomial draw."""

    def __init__(self, battles: Sequence[Battle], models: list[str]) -> None:
        index = {m: k for k, m in enumerate(models)}
        kinds = {"model_a": 0, "model_b": 1, "tie": 2, "tie (bothbad)": 2}
        cells = Counter((index[b.model_a], index[b.model_b], kinds[b.winner]) for b in battles)
        keys = np.array(list(cells), dtype=np.int64).reshape(-1, 3)
        self.i, self.j, kind = keys[:, 0], keys[:, 1], keys[:, 2]
        self.counts = np.array(list(cells.values()), dtype=np.float64)
        self.to_a = np.choose(kind, [1.0, 0.0, 0.5])  # share of each battle credited to i over j
        self.to_b = 1.0 - self.to_a
        self.n = len(models)

    def wins(self, counts: np.ndarray) -> np.ndarray:
        wins = np.zeros((self.n, self.n))
        np.add.at(wins, (self.i, self.j), counts * self.to_a)
        np.add.at(wins, (self.j, self.i), counts * self.to_b)
        return wins


def model_order(battles: Sequence[Battle]) -> list[str]:
    return sorted({m for b in battles for m in (b.model_a, b.model_b)})


def tally(battles: Sequence[Battle], models: list[str] | None = None) -> Tally:
    models = models or model_order(battles)
    wins = _Encoded(battles, models)
    w = wins.wins(wins.counts)
    return Tally(models, w, w + w.T)


def _log_likelihood(r: np.ndarray, wins: np.ndarray, ridge: float) -> float:
    diff = r[:, None] - r[None, :]
    return float(-(wins * np.logaddexp(0.0, -diff)).sum() - 0.5 * ridge * (r @ r))


def fit_strengths(wins: np.ndarray, ridge: float = RIDGE, tol: float = 1e-9, max_iter: int = 100) -> np.ndarray:
    """Bradley-Terry MLE (natural-log strengths, mean 0) by damped Newton on ``wins[i, j]``.

    Log-likelihood ``sum_ij wins_ij * log sigmoid(r_i - r_j) - ridge/2 |r|^2``: concave, so Newton with a
    backtracking line search converges from zero; the ridge makes the Hessian definite (and the sum of
    the strengths zero at the optimum, as the gradient of the pure likelihood always sums to zero).
    """
    n = wins.shape[0]
    games = wins + wins.T
    r = np.zeros(n)
    current = _log_likelihood(r, wins, ridge)
    for _ in range(max_iter):
        p = 1.0 / (1.0 + np.exp(-(r[:, None] - r[None, :])))
        grad = (wins - games * p).sum(axis=1) - ridge * r
        if np.abs(grad).max() < tol:
            break
        info = games * p * (1.0 - p)  # Fisher information of each pair
        neg_hessian = np.diag(info.sum(axis=1) + ridge) - info
        step = np.linalg.solve(neg_hessian, grad)
        t = 1.0
        while t > 1e-8:
            candidate = _log_likelihood(r + t * step, wins, ridge)
            if candidate >= current - 1e-12:
                break
            t *= 0.5
        r, current = r + t * step, candidate
    return r - r.mean()


def to_ratings(strengths: np.ndarray, models: list[str], anchor: str | None) -> np.ndarray:
    """Elo scale 400·r + 1000 (r in log10 units), shifted so ``anchor`` sits at 1000 (else the mean)."""
    ratings = ELO_PER_NAT * strengths + INIT_RATING
    if anchor is not None and anchor in models:
        ratings += INIT_RATING - ratings[models.index(anchor)]
    return ratings


def bt_ratings(battles: Sequence[Battle], anchor: str | None = BASE_POLICY) -> dict[str, float]:
    """Point ratings only (no bootstrap): what pairing and quick checks need."""
    t = tally(battles)
    return dict(zip(t.models, to_ratings(fit_strengths(t.wins), t.models, anchor).tolist()))


# ------------------------------------------------------------------------------------ leaderboard


@dataclass
class Leaderboard:
    models: list[str]
    ratings: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    rank: np.ndarray
    battles_per_model: np.ndarray
    win_rate: np.ndarray  # observed share of points i took from j (ties half), NaN if never met
    total_battles: int
    anchor: str | None
    rounds: int
    seed: int
    min_battles: int
    warnings: list[str] = field(default_factory=list)

    def rows(self) -> list[dict[str, Any]]:
        """One row per model, best first: rank, rating, 95% CI, battles, too-few flag."""
        order = sorted(range(len(self.models)), key=lambda k: (-self.ratings[k], self.models[k]))
        return [
            {
                "rank": int(self.rank[k]),
                "model": self.models[k],
                "rating": round(float(self.ratings[k]), 1),
                "ci_low": round(float(self.ci_low[k]), 1),
                "ci_high": round(float(self.ci_high[k]), 1),
                "battles": int(self.battles_per_model[k]),
                "too_few_battles": bool(self.battles_per_model[k] < self.min_battles),
            }
            for k in order
        ]

    def to_json(self) -> dict[str, Any]:
        """The headless shape: ``{"ratings": {model: rating}, "ci": {model: [low, high]}, "battles": n}``."""
        return {
            "ratings": {m: round(float(r), 2) for m, r in zip(self.models, self.ratings)},
            "ci": {
                m: [round(float(lo), 2), round(float(hi), 2)]
                for m, lo, hi in zip(self.models, self.ci_low, self.ci_high)
            },
            "battles": self.total_battles,
        }


def ranks_from_intervals(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """1 + how many models' lower bound lies above this model's upper bound."""
    return 1 + (low[None, :] > high[:, None]).sum(axis=1)


def _components(games: np.ndarray) -> list[list[int]]:
    seen: set[int] = set()
    parts = []
    for start in range(games.shape[0]):
        if start in seen:
            continue
        stack, part = [start], []
        seen.add(start)
        while stack:
            k = stack.pop()
            part.append(k)
            for nxt in np.flatnonzero(games[k] > 0):
                if int(nxt) not in seen:
                    seen.add(int(nxt))
                    stack.append(int(nxt))
        parts.append(sorted(part))
    return parts


def _warnings(t: Tally, min_battles: int, anchor: str | None) -> list[str]:
    notes = []
    counts = t.battles_per_model
    few = [f"{m} ({int(c)})" for m, c in zip(t.models, counts) if c < min_battles]
    if few:
        notes.append(
            f"Too few battles: {', '.join(few)} fought fewer than {min_battles}; "
            "their ratings are shown but are very uncertain."
        )
    for k, m in enumerate(t.models):
        won, lost = t.wins[k].sum(), t.wins[:, k].sum()
        if lost == 0 or won == 0:
            notes.append(
                f"{m} {'won' if lost == 0 else 'lost'} every battle: its rating is only a "
                f"{'lower' if lost == 0 else 'upper'} bound."
            )
    parts = _components(t.games)
    if len(parts) > 1:
        groups = " | ".join(", ".join(t.models[k] for k in part) for part in parts)
        notes.append(
            f"Some models were never compared, even indirectly ({groups}): ratings across these "
            "groups are not comparable."
        )
    if anchor is not None and anchor not in t.models:
        notes.append(f"{anchor} has no battles: ratings are centred on a mean of {INIT_RATING:.0f} instead.")
    return notes


def compute_leaderboard(
    battles: Sequence[Battle],
    anchor: str | None = BASE_POLICY,
    rounds: int = DEFAULT_ROUNDS,
    seed: int = DEFAULT_SEED,
    min_battles: int = MIN_BATTLES,
) -> Leaderboard:
    """Ratings, bootstrap 95% intervals, ranks, battle counts, win rates and warnings for ``battles``."""
    battles = check_battles(battles)
    if rounds < MIN_ROUNDS:
        raise ValidationError(
            f"{rounds} bootstrap rounds are too few for 95% intervals", hint=f"use at least {MIN_ROUNDS}"
        )
    models = model_order(battles)
    encoded = _Encoded(battles, models)
    wins = encoded.wins(encoded.counts)
    t = Tally(models, wins, wins + wins.T)
    ratings = to_ratings(fit_strengths(wins), models, anchor)
    rng = np.random.default_rng(seed)
    total = int(encoded.counts.sum())
    samples = np.empty((rounds, len(models)))
    for k, counts in enumerate(rng.multinomial(total, encoded.counts / total, size=rounds)):
        samples[k] = to_ratings(fit_strengths(encoded.wins(counts.astype(np.float64))), models, anchor)
    low, high = np.percentile(samples, [2.5, 97.5], axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        win_rate = np.where(t.games > 0, wins / t.games, np.nan)
    return Leaderboard(
        models,
        ratings,
        low,
        high,
        ranks_from_intervals(low, high),
        t.battles_per_model,
        win_rate,
        total,
        anchor if anchor in models else None,
        rounds,
        seed,
        min_battles,
        _warnings(t, min_battles, anchor),
    )


def format_table(board: Leaderboard) -> str:
    """Plain-text leaderboard for the terminal."""
    lines = [f"{'rank':>4}  {'model':<24} {'rating':>8}  {'95% CI':>17}  {'battles':>7}"]
    for row in board.rows():
        lines.append(
            f"{row['rank']:>4}  {row['model']:<24} {row['rating']:>8.1f}  "
            f"[{row['ci_low']:>7.1f}, {row['ci_high']:>7.1f}]  {row['battles']:>7}"
            + ("  too few battles" if row["too_few_battles"] else "")
        )
    return "\n".join(
        lines
        + [f"{board.total_battles} battles, {board.rounds} bootstrap rounds (seed {board.seed})"]
        + [f"warning: {w}" for w in board.warnings]
    )


def headless_leaderboard(
    battles_file: Path | str | None,
    data_dir: Path | str,
    anchor: str | None = None,
    rounds: int = DEFAULT_ROUNDS,
    seed: int = DEFAULT_SEED,
) -> Leaderboard:
    """``launch.py leaderboard``: battles from a FastChat file, else from the data dir's database.

    Without ``anchor`` the base policy sits at 1000 when it fought, else the mean rating is 1000 (the
    FastChat convention for files of other models).
    """
    if battles_file is not None:
        battles = read_battles_file(battles_file)
    else:
        db = Database.in_data_dir(data_dir)
        try:
            battles = check_battles(battles_from_db(db), f"the arena battles of {data_dir}")
        finally:
            db.close()
    if anchor is None:
        anchor = BASE_POLICY if BASE_POLICY in model_order(battles) else None
    elif anchor not in model_order(battles):
        raise BattlesError(f"The anchor {anchor!r} has no battles", hint="anchor on a model that fought")
    return compute_leaderboard(battles, anchor, rounds, seed)


def leaderboard_from_db(
    db: Database, rounds: int = DEFAULT_ROUNDS, seed: int = DEFAULT_SEED, min_battles: int = MIN_BATTLES
) -> Leaderboard:
    """The leaderboard of the arena battles stored in the studio, anchored on the base policy."""
    return compute_leaderboard(battles_from_db(db), BASE_POLICY, rounds, seed, min_battles)
