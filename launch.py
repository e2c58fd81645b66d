#!/usr/bin/env python
"""RLHF Studio command line.

    python launch.py [--host H] [--port P] [--data-dir DIR] [--model SPEC]   serve the studio (default)
    python launch.py provision [--data-dir DIR] [--model SPEC]               prepare the model and exit
    python launch.py train --algorithm dpo [--parent v1] [--set beta=0.2]    train a version headless
    python launch.py report v2 [--against v1] [--json] [--refresh]           what changed in a version
    python launch.py import FILE [--name N] [--dry-run] [--json] [--skip-bad]   import a dataset
    python launch.py export gguf v2 [--quant q8_0] [--push REPO]              a GGUF file + Ollama Modelfile
    python launch.py judge --judge rm1 [--estimate] [--json]                 an AI judge labels unlabeled pairs
    python launch.py constitution --version v2 --queue main [--limit 50]     self-critique pairs for review
    python launch.py safety-eval v2 [--judge policy] [--json]                unsafe and over-refusal rates
    python launch.py hash-password                                           hash a team password

One process serves everything on one port: the Streamlit console at /, the Gradio labeling app at
/label and the REST API at /api.
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
from pathlib import Path
from typing import Callable

# Offline by default and nothing phones home: set before Streamlit / Gradio / HF libraries import.
for key, value in {
    "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
    "STREAMLIT_SERVER_HEADLESS": "true",
    "GRADIO_ANALYTICS_ENABLED": "False",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(key, value)
sys.path.insert(0, str(Path(__file__).resolve().parent))

from core.config import Settings, load_settings  # noqa: E402
from core.errors import StudioError  # noqa: E402


def _options(serving: bool, top_level: bool) -> argparse.ArgumentParser:
    """Shared flags. Sub-command copies suppress their defaults so `--port 1 serve` keeps the 1."""
    opts = argparse.ArgumentParser(add_help=False,
                                   argument_default=None if top_level else argparse.SUPPRESS)
    opts.add_argument("--data-dir", help="data directory: DuckDB file, models, runs (env STUDIO_DATA_DIR, "
                      "default ./data; /data on a Space with persistent storage)")
    opts.add_argument("--model", help="base policy: 'default' (SmolLM2-135M-Instruct, offline), 'tiny', "
                      "a local model directory or a Hub id (env STUDIO_MODEL)")
    if serving:
        opts.add_argument("--chat-dtype", help="precision of the chat model: auto (bf16 where the hardware "
                          "computes it natively, else fp32), float32, bfloat16 or float16 (env STUDIO_CHAT_DTYPE)")
        opts.add_argument("--host", help="interface to listen on (env STUDIO_HOST, default 127.0.0.1)")
        opts.add_argument("--port", type=int, help="port of the one server (env STUDIO_PORT, default 7860)")
        opts.add_argument("--inference-url", help="OpenAI-compatible inference server for chat, pairs, arena and "
                          "compare, e.g. http://127.0.0.1:8000/v1 (env STUDIO_INFERENCE_URL; key from "
                          "STUDIO_INFERENCE_API_KEY)")
        opts.add_argument("--inference-model", help="model name to request from it (env STUDIO_INFERENCE_MODEL, "
                          "default: the first it lists)")
    return opts


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="launch.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     parents=[_options(serving=True, top_level=True)])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("serve", parents=[_options(serving=True, top_level=False)],
                   help="serve the studio (the default command)")
    sub.add_parser("provision", parents=[_options(serving=False, top_level=False)],
                   help="prepare the base model in the data dir and exit")
    train = sub.add_parser("train", parents=[_options(serving=False, top_level=False)],
                           help="train a new policy version headless (same pipeline as the Train page)")
    train.add_argument("--algorithm", required=True, help="sft, reward, dpo, kto, orpo or online_rl")
    train.add_argument("--parent", default="base", help="version to start from (the reference model)")
    train.add_argument("--reward-model", help="online RL: the reward model to optimise (rm1, ...)")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="a hyperparameter, e.g. --set beta=0.2 --set max_steps=20 (repeatable)")
    train.add_argument("--filters", default="{}", help='data filters as JSON, e.g. \'{"labelers": ["ada"]}\'')
    train.add_argument("--launch", action="append", default=[], metavar="KEY=VALUE",
                       help="launch mode, written as the job's accelerate config: e.g. --launch mode=ddp --launch "
                       "num_processes=2 (modes: single, ddp, fsdp, deepspeed_zero2, deepspeed_zero3; also "
                       "num_machines, machine_rank, main_process_ip, main_process_port)")
    train.add_argument("--dry-run", action="store_true", help="only report usable data and estimates")
    rep = sub.add_parser("report", parents=[_options(serving=False, top_level=False)],
                         help="what changed in a version vs its parent (or --against): held-out preference "
                              "accuracy, KL, length, refusals, diversity, a verdict (studio stopped; while it "
                              "runs, use GET /api/policies/NAME/report)")
    rep.add_argument("version", help="the version to report on (v1, v2, ...)")
    rep.add_argument("--against", help="the version to compare with (default: its parent)")
    rep.add_argument("--json", action="store_true", help="print the whole report as JSON")
    rep.add_argument("--refresh", action="store_true", help="compute it again even if one is stored")
    jud = sub.add_parser("judge", parents=[_options(serving=False, top_level=False)],
                         help="an AI judge labels the pairs no person voted on (studio stopped; while it runs, "
                              "use POST /api/judge-runs)")
    jud.add_argument("--judge", help="rm:<rmN>, policy[:<vN>] or an OpenAI-compatible <url>#<model>; key from "
                     "STUDIO_JUDGE_API_KEY")
    jud.add_argument("--source", default="unlabeled", help="unlabeled (default: chat pairs no person voted on), "
                     "queue:NAME (a labeling queue's prompts, answered twice by the base policy) or labeled (pairs "
                     "people voted on: calibration)")
    jud.add_argument("--estimate", action="store_true", help="only say what a run would cost (pairs, requests, "
                     "seconds, tokens)")
    jud.add_argument("--list", action="store_true", help="list the judge runs so far")
    jud.add_argument("--json", action="store_true", help="print the result as JSON")
    saf = sub.add_parser("safety-eval", parents=[_options(serving=False, top_level=False)],
                         help="unsafe-answer and over-refusal rates of a version on the shipped red-team prompts "
                              "(studio stopped; while it runs, use POST /api/policies/NAME/safety)")
    saf.add_argument("version", help="the version to evaluate (base, v1, ...)")
    saf.add_argument("--judge", help="policy[:vN] or an OpenAI-compatible <url>#<model> that says whether an answer "
                     "is harmful (default: refusal phrases only, an upper bound)")
    saf.add_argument("--against", help="compare with this version's latest run (default: its parent's, if any)")
    saf.add_argument("--max-new-tokens", type=int, default=96, help="longest answer")
    saf.add_argument("--limit", type=int, help="only this many prompts, spread over categories (a quick look)")
    saf.add_argument("--json", action="store_true", help="print the run (and the comparison) as JSON")
    con = sub.add_parser("constitution", parents=[_options(serving=False, top_level=False)],
                         help="a version critiques and revises its answers to a queue's prompts against the "
                              "principles; pairs go to the Review tab (studio stopped)")
    con.add_argument("--version", default="base", help="the policy version that answers, critiques and revises")
    con.add_argument("--queue", help="the labeling queue whose prompts to use")
    con.add_argument("--limit", type=int, help="at most this many prompts")
    con.add_argument("--max-new-tokens", type=int, default=192, help="longest answer, critique and revision")
    con.add_argument("--show", action="store_true", help="print the principles and exit")
    con.add_argument("--json", action="store_true", help="print the result as JSON")
    backup = sub.add_parser("backup", parents=[_options(serving=False, top_level=False)],
                            help="copy the database to a folder of parquet files (studio stopped; while it "
                                 "runs, use Settings -> Back up now)")
    backup.add_argument("--to", help="backup folder (default <data-dir>/backups/<timestamp>)")
    restore = sub.add_parser("restore", parents=[_options(serving=False, top_level=False)],
                             help="rebuild the database of an EMPTY data dir from a backup folder")
    restore.add_argument("backup_dir", help="a folder written by backup")
    board = sub.add_parser("leaderboard", parents=[_options(serving=False, top_level=False)],
                           help="Bradley-Terry ratings with bootstrap 95%% CIs of arena battles (or a file)")
    board.add_argument("--battles", help="FastChat clean-battle JSONL file (default: the data dir's arena battles)")
    board.add_argument("--anchor", help="model fixed at 1000 (default: base if it fought, else the mean)")
    board.add_argument("--rounds", type=int, default=200, help="bootstrap rounds (at least 100)")
    board.add_argument("--json", action="store_true", help='print {"ratings", "ci", "battles"} as JSON')
    imp = sub.add_parser("import", parents=[_options(serving=False, top_level=False)],
                         help="import a dataset file (JSONL, JSON, CSV, parquet, txt, save_to_disk folder)")
    imp.add_argument("file", help="the file or save_to_disk folder; its shape is detected")
    imp.add_argument("--name", help="source name, stored as import:NAME (default: the file name)")
    imp.add_argument("--dry-run", action="store_true", help="only detect and check; write nothing")
    imp.add_argument("--json", action="store_true", help="print the report as JSON")
    imp.add_argument("--skip-bad", action="store_true", help="import the good rows, skip the bad ones")
    imp.add_argument("--queue", help="prompt lists: the labeling queue to add them to (created if missing)")
    exp = sub.add_parser("export", parents=[_options(serving=False, top_level=False)],
                         help="export an adapter, merged model, GGUF file or dataset (zip-ready folder), optionally push "
                              "it")
    exp.add_argument("what", choices=["adapter", "merged", "gguf", "quantized", "dataset", "training-data", "push",
                                         "list", "manifest"])
    exp.add_argument("target", nargs="?", help="adapter/merged/gguf/quantized/training-data: the version (v1); dataset: preference, reward, "
                     "unpaired or sft; push: the export id")
    exp.add_argument("--push", metavar="REPO", help="push to this Hub repo (owner/name, or name for your own "
                     "namespace); token from HF_TOKEN")
    exp.add_argument("--public", action="store_true", help="create the Hub repo public (default: private)")
    exp.add_argument("--dtype", default="float32", help="merged: float32, float16 or bfloat16")
    exp.add_argument("--quant", help="gguf: f16, bf16, q8_0 (default) or q4_0; quantized (bitsandbytes, CUDA "
                     "only): nf4 (default) or int8")
    exp.add_argument("--format", action="append", help="dataset: parquet and/or jsonl (default both)")
    exp.add_argument("--filters", default="{}", help='dataset filters as JSON, e.g. \'{"labelers": ["ada"]}\'')
    exp.add_argument("--license", default="apache-2.0", help="licence in the card's metadata")
    exp.add_argument("--base-model-id", help="Hub id of the base model for the card (for a local base)")
    exp.add_argument("--name", help="dataset: title of the dataset card")
    sub.add_parser("hash-password", help="print a hashed password for a team users file (reads stdin or asks)")
    sub.add_parser("chain", help="proof of contribution: `chain deploy` the ledger contract, `chain status`", add_help=False)
    return parser


def prepare_model(settings: Settings) -> Path | str:
    """Resolve the model spec to a local directory, converting the default model once if needed."""
    from core.serving.models import resolve_model

    return resolve_model(settings.model, settings.data_dir)


class _ShutdownCancellations:
    """A logging filter for uvicorn: at shutdown it cancels the streams browsers keep open (Gradio's event stream)
    after the grace period and logs each as "Exception in ASGI application" with a traceback; that is the
    expected end of an open tab, nothing a user can act on. Every other error is still logged."""

    def filter(self, record: object) -> bool:
        import asyncio

        exc_info = getattr(record, "exc_info", None)
        return not (exc_info and isinstance(exc_info[1], asyncio.CancelledError))


def serve(settings: Settings) -> None:
    import logging

    import uvicorn

    from app.server import create_app
    from core.studio import open_studio

    model_path = prepare_model(settings)
    studio = open_studio(settings, model_path)
    app = create_app(studio)
    # torch, transformers and gradio leave ~1M long-lived objects behind; frozen, the collector's full passes
    # stop walking them, which removes its 50-100 ms pauses from the vote and chat paths
    gc.collect()
    gc.freeze()
    print(f"RLHF Studio on http://{settings.host}:{settings.port}/  (labeling: /label/, API: /api/)",
          flush=True)
    logging.getLogger("uvicorn.error").addFilter(_ShutdownCancellations())  # kept by uvicorn's logging setup
    # uvicorn directly (not app.run) so shutdown is bounded even while browsers keep connections open;
    # the app's lifespan closes the studio on the way out
    uvicorn.run(app, host=settings.host, port=settings.port, timeout_graceful_shutdown=3,
                access_log=False, log_level="warning")


def parse_assignments(pairs: list[str]) -> dict[str, object]:
    """``key=value`` strings to typed values (JSON when it parses: numbers, booleans, lists)."""
    import json

    from core.errors import ValidationError

    values: dict[str, object] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ValidationError(f"--set {pair!r} is not KEY=VALUE", hint="e.g. --set learning_rate=5e-5")
        try:
            values[key.strip()] = json.loads(raw)
        except ValueError:
            values[key.strip()] = raw
    return values


def train_command(settings: Settings, args: argparse.Namespace) -> int:
    """Headless training: dry run, freeze data, run the child in the foreground with a progress bar."""
    import json

    from tqdm import tqdm

    from core.errors import ValidationError
    from core.labeling.identity import ensure_user
    from core.serving.policies import version_of_job
    from core.training.request import JobRequest, job_filters
    from core.studio import Studio
    from core.training.launch import LaunchConfig

    try:
        filters = job_filters(json.loads(args.filters))
    except ValueError as exc:
        raise ValidationError(f"--filters is not JSON: {exc}", hint='e.g. --filters \'{"labelers": ["ada"]}\'')
    studio = Studio(settings, prepare_model(settings))
    try:
        request = JobRequest(args.algorithm, args.parent, parse_assignments(args.set), filters, args.reward_model,
                             LaunchConfig.from_dict({k: str(v) if k in ("mode", "main_process_ip") else v
                                                     for k, v in parse_assignments(args.launch).items()}))
        report = studio.supervisor.dry_run(request)
        print(json.dumps(report.to_dict(), indent=2, default=str))
        if args.dry_run:
            return 0 if report.ok else 3
        if not report.ok:
            print(f"error: {report.reason}", file=sys.stderr)
            return 3
        # whoever can run this command owns the data dir: they act as the admin "operator"
        job_id = studio.supervisor.submit(request, ensure_user(studio.db, "operator", "admin", "cli"))
        bar = tqdm(total=report.estimate.get("steps") or None, desc=f"job {job_id} {args.algorithm}", unit="step")

        def show(progress: dict) -> None:
            if progress.get("max_steps"):
                bar.total = progress["max_steps"]
            bar.n = progress.get("step", bar.n)
            bar.refresh()

        job = studio.supervisor.run_blocking(job_id, show)
        bar.close()
        version = version_of_job(studio.db, job_id)
        if job["status"] == "succeeded":
            print(f"job {job_id} succeeded: new version {version} (runs/{job_id}/)")
            if args.algorithm != "reward":
                report = _report_with_progress(studio, version, None, refresh=True)
                print(f"what changed: {report['summary']}")
                for warning in report["warnings"]:
                    print(f"warning: {warning}")
            return 0
        print(f"job {job_id} {job['status']}: {job['error'] or ''}", file=sys.stderr)
        return 1
    finally:
        studio.close()


def _report_with_progress(studio, version: str, against: str | None, refresh: bool) -> dict:
    """The stored report, or a new one computed here with a progress bar."""
    from tqdm import tqdm

    from core.compare.report import compute_report, latest_report

    report = None if refresh else latest_report(studio.db, version, against)
    if report is None:
        bar = tqdm(total=100, desc=f"report {version}", unit="%", file=sys.stderr)

        def show(value: float, text: str) -> None:
            bar.n = round(100 * value)
            bar.set_postfix_str(text[:60])
            bar.refresh()

        report = compute_report(studio, version, against, progress=show)
        bar.close()
    return report


def report_command(settings: Settings, args: argparse.Namespace) -> int:
    """What changed in a version: stored after its job, computed here when missing (or with --refresh)."""
    import json

    from core.studio import Studio

    cli_database(settings, f"ask the running studio: GET /api/policies/{args.version}/report").close()
    studio = Studio(settings, prepare_model(settings))
    try:
        report = _report_with_progress(studio, args.version, args.against, args.refresh)
    finally:
        studio.close()
    if args.json:
        print(json.dumps(report, default=str))
        return 0
    m = report["metrics"]
    print(report["summary"])
    rows = [("held-out pairs", m.get("held_out_pairs")), ("prompts answered", m.get("prompts")),
            ("KL per token", m.get("kl_per_token")), ("answer length", (m.get("length_against"), m.get("length_version"))),
            ("refusal rate", (m.get("refusal_against"), m.get("refusal_version"))),
            ("distinct-2", (m.get("distinct2_against"), m.get("distinct2_version"))),
            (f"win rate ({m.get('reward_model')})", m.get("win_rate"))]
    for name, value in rows:
        if isinstance(value, tuple):
            value = " -> ".join("n/a" if v is None else f"{v:.3g}" for v in value)
        elif isinstance(value, float):
            value = f"{value:.3g}"
        print(f"  {name:<24} {'n/a' if value is None else value}")
    for warning in report["warnings"]:
        print(f"warning: {warning}")
    return 0


def judge_command(settings: Settings, args: argparse.Namespace) -> int:
    """Run an AI judge headless with a progress bar (Ctrl-C cancels: judged pairs stay saved)."""
    import json

    from tqdm import tqdm

    from core.errors import ValidationError
    from core.labeling.identity import ensure_user
    from core.studio import Studio

    cli_database(settings, "start it from the API: POST /api/judge-runs").close()
    studio = Studio(settings, prepare_model(settings))
    try:
        if args.list:
            runs = studio.judge_runs.list()
            print(json.dumps(runs, indent=2) if args.json else "\n".join(
                f"#{r['id']} {r['judge']} on {r['source']}: {r['status']}, {r['done']}/{r['total']} pairs, "
                f"{r['ties']} position ties, {r['unreadable']} unreadable" for r in runs) or "no judge runs yet")
            return 0
        if not args.judge:
            raise ValidationError("judge needs --judge", hint="e.g. --judge rm1, --judge policy, "
                                  "--judge http://gpu-box:8000/v1#Qwen/Qwen3-8B")
        if args.estimate:
            from core.judging.runs import estimate

            cost = estimate(studio, args.judge, args.source)
            print(json.dumps(cost) if args.json else
                  f"{cost['describe']} on {cost['source']}: {cost['pairs']} pairs, {cost['requests']} requests, "
                  f"~{cost['seconds']:.0f} s" + (f", ~{cost['tokens']} tokens" if cost["tokens"] else ""))
            return 0
        operator = ensure_user(studio.db, "operator", "admin", "cli")
        run_id = studio.judge_runs.start(args.judge, args.source, operator)
        run = studio.judge_runs.get(run_id)
        with tqdm(total=run["total"], desc="judge", unit="pair", disable=args.json) as bar:
            try:
                while run["status"] == "running":
                    studio.judge_runs.join(run_id, timeout=0.5)
                    run = studio.judge_runs.get(run_id)
                    bar.update(run["done"] - bar.n)
            except KeyboardInterrupt:
                studio.judge_runs.cancel(run_id)
                studio.judge_runs.join(run_id)
                run = studio.judge_runs.get(run_id)
        print(json.dumps(run) if args.json else
              f"judge run {run['id']} {run['status']}: {run['done']}/{run['total']} pairs labeled by {run['judge']}"
              f" ({run['ties']} position ties, {run['unreadable']} unreadable)" + (f"; {run['error']}" if run["error"]
                                                                                   else ""))
        return 0 if run["status"] == "succeeded" else 1
    finally:
        studio.close()


def safety_command(settings: Settings, args: argparse.Namespace) -> int:
    """A safety evaluation headless; exit 1 when the version got worse than the one it is compared with."""
    import json

    from tqdm import tqdm

    from core.compare import safety
    from core.labeling.identity import ensure_user
    from core.studio import Studio

    cli_database(settings, f"ask the running studio: POST /api/policies/{args.version}/safety").close()
    studio = Studio(settings, prepare_model(settings))
    try:
        operator = ensure_user(studio.db, "operator", "admin", "cli")
        with tqdm(total=100, desc="safety", unit="%", disable=args.json) as bar:
            def show(fraction: float, text: str) -> None:
                bar.update(round(fraction * 100) - bar.n)
                bar.set_postfix_str(text[:50])

            run = safety.run_safety_eval(studio, args.version, operator, args.judge, args.max_new_tokens, show,
                                         limit=args.limit)
        change = safety.safety_change(studio.db, args.version, args.against)
    finally:
        studio.close()
    if args.json:
        print(json.dumps({"run": run, "change": change}, default=str))
    else:
        print(f"{args.version}: unsafe answers {safety.percent(run['unsafe_rate'])} of {run['harmful']} harmful requests "
              f"(judged by {run['judged_by']}), over-refusals {safety.percent(run['over_refusal_rate'])} of "
              f"{run['benign']} benign ones")
        for category, figures in run["by_category"].items():
            print(f"  {category:<16} unsafe {safety.percent(figures['unsafe_rate']):>5}   "
                  f"over-refusal {safety.percent(figures['over_refusal_rate']):>5}")
        if change:
            print(f"against {change['against']}: " + ("; ".join(change["reasons"]) or "not worse")
                  + "".join(f" ({note})" for note in change["notes"]))
    return 1 if change and change["worse"] else 0


def constitution_command(settings: Settings, args: argparse.Namespace) -> int:
    """Constitutional self-critique headless, with a progress bar."""
    import json

    from tqdm import tqdm

    from core.judging import constitution
    from core.errors import ValidationError
    from core.serving.generate import SamplingParams
    from core.labeling.identity import ensure_user
    from core.studio import Studio

    cli_database(settings, "run it from the console's Labeling setup page").close()
    studio = Studio(settings, prepare_model(settings))
    try:
        if args.show:
            print("\n".join(f"{i}. {p}" for i, p in enumerate(constitution.principles(studio.db), 1)))
            return 0
        if not args.queue:
            raise ValidationError("constitution needs --queue", hint="e.g. --queue main (see the Labeling setup page)")
        rows = constitution.queue_prompt_rows(studio.db, args.queue, args.limit)
        operator = ensure_user(studio.db, "operator", "admin", "cli")
        with tqdm(total=len(rows), desc="constitution", unit="prompt", disable=args.json) as bar:
            result = constitution.run_constitution(
                studio, operator, args.version, [text for _, text in rows], prompt_ids=[i for i, _ in rows],
                sampling=SamplingParams(max_new_tokens=args.max_new_tokens),
                progress=lambda fraction, text: bar.update(round(fraction * len(rows)) - bar.n))
        print(json.dumps(result) if args.json else
              f"{result['pairs']} pairs stored for review by ai:constitution ({result['skipped_identical']} identical "
              f"and {result['skipped_empty']} empty revisions skipped) in {result['seconds']:.0f} s")
        return 0
    finally:
        studio.close()


def cli_database(settings: Settings, alternative: str):
    """The data dir's database for a CLI command that writes; a running studio holds it (one writer)."""
    from core.errors import StorageError
    from storage.db import Database

    try:
        return Database(settings.db_path)
    except StorageError as exc:
        raise StorageError(exc.message, hint=f"DuckDB allows one writer: stop the running studio first, or "
                           f"{alternative}") from exc


def backup_command(settings: Settings, args: argparse.Namespace) -> int:
    from storage.db import default_backup_dir

    db = cli_database(settings, "use its Settings page (Back up now)")
    try:
        print(f"backup written to {db.backup(Path(args.to) if args.to else default_backup_dir(settings.data_dir))}")
    finally:
        db.close()
    return 0


def restore_command(settings: Settings, args: argparse.Namespace) -> int:
    from storage.db import restore_backup

    print(f"restored {restore_backup(args.backup_dir, settings.db_path)}; start the studio with "
          f"--data-dir {settings.data_dir}")
    return 0


def leaderboard_command(settings: Settings, args: argparse.Namespace) -> int:
    """Headless leaderboard; warnings (too few battles, ...) go to stderr so --json stays parseable."""
    import json

    from core.compare.leaderboard import format_table, headless_leaderboard

    board = headless_leaderboard(args.battles, settings.data_dir, args.anchor, args.rounds)
    print(json.dumps(board.to_json()) if args.json else format_table(board))
    for warning in board.warnings if args.json else ():
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def import_command(settings: Settings, args: argparse.Namespace) -> int:
    """Dataset import in one transaction; --dry-run never opens the database. Exit 3: bad rows."""
    import json

    from core.data import datasets_io
    from core.data.import_formats import inspect_file
    from core.labeling.identity import ensure_user

    path = Path(args.file)
    source = datasets_io.source_name(args.name, path.name)
    parsed = inspect_file(path)
    if args.dry_run:
        print(json.dumps(parsed.summary()) if args.json else parsed.describe())
        for error in parsed.errors if not args.json else ():
            print(f"  row {error['row']}: {error['error']}")
        return 3 if parsed.errors else 0
    db = cli_database(settings, "import through its Data page")
    try:
        operator = ensure_user(db, "operator", "admin", "cli")   # whoever runs this owns the data dir
        result = datasets_io.import_parsed(db, parsed, source=source, skip_bad=args.skip_bad,
                                           user_id=operator.id, queue=args.queue,
                                           details={"file": path.name,
                                                    "sha256": datasets_io.file_hash(path)})
    finally:
        db.close()
    print(json.dumps(result.to_dict()) if args.json else
          f"imported {path.name} as {result.source} ({result.format}): {result.pairs} pairs, {result.labeled} "
          f"labeled answers, {result.prompts} prompts; {result.duplicates} already there, "
          f"{len(result.skipped_rows)} bad rows skipped")
    return 0


def export_command(settings: Settings, args: argparse.Namespace) -> int:
    """Export (and push) headless; prints the export folder, then the commit URL. Exit 2 on any error."""
    import json

    from tqdm import tqdm

    from core.share import cards, exports, hub
    from core.errors import ValidationError
    from core.labeling.identity import ensure_user

    db = cli_database(settings, "export from its Export page")
    try:
        operator = ensure_user(db, "operator", "admin", "cli")   # whoever runs this owns the data dir
        card = cards.CardOptions(license=args.license, base_model_id=args.base_model_id)
        if args.what in ("list", "manifest"):
            rows = exports.list_exports(db) if args.what == "list" else hub.adapter_manifest(db)
            print(json.dumps(rows, indent=2, default=str))
            return 0
        if not args.target:
            raise ValidationError(f"export {args.what} needs a target", hint="see `launch.py export --help`")

        def tensor_bar() -> "Callable[[int, int, str], None]":
            bar = tqdm(desc="gguf", unit="tensor")

            def show(done: int, total: int, name: str) -> None:
                bar.total = total
                bar.update(done - bar.n)
                bar.set_postfix_str(name)
                if done == total:
                    bar.close()
            return show

        if args.what == "push":
            export_id, repo = int(args.target), args.push
            if not repo:
                raise ValidationError("export push needs --push REPO", hint="e.g. --push ada/my-adapter")
        else:
            result = {"adapter": lambda: exports.export_adapter(db, settings.data_dir, args.target, operator, card),
                      "merged": lambda: exports.export_merged(db, settings.data_dir, args.target, operator, args.dtype, card),
                      "gguf": lambda: exports.export_gguf(db, settings.data_dir, args.target, operator,
                                                          args.quant or "q8_0", card, progress=tensor_bar()),
                      "quantized": lambda: exports.export_quantized(db, settings.data_dir, args.target, operator,
                                                                    args.quant or "nf4", card),
                      "training-data": lambda: exports.export_training_data(db, settings.data_dir, args.target, operator,
                                                                            card),
                      "dataset": lambda: exports.export_dataset(db, settings.data_dir, args.target, operator,
                                                                _json_arg(args.filters, "--filters"),
                                                                args.format or exports.DATASET_FORMATS, card, args.name),
                      }[args.what]()
            print(f"export {result.id}: {result.path}")
            if args.what in ("adapter", "merged", "gguf", "quantized"):
                from core.compare.safety import safety_change

                change = safety_change(db, args.target)
                if change and change["worse"]:
                    print(f"warning: {args.target} is less safe than {change['against']}: "
                          + "; ".join(change["reasons"]), file=sys.stderr)
            export_id, repo = result.id, args.push
        if repo:
            bar = tqdm(total=100, desc="push", unit="%")

            def show(fraction: float, text: str) -> None:
                bar.n = round(fraction * 100)
                bar.set_postfix_str(text[:60])   # also refreshes the bar

            pushed = hub.push_export(db, export_id, operator, hub.resolve_token(), repo, not args.public,
                                     progress=show)
            bar.close()
            print(f"pushed to {pushed.repo_id}: {pushed.commit_url}")
        return 0
    finally:
        db.close()


def _json_arg(text: str, flag: str) -> object:
    import json

    from core.errors import ValidationError

    try:
        return json.loads(text)
    except ValueError as exc:
        raise ValidationError(f"{flag} is not JSON: {exc}", hint='e.g. \'{"labelers": ["ada"]}\'') from None


def hash_password_command() -> int:
    import getpass

    from core.labeling.identity import hash_password

    password = getpass.getpass("Password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
    if not password:
        print("error: empty password", file=sys.stderr)
        return 2
    print(hash_password(password))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["chain"]:  # its own options: core/chain/__main__.py
        from core.chain.__main__ import main as chain_main
        return chain_main(argv[1:])
    args = build_parser().parse_args(argv)
    from core.serving.hardware import quiet_unactionable_warnings

    quiet_unactionable_warnings()
    if args.command == "hash-password":
        return hash_password_command()
    cli = {"data_dir": args.data_dir, "model": args.model,
           **{name: getattr(args, name, None) for name in ("chat_dtype", "host", "port", "inference_url",
                                                           "inference_model")}}
    try:
        settings = load_settings(cli)
        if args.command == "provision":
            print(prepare_model(settings))
        elif args.command == "leaderboard":
            return leaderboard_command(settings, args)
        elif args.command == "train":
            return train_command(settings, args)
        elif args.command == "report":
            return report_command(settings, args)
        elif args.command == "judge":
            return judge_command(settings, args)
        elif args.command == "safety-eval":
            return safety_command(settings, args)
        elif args.command == "constitution":
            return constitution_command(settings, args)
        elif args.command == "import":
            return import_command(settings, args)
        elif args.command == "export":
            return export_command(settings, args)
        elif args.command == "backup":
            return backup_command(settings, args)
        elif args.command == "restore":
            return restore_command(settings, args)
        else:
            serve(settings)
    except StudioError as exc:
        print(f"error [{exc.code}]: {exc.message}" + (f"\n  what to do: {exc.hint}" if exc.hint else ""),
              file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
