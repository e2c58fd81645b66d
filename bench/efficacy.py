"""Efficacy benchmark (issue 13, "the loop must learn"): do labels through the studio move the model their way?

What it measures, end to end through ONE real studio server (`launch.py`, local auth mode, a fresh data dir):
  1. Pairs: prompts from a deterministic pool built here (templates x topics, never the repo's seed prompts)
     are sent through the Gradio labeling app at /label/ (gradio_client, the `/send` endpoint the UI's Send
     button calls): ONE batched call samples answers A and B of the base policy, temperature 1.0, top_p 0.95,
     --max-new-tokens (default: the labeling app's own, 256, so labelers see what the studio's users see and
     the report measures answers of the length that was labeled). Each pair is sampled once and shown to every
     synthetic labeler. Which answers hit the limit is read off the status line, as a person reads it, and sent
     with the votes (cut_a / cut_b), so training treats them as the studio treats cut answers.
  2. Votes: each rule below is a synthetic labeler that POSTs a decisive vote (a | b) to /api/votes (equal scores
     are skipped) until it has --labels of them (or --max-pairs, reported).
  3. Training: ONE DPO job per rule via POST /api/jobs, parent base, filtered to that labeler's votes, with
     the studio's defaults (no hyperparameters sent). Jobs run one after the other; train_s is the wall time
     from submit to the job's final state (child start, model load, training, saving, registration).
  4. "What changed" report: GET /api/policies/<version>/report, polled until ready; its KL to the parent
     (nats per token) and its verdict are printed. No report route -> kl=nan.
  5. Judging: on --judge-prompts held-out prompts (never labeled) the label app samples, in one batched call,
     one answer of the new version (Policy) and one of its parent (Compare with), same sampling. The rule
     scores both: win 1, tie 0.5, loss 0. oracle_win of a rule = the mean over judge prompts.

Rules (ONLY in bench/efficacy_rules.py; the studio sees votes, never rules), continuous where possible so that
most pairs are decisive (measured on the default model's samples, T=1.0, 96 tokens):
  concise    style    fewer words is better (score = -word count)                          ~100% decisive
  you        content  speaks to the reader: more you/your/yourself per 100 words             ~90% decisive
  paragraph  format   one block of text: a larger share of the words in the first paragraph  ~90% decisive
  list       format   (optional) more bulleted or numbered lines (rare in 96 tokens)          ~15% decisive
  numbers    content  (optional) more concrete numbers (digits, list markers excluded)        ~20% decisive
  coin       control  a coin flip per pair (a fixed hash of each answer): nothing to learn    100% decisive
Default: --rules concise,you,paragraph,coin (one of each kind, and the control). Each rule trains once per size in
--labels (default 40,80) as its own labeler (`rule-<name>-<size>`); the smaller size's votes are the first ones of
the larger, so one sampling pass serves every size.

How to read it: oracle_win 0.5 = the new version is indistinguishable from its parent by the rule (a coin
flip); 1.0 = it satisfies the rule better on every held-out prompt. With 24 judge prompts, one rule's figure
has a standard error of ~0.1, so read single rules with that in mind. kl = how far the version moved from its
parent (mean over rules, from the report); a high win with a tiny kl is suspicious, a high kl with a win near
0.5 means the model changed but not the way the labels asked.

The verdict (issue 25): verdict_learned = the share of the rules' runs at the smallest size whose report says
"learned"; control_learned = the share of the coin-flip control's runs (every size) that say "learned".

Targets on this machine (2 CPU cores, default model SmolLM2-135M-Instruct), at 40 labels per rule: mean
oracle_win >= 0.85, every rule >= 0.75, verdict_learned = 1.0, control_learned = 0, each job <= 5 minutes.

Run: `.venv/bin/python bench/efficacy.py` (~40+ minutes on 2 cores per size). --pairs FILE reuses the pairs.jsonl
of an earlier --keep run to re-run training and judging on identical pairs.
--hyperparams JSON measures a candidate default: it is sent with every job on top of the studio's own.
Options: --model tiny: the tiny random test model (plumbing only; its random text never says "you"), e.g.
`--model tiny --labels 12` (~5 minutes). --sample-only votes but trains nothing. --keep / --data-dir keep
pairs.jsonl, judge.jsonl (every answer with its score), server.log and runs/.

Last line: RESULT labels=40 oracle_win=... min_rule_win=... verdict_learned=... control_learned=... kl=...
train_s=... (max over jobs), train_mean_s, pairs, then per run (<rule>_<size>) win_ kl_ learned_ train_s_ votes_.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from efficacy_rules import RULES, Rule, prompt_pool, split_prompts, words  # noqa: E402
from efficacy_studio import TERMINAL, Sampling, Studio, link_default_model, say  # noqa: E402
from votegen import StudioProcess  # noqa: E402

from core.serving.generate import SamplingParams  # noqa: E402

NAN = float("nan")


# --- the benchmark ----------------------------------------------------------------------------------------


@dataclass
class RuleRun:
    rule: Rule
    labels: int = 80  # votes this run trains on (one labeler per rule and size)
    votes: int = 0
    ties: int = 0
    job_id: int | None = None
    status: str = "not run"
    version: str | None = None
    parent: str = "base"
    train_s: float = NAN
    steps: str = "?"
    hyperparams: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    kl: float = NAN
    verdict: str = ""
    wins: list[float] = field(default_factory=list)
    score_new: list[float] = field(default_factory=list)
    score_old: list[float] = field(default_factory=list)

    @property
    def labeler(self) -> str:
        return f"{self.rule.labeler}-{self.labels}"

    @property
    def name(self) -> str:
        return f"{self.rule.name}_{self.labels}"

    @property
    def learned(self) -> bool:
        return self.verdict.split(" - ")[0] == "learned"

    @property
    def oracle_win(self) -> float:
        return statistics.fmean(self.wins) if self.wins else NAN


def sample_and_vote(
    studio: Studio, runs: list[RuleRun], prompts: list[str], max_pairs: int, log: Path | None, reuse: Path | None = None
) -> int:
    """Sample pairs of the base policy until every run has its ``labels`` decisive votes; returns pairs sampled.
    A rule's runs at several sizes vote on the same pairs: the 40-label run's votes are the first 40 of the 80's.
    ``reuse``: the pairs.jsonl of an earlier run (sampled the same way, through the label app) instead of sampling
    again -- to re-run training and judging on identical pairs."""
    started = time.monotonic()
    pairs = 0
    recorded = [json.loads(line) for line in reuse.read_text().splitlines() if line.strip()] if reuse else None
    source = (
        ((r["prompt"], r["a"], r["b"], tuple(r.get("cut", (None, None)))) for r in recorded)
        if recorded is not None
        else ((prompt, *studio.pair(prompt)) for prompt in itertools.cycle(prompts))
    )
    for pairs, (prompt, a, b, cut) in enumerate(source, 1):
        if pairs > max_pairs:
            return max_pairs
        scores = {}
        for run in runs:
            scores[run.rule.name] = (run.rule.score(a), run.rule.score(b))
            if run.votes >= run.labels:
                continue
            outcome = run.rule.prefers(a, b)
            if outcome is None:
                run.ties += 1
                continue
            studio.vote(prompt, a, b, outcome, run.labeler, key=f"efficacy-{run.name}-{pairs}", cut=cut)
            run.votes += 1
        if log:
            with log.open("a") as f:
                f.write(json.dumps({"prompt": prompt, "a": a, "b": b, "cut": cut, "scores": scores}) + "\n")
        elapsed = time.monotonic() - started
        say(
            f"pairs: {pairs} in {elapsed:.0f} s ({elapsed / pairs:.1f} s/pair, {words(a)}+{words(b)} words, "
            f"{sum(map(bool, cut))} cut); votes " + " ".join(f"{r.name}={r.votes}" for r in runs)
        )
        if all(run.votes >= run.labels for run in runs):
            return pairs
    return pairs


def train(studio: Studio, run: RuleRun, job_timeout: float, hyperparams: dict[str, Any] | None = None) -> None:
    """One DPO job with the studio's defaults (plus a candidate's ``hyperparams``) on this rule's votes; waits for
    its final state."""
    if run.votes == 0:
        run.status, run.error = "no votes", "every pair was a tie for this rule: nothing to train on"
        say(f"train {run.name}: skipped, {run.error}")
        return
    started = time.monotonic()
    try:
        run.job_id = studio.submit_job(run.labeler, hyperparams)
    except RuntimeError as exc:
        run.status, run.error = "refused", str(exc)
        say(f"train {run.name}: {exc}")
        return
    last_print = 0.0
    info: dict[str, Any] = {}
    while time.monotonic() - started < job_timeout:
        info = studio.job(run.job_id)
        if info["status"] in TERMINAL:
            break
        if time.monotonic() - last_print > 30:
            last_print = time.monotonic()
            progress = info.get("progress") or {}
            say(
                f"train {run.name}: job {run.job_id} {info['status']} step {progress.get('step', '?')}/"
                f"{progress.get('max_steps', '?')} at {time.monotonic() - started:.0f} s"
            )
        time.sleep(2)
    run.train_s = time.monotonic() - started
    run.status = info.get("status", "?")
    run.version, run.parent = info.get("version"), info.get("parent") or "base"
    progress = info.get("progress") or {}
    run.steps = f"{progress.get('step', '?')}/{progress.get('max_steps', '?')}"
    run.hyperparams = (info.get("config") or {}).get("hyperparams") or {}
    if run.status != "succeeded":
        run.error = (info.get("error") or "") + (
            "" if run.status in TERMINAL else f" (still {run.status} after {job_timeout:.0f} s: gave up waiting)"
        )
    say(
        f"train {run.name}: job {run.job_id} {run.status} in {run.train_s:.0f} s, steps {run.steps}, "
        f"version {run.version}; hyperparams {compact(run.hyperparams)}"
    )
    if run.error:
        say(f"train {run.name}: error: {run.error[-1500:]}")


def compact(hyperparams: dict[str, Any]) -> str:
    keys = (
        "learning_rate",
        "num_train_epochs",
        "max_steps",
        "beta",
        "per_device_train_batch_size",
        "gradient_accumulation_steps",
        "lora_r",
        "hold_out_percent",
    )
    shown = {k: hyperparams[k] for k in keys if k in hyperparams}
    return json.dumps(shown or hyperparams)


def find(body: Any, key: str) -> Any:
    """The first value of ``key`` anywhere in a nested JSON body (the report's shape may still change)."""
    if isinstance(body, dict):
        if key in body:
            return body[key]
        values = body.values()
    elif isinstance(body, list):
        values = body
    else:
        return None
    for value in values:
        found = find(value, key)
        if found is not None:
            return found
    return None


def read_report(studio: Studio, run: RuleRun, timeout: float) -> bool:
    """Wait for the version's "what changed" report; False when the server has no report route."""
    started = time.monotonic()
    while True:
        state, body = studio.report(run.version or "")
        if state == "ready":
            metrics = find(body, "metrics") or {}
            kl = metrics.get("kl_per_token") if isinstance(metrics, dict) else None
            run.kl = float(kl) if isinstance(kl, (int, float)) else NAN
            verdict, summary = find(body, "verdict"), find(body, "summary")
            run.verdict = " - ".join(str(v) for v in (verdict, summary) if v)
            say(f"report {run.version}: kl_per_token={run.kl:.4g}; {run.verdict or '(no verdict)'}")
            return True
        if state == "missing_route":
            say(f"report {run.version}: the server has no GET /api/policies/<name>/report route: kl=nan")
            return False
        waited = time.monotonic() - started
        if state == "error" or waited > timeout or (state == "none" and waited > 60):
            run.verdict = (
                f"report {state}: {json.dumps(body)[:300]}"
                if state in ("error", "none")
                else f"report not ready after {timeout:.0f} s"
            )
            say(f"report {run.version}: {run.verdict}")
            return True
        time.sleep(3)


def judge(studio: Studio, run: RuleRun, prompts: list[str], log: Path | None) -> None:
    """New version vs its parent on the held-out prompts: one answer each per prompt, scored by the rule."""
    started = time.monotonic()
    for prompt in prompts:
        new, old, _ = studio.pair(prompt, policy=run.version or "", compare_with=run.parent)
        run.wins.append(run.rule.win(new, old))
        run.score_new.append(run.rule.score(new))
        run.score_old.append(run.rule.score(old))
        if log:
            with log.open("a") as f:
                f.write(
                    json.dumps(
                        {
                            "rule": run.name,
                            "version": run.version,
                            "prompt": prompt,
                            "new": new,
                            "old": old,
                            "win": run.wins[-1],
                        }
                    )
                    + "\n"
                )
    say(
        f"judge {run.name}: {run.version} vs {run.parent} on {len(prompts)} held-out prompts in "
        f"{time.monotonic() - started:.0f} s: oracle_win={run.oracle_win:.3f} (wins "
        f"{run.wins.count(1.0)}, ties {run.wins.count(0.5)}, losses {run.wins.count(0.0)}); mean score "
        f"{statistics.fmean(run.score_new):.2f} vs {statistics.fmean(run.score_old):.2f}"
    )


def fmt(value: float, digits: int = 3) -> str:
    return "nan" if value != value else f"{value:.{digits}f}"


def mean(values: list[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return statistics.fmean(values) if values else NAN


def print_table(runs: list[RuleRun], sample_only: bool) -> None:
    say("")
    say(
        f"{'rule_size':<12} {'kind':<8} {'votes':>5} {'ties':>5} {'job':>8} {'train_s':>8} {'steps':>7} {'version':>7} "
        f"{'kl':>8} {'win':>6} {'score new/old':>15}  verdict"
    )
    for r in runs:
        scores = f"{mean(r.score_new):.2f}/{mean(r.score_old):.2f}" if r.wins else "-"
        say(
            f"{r.name:<12} {r.rule.kind:<8} {r.votes:>5} {r.ties:>5} {r.status if not sample_only else '-':>8} "
            f"{fmt(r.train_s, 0):>8} {r.steps:>7} {r.version or '-':>7} {fmt(r.kl, 4):>8} {fmt(r.oracle_win):>6} "
            f"{scores:>15}  {r.verdict[:110] + ('...' if len(r.verdict) > 110 else '')}"
        )
    say("")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--labels",
        default="40,80",
        help="decisive votes per rule, one or more sizes "
        "(default 40,80: each rule trains once per size; the smaller size's votes are the first "
        "ones of the larger)",
    )
    parser.add_argument(
        "--model",
        choices=("default", "tiny"),
        default="default",
        help="default: SmolLM2-135M-Instruct; tiny: the random test model (plumbing only)",
    )
    parser.add_argument(
        "--rules",
        default="concise,you,paragraph,coin",
        help=f"comma-separated, from: {', '.join(RULES)} (default concise,you,paragraph,coin; coin "
        "is the coin-flip control)",
    )
    parser.add_argument("--judge-prompts", type=int, default=24, help="held-out prompts per rule (default 24)")
    studio_length = SamplingParams().max_new_tokens
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=studio_length,
        help=f"answer length cap (default {studio_length}, the labeling app's; answers labeled at one length and "
        "reported at another measured the cap, not the labels: bench 12-07 at 96)",
    )
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default 1.0)")
    parser.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling (default 0.95)")
    parser.add_argument(
        "--max-pairs",
        type=int,
        default=0,
        help="stop sampling after this many pairs even if a rule is short of votes (default 3 x --labels, at least 40)",
    )
    parser.add_argument("--job-timeout", type=float, default=3600, help="give up on a job after this (s)")
    parser.add_argument(
        "--report-timeout", type=float, default=600, help="wait this long for a report (s; 48 prompts x 2 versions)"
    )
    parser.add_argument("--sample-only", action="store_true", help="sample and vote, then stop (no training)")
    parser.add_argument(
        "--pairs",
        type=Path,
        help="reuse the pairs.jsonl of an earlier --keep run (same prompts, "
        "same label-app sampling) instead of sampling again",
    )
    parser.add_argument("--data-dir", type=Path, help="data dir to use (kept); default: a fresh temp dir")
    parser.add_argument(
        "--keep", action="store_true", help="keep the temp data dir (pairs.jsonl, judge.jsonl, server.log, runs/)"
    )
    parser.add_argument("--port", type=int, help="server port (default: a free one)")
    parser.add_argument(
        "--hyperparams",
        type=json.loads,
        default={},
        help="a candidate default to measure, as JSON sent with every job, e.g. '{\"num_train_epochs\": 3}' "
        "(default: none, the studio's own defaults); with --pairs, compares it with them on the same pairs",
    )
    args = parser.parse_args()
    if not isinstance(args.hyperparams, dict):
        parser.error("--hyperparams takes a JSON object, e.g. '{\"num_train_epochs\": 3}'")

    unknown = [name for name in args.rules.split(",") if name not in RULES]
    if unknown:
        parser.error(f"unknown rule(s) {unknown}; known: {', '.join(RULES)}")
    rules = [RULES[name] for name in args.rules.split(",")]
    label_prompts, judge_prompts = split_prompts(args.judge_prompts)
    sizes = sorted({int(n) for n in str(args.labels).split(",") if n.strip()})
    if not sizes or sizes[0] < 1:
        parser.error("--labels needs one or more positive sizes, e.g. 40 or 40,80")
    max_pairs = args.max_pairs or max(3 * sizes[-1], 40)
    sampling = Sampling(args.temperature, args.top_p, args.max_new_tokens)

    keep = args.keep or args.data_dir is not None
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="studio-bench-efficacy-")) / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    if args.model == "default":
        link_default_model(data_dir)
    bench_dir = data_dir.parent if args.data_dir is None else data_dir
    pairs_log, judge_log = bench_dir / "pairs.jsonl", bench_dir / "judge.jsonl"
    say("efficacy: rules " + "; ".join(f"{r.name} ({r.kind}: {r.description})" for r in rules))
    say(
        f"efficacy: model={args.model} labels={','.join(map(str, sizes))} "
        f"judge_prompts={len(judge_prompts)} (of {len(prompt_pool())}; {len(label_prompts)} for labeling) "
        f"sampling T={sampling.temperature} top_p={sampling.top_p} max_new_tokens={sampling.max_new_tokens}; "
        f"data dir {data_dir}"
    )

    server = StudioProcess(data_dir, bench_dir / "server.log", port=args.port, model=args.model)
    say(f"server: up at {server.url} in {server.start():.1f} s")
    studio = Studio(server.url, sampling)
    runs = [RuleRun(rule, size) for size in sizes for rule in rules]
    total_started = time.monotonic()
    try:
        pairs = sample_and_vote(studio, runs, label_prompts, max_pairs, None if args.pairs else pairs_log, args.pairs)
        short = [r.name for r in runs if r.votes < r.labels]
        say(
            f"votes: {pairs} pairs sampled; "
            + " ".join(f"{r.name}={r.votes} (ties {r.ties})" for r in runs)
            + (f"; SHORT: {', '.join(short)} (hit --max-pairs {max_pairs})" if short else "")
        )
        if not args.sample_only:
            report_route = True
            for run in runs:
                train(studio, run, args.job_timeout, args.hyperparams)
                if run.status == "succeeded" and report_route:
                    report_route = read_report(studio, run, args.report_timeout)
            for run in runs:  # a report still computing when its job's wait ran out (a busy machine): read it now
                if run.status == "succeeded" and report_route and run.verdict.startswith("report not ready"):
                    read_report(studio, run, args.report_timeout)
            for run in runs:
                if run.status == "succeeded":
                    judge(studio, run, judge_prompts, judge_log)
    finally:
        studio.close()
        code = server.stop()
        say(f"server: stopped (exit code {code}) after {time.monotonic() - total_started:.0f} s of benchmark")
        if keep:
            say(f"kept: {bench_dir} (server.log, pairs.jsonl, judge.jsonl, data/runs/)")
        else:
            shutil.rmtree(data_dir.parent, ignore_errors=True)

    print_table(runs, args.sample_only)
    for hyperparams in {json.dumps(r.hyperparams) for r in runs if r.hyperparams}:
        names = ",".join(r.name for r in runs if json.dumps(r.hyperparams) == hyperparams)
        say(f"studio defaults used by the job(s) of {names}: {hyperparams}")
    train_times = [r.train_s for r in runs if not math.isnan(r.train_s)]
    first = [r for r in runs if r.labels == sizes[0]]  # the targets are at the smallest size
    wins = [r.oracle_win for r in first if not r.rule.control]
    oracle_win = NAN if not wins or any(math.isnan(w) for w in wins) else statistics.fmean(wins)
    min_rule_win = NAN if not wins or any(math.isnan(w) for w in wins) else min(wins)

    def learned_share(picked: list[RuleRun]) -> float:
        """The share of these runs whose report verdict is "learned" (nan without any report)."""
        reported = [r for r in picked if r.verdict]
        return statistics.fmean(float(r.learned) for r in reported) if reported else NAN

    verdict_learned = learned_share([r for r in first if not r.rule.control])
    control_learned = learned_share([r for r in runs if r.rule.control])
    verdicts = []
    if not args.sample_only:
        verdicts.append(
            f"at {sizes[0]} labels: oracle_win {fmt(oracle_win)} (target >= 0.85), min_rule_win "
            f"{fmt(min_rule_win)} (target >= 0.75), verdict_learned {fmt(verdict_learned, 2)} (target "
            f"1.0), control_learned {fmt(control_learned, 2)} over every size (target 0), slowest job "
            f"{fmt(max(train_times, default=NAN), 0)} s (target <= 300)"
        )
        if any(r.status != "succeeded" for r in runs):
            verdicts.append(
                "jobs not succeeded: " + ", ".join(f"{r.name}={r.status}" for r in runs if r.status != "succeeded")
            )
        if args.hyperparams:
            verdicts.append(f"candidate hyperparams {json.dumps(args.hyperparams)} on top of the studio's defaults")
        say("summary: " + "; ".join(verdicts))
    per_rule = " ".join(
        f"win_{r.name}={fmt(r.oracle_win)} kl_{r.name}={fmt(r.kl, 4)} learned_{r.name}="
        f"{int(r.learned)} train_s_{r.name}={fmt(r.train_s, 0)} votes_{r.name}={r.votes}"
        for r in runs
    )
    say(
        f"RESULT labels={sizes[0]} oracle_win={fmt(oracle_win)} min_rule_win={fmt(min_rule_win)} "
        f"verdict_learned={fmt(verdict_learned, 2)} control_learned={fmt(control_learned, 2)} "
        f"kl={fmt(mean([r.kl for r in runs]), 4)} train_s={fmt(max(train_times, default=NAN), 0)} "
        f"train_mean_s={fmt(mean(train_times), 0)} pairs={pairs} {per_rule}"
    )


if __name__ == "__main__":
    main()
