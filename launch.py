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
    python launch.py gate v2 [--json]                                        the release gate (exit 1: fails)
    python launch.py bench v2 [--tasks studio-offline,ifeval] [--limit N]    standard benchmarks vs the parent
    python launch.py backup [--backup-repo R | --backup-dir D] [--list]      one snapshot, or list them
    python launch.py restore [--repo R | --dir D] [--revision REV] [--force] restore into an empty data dir
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

from app.cli import (  # noqa: E402
    constitution_command,
    export_command,
    gate_command,
    hash_password_command,
    import_command,
    judge_command,
    leaderboard_command,
    prepare_model,
    report_command,
    safety_command,
    train_command,
)
from app.cli_backup import backup_command, restore_command, restore_on_start  # noqa: E402
from app.cli_bench import bench_command  # noqa: E402
from core.config import Settings, load_settings  # noqa: E402
from core.errors import StudioError  # noqa: E402


def _options(serving: bool, top_level: bool) -> argparse.ArgumentParser:
    """Shared flags. Sub-command copies suppress their defaults so `--port 1 serve` keeps the 1."""
    opts = argparse.ArgumentParser(add_help=False, argument_default=None if top_level else argparse.SUPPRESS)
    opts.add_argument(
        "--data-dir",
        help="data directory: DuckDB file, models, runs (env STUDIO_DATA_DIR, "
        "default ./data; /data on a Space with persistent storage)",
    )
    opts.add_argument(
        "--model",
        help="base policy: 'default' (SmolLM2-135M-Instruct, offline), 'tiny', "
        "a local model directory or a Hub id (env STUDIO_MODEL)",
    )
    opts.add_argument(
        "--backup-repo",
        help="Hub dataset repo (owner/name) for continuous backups, restored on an "
        "empty disk at start; token from HF_TOKEN (env STUDIO_BACKUP_REPO)",
    )
    opts.add_argument(
        "--backup-dir", help="or a directory for the backups: another disk, a mounted bucket (env STUDIO_BACKUP_DIR)"
    )
    opts.add_argument(
        "--backup-every",
        type=int,
        help="seconds between backups when something changed (env STUDIO_BACKUP_EVERY, default 300)",
    )
    opts.add_argument(
        "--backup-public", action="store_true", default=None, help="create the backup repo public (default private)"
    )
    opts.add_argument(
        "--backup-checkpoints",
        action="store_true",
        default=None,
        help="also keep the newest checkpoint of a job still training",
    )
    if serving:
        opts.add_argument(
            "--chat-dtype",
            help="precision of the chat model: auto (bf16 where the hardware "
            "computes it natively, else fp32), float32, bfloat16 or float16 (env STUDIO_CHAT_DTYPE)",
        )
        opts.add_argument("--host", help="interface to listen on (env STUDIO_HOST, default 127.0.0.1)")
        opts.add_argument("--port", type=int, help="port of the one server (env STUDIO_PORT, default 7860)")
        opts.add_argument(
            "--inference-url",
            help="OpenAI-compatible inference server for chat, pairs, arena and "
            "compare, e.g. http://127.0.0.1:8000/v1 (env STUDIO_INFERENCE_URL; key from "
            "STUDIO_INFERENCE_API_KEY)",
        )
        opts.add_argument(
            "--inference-model",
            help="model name to request from it (env STUDIO_INFERENCE_MODEL, default: the first it lists)",
        )
    return opts


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="launch.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_options(serving=True, top_level=True)],
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser(
        "serve", parents=[_options(serving=True, top_level=False)], help="serve the studio (the default command)"
    )
    sub.add_parser(
        "provision",
        parents=[_options(serving=False, top_level=False)],
        help="prepare the base model in the data dir and exit",
    )
    train = sub.add_parser(
        "train",
        parents=[_options(serving=False, top_level=False)],
        help="train a new policy version headless (same pipeline as the Train page)",
    )
    train.add_argument("--algorithm", required=True, help="sft, reward, dpo, kto, orpo or online_rl")
    train.add_argument("--parent", default="base", help="version to start from (the reference model)")
    train.add_argument("--reward-model", help="online RL: the reward model to optimise (rm1, ...)")
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a hyperparameter, e.g. --set beta=0.2 --set max_steps=20 (repeatable)",
    )
    train.add_argument("--filters", default="{}", help='data filters as JSON, e.g. \'{"labelers": ["ada"]}\'')
    train.add_argument(
        "--launch",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="launch mode, written as the job's accelerate config: e.g. --launch mode=ddp --launch "
        "num_processes=2 (modes: single, ddp, fsdp, deepspeed_zero2, deepspeed_zero3; also "
        "num_machines, machine_rank, main_process_ip, main_process_port)",
    )
    train.add_argument("--dry-run", action="store_true", help="only report usable data and estimates")
    train.add_argument(
        "--no-report",
        action="store_true",
        help="skip the 'what changed' report after training (later: launch.py report vN)",
    )
    rep = sub.add_parser(
        "report",
        parents=[_options(serving=False, top_level=False)],
        help="what changed in a version vs its parent (or --against): held-out preference "
        "accuracy, KL, length, refusals, diversity, a verdict (studio stopped; while it "
        "runs, use GET /api/policies/NAME/report)",
    )
    rep.add_argument("version", help="the version to report on (v1, v2, ...)")
    rep.add_argument("--against", help="the version to compare with (default: its parent)")
    rep.add_argument("--json", action="store_true", help="print the whole report as JSON")
    rep.add_argument("--refresh", action="store_true", help="compute it again even if one is stored")
    for flag, what in (
        ("--prompts", "held-out prompts each version answers"),
        ("--max-new-tokens", "longest generated answer"),
        ("--max-pairs", "most held-out labeled pairs scored"),
        ("--seed", "seed of the report's sampling"),
    ):  # core.compare.report.ReportSettings (importing it here would load torch for every command)
        rep.add_argument(flag, type=int, help=f"{what} (default: as the reports after every job); implies --refresh")
    gate = sub.add_parser(
        "gate",
        parents=[_options(serving=False, top_level=False)],
        help="the release gate of a version: learned, human check, safety, benchmarks, KL; exit 0 "
        "when it passes, 1 when a check fails (studio stopped; while it runs, use GET "
        "/api/policies/NAME/gate)",
    )
    gate.add_argument("version", help="the version to gate (v1, v2, ...)")
    gate.add_argument("--against", help="the version to compare with (default: its parent)")
    gate.add_argument("--json", action="store_true", help='print {"version", "against", "passed", "checks"}')
    bench = sub.add_parser(
        "bench",
        parents=[_options(serving=False, top_level=False)],
        help="standard benchmarks of a version and its parent through lm-evaluation-harness "
        "(exit 1: a task regressed); studio stopped",
    )
    bench.add_argument("version", help="the version to benchmark (v1, v2, ...; base alone works too)")
    bench.add_argument(
        "--tasks",
        default="studio-offline",
        help="comma-separated lm-eval tasks or groups: "
        "studio-offline (shipped, offline; the default) or e.g. ifeval,arc_easy where datasets "
        "can be downloaded",
    )
    bench.add_argument("--limit", type=int, help="at most this many examples per task (a quick look)")
    bench.add_argument("--num-fewshot", type=int, help="few-shot examples (default: each task's own)")
    bench.add_argument("--no-chat-template", action="store_true", help="score raw prompts, without the chat template")
    bench.add_argument("--against", help="compare with this version (default: the parent)")
    bench.add_argument(
        "--margin",
        type=float,
        help="regression margin in points for this run (default: the "
        "studio's setting, 2 unless an admin changed it on the Compare page)",
    )
    bench.add_argument(
        "--json",
        action="store_true",
        help="print adapter_applied, the settings and per task the "
        "metric, value and stderr for the version and against",
    )
    jud = sub.add_parser(
        "judge",
        parents=[_options(serving=False, top_level=False)],
        help="an AI judge labels the pairs no person voted on (studio stopped; while it runs, "
        "use POST /api/judge-runs)",
    )
    jud.add_argument(
        "--judge", help="rm:<rmN>, policy[:<vN>] or an OpenAI-compatible <url>#<model>; key from STUDIO_JUDGE_API_KEY"
    )
    jud.add_argument(
        "--source",
        default="unlabeled",
        help="unlabeled (default: chat pairs no person voted on), "
        "queue:NAME (a labeling queue's prompts, answered twice by the base policy) or labeled (pairs "
        "people voted on: calibration)",
    )
    jud.add_argument(
        "--estimate", action="store_true", help="only say what a run would cost (pairs, requests, seconds, tokens)"
    )
    jud.add_argument("--list", action="store_true", help="list the judge runs so far")
    jud.add_argument("--json", action="store_true", help="print the result as JSON")
    saf = sub.add_parser(
        "safety-eval",
        parents=[_options(serving=False, top_level=False)],
        help="unsafe-answer and over-refusal rates of a version on the shipped red-team prompts "
        "(studio stopped; while it runs, use POST /api/policies/NAME/safety)",
    )
    saf.add_argument("version", help="the version to evaluate (base, v1, ...)")
    saf.add_argument(
        "--judge",
        help="policy[:vN] or an OpenAI-compatible <url>#<model> that says whether an answer "
        "is harmful (default: refusal phrases only, an upper bound)",
    )
    saf.add_argument("--against", help="compare with this version's latest run (default: its parent's, if any)")
    saf.add_argument("--max-new-tokens", type=int, default=96, help="longest answer")  # safety.MAX_NEW_TOKENS
    saf.add_argument("--limit", type=int, help="only this many prompts, spread over categories (a quick look)")
    saf.add_argument("--json", action="store_true", help="print the run (and the comparison) as JSON")
    con = sub.add_parser(
        "constitution",
        parents=[_options(serving=False, top_level=False)],
        help="a version critiques and revises its answers to a queue's prompts against the "
        "principles; pairs go to the Review tab (studio stopped)",
    )
    con.add_argument("--version", default="base", help="the policy version that answers, critiques and revises")
    con.add_argument("--queue", help="the labeling queue whose prompts to use")
    con.add_argument("--limit", type=int, help="at most this many prompts")
    con.add_argument("--max-new-tokens", type=int, default=192, help="longest answer, critique and revision")
    con.add_argument("--show", action="store_true", help="print the principles and exit")
    con.add_argument("--json", action="store_true", help="print the result as JSON")
    backup = sub.add_parser(
        "backup",
        parents=[_options(serving=False, top_level=False)],
        help="take one snapshot (every table, adapters, run files) to --backup-repo or "
        "--backup-dir (default <data-dir>/backups); studio stopped (while it runs: "
        "Settings -> Back up now, or POST /api/backup)",
    )
    backup.add_argument("--list", action="store_true", help="list the snapshots, newest first, and exit")
    backup.add_argument("--json", action="store_true", help="print the snapshot (or the list) as JSON")
    restore = sub.add_parser(
        "restore",
        parents=[_options(serving=False, top_level=False)],
        help="restore a snapshot into an EMPTY data dir (--force moves a used one aside)",
    )
    restore.add_argument("--repo", help="the Hub dataset repo to restore from (default: --backup-repo)")
    restore.add_argument("--dir", help="the backup directory to restore from (default: --backup-dir)")
    restore.add_argument(
        "--revision",
        help="the snapshot: a Hub commit or a directory snapshot id (default: the newest; `backup --list` shows them)",
    )
    restore.add_argument(
        "--force", action="store_true", help="move a data dir in use aside first (<dir>.before-restore-<time>)"
    )
    board = sub.add_parser(
        "leaderboard",
        parents=[_options(serving=False, top_level=False)],
        help="Bradley-Terry ratings with bootstrap 95%% CIs of arena battles (or a file)",
    )
    board.add_argument("--battles", help="FastChat clean-battle JSONL file (default: the data dir's arena battles)")
    board.add_argument("--anchor", help="model fixed at 1000 (default: base if it fought, else the mean)")
    board.add_argument("--rounds", type=int, default=200, help="bootstrap rounds (at least 100)")
    board.add_argument("--json", action="store_true", help='print {"ratings", "ci", "battles"} as JSON')
    imp = sub.add_parser(
        "import",
        parents=[_options(serving=False, top_level=False)],
        help="import a dataset file (JSONL, JSON, CSV, parquet, txt, save_to_disk folder)",
    )
    imp.add_argument("file", help="the file or save_to_disk folder; its shape is detected")
    imp.add_argument("--name", help="source name, stored as import:NAME (default: the file name)")
    imp.add_argument("--dry-run", action="store_true", help="only detect and check; write nothing")
    imp.add_argument("--json", action="store_true", help="print the report as JSON")
    imp.add_argument("--skip-bad", action="store_true", help="import the good rows, skip the bad ones")
    imp.add_argument("--queue", help="prompt lists: the labeling queue to add them to (created if missing)")
    exp = sub.add_parser(
        "export",
        parents=[_options(serving=False, top_level=False)],
        help="export an adapter, merged model, GGUF file or dataset (zip-ready folder), optionally push it",
    )
    exp.add_argument(
        "what",
        choices=["adapter", "merged", "gguf", "quantized", "dataset", "training-data", "push", "list", "manifest"],
    )
    exp.add_argument(
        "target",
        nargs="?",
        help="adapter/merged/gguf/quantized/training-data: the version (v1); "
        "dataset: preference, reward, unpaired or sft; push: the export id",
    )
    exp.add_argument(
        "--push",
        metavar="REPO",
        help="push to this Hub repo (owner/name, or name for your own namespace); token from HF_TOKEN",
    )
    exp.add_argument("--public", action="store_true", help="create the Hub repo public (default: private)")
    exp.add_argument(
        "--override",
        metavar="REASON",
        help="push even though the version fails its release gate "
        "(STUDIO_RELEASE_GATE=enforce); the reason goes into the audit log and the model card",
    )
    exp.add_argument("--dtype", default="float32", help="merged: float32, float16 or bfloat16")
    exp.add_argument(
        "--quant",
        help="gguf: f16, bf16, q8_0 (default) or q4_0; quantized (bitsandbytes, CUDA only): nf4 (default) or int8",
    )
    exp.add_argument("--format", action="append", help="dataset: parquet and/or jsonl (default both)")
    exp.add_argument("--filters", default="{}", help='dataset filters as JSON, e.g. \'{"labelers": ["ada"]}\'')
    exp.add_argument("--license", default="apache-2.0", help="licence in the card's metadata")
    exp.add_argument("--base-model-id", help="Hub id of the base model for the card (for a local base)")
    exp.add_argument("--name", help="dataset: title of the dataset card")
    sub.add_parser("hash-password", help="print a hashed password for a team users file (reads stdin or asks)")
    sub.add_parser(
        "chain", help="proof of contribution: `chain deploy` the ledger contract, `chain status`", add_help=False
    )
    return parser


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
    from core.labeling.identity import check_accounts
    from core.studio import open_studio

    check_accounts(settings)  # before anything slow: a bad users file must not wait for a model conversion
    restore_on_start(settings)
    model_path = prepare_model(settings)
    open_studio(settings, model_path)
    app = create_app()
    # torch, transformers and gradio leave ~1M long-lived objects behind; frozen, the collector's full passes
    # stop walking them, which removes its 50-100 ms pauses from the vote and chat paths
    gc.collect()
    gc.freeze()
    print(f"RLHF Studio on http://{settings.host}:{settings.port}/  (labeling: /label/, API: /api/)", flush=True)
    logging.getLogger("uvicorn.error").addFilter(_ShutdownCancellations())  # kept by uvicorn's logging setup
    # uvicorn directly (not app.run) so shutdown is bounded even while browsers keep connections open;
    # the app's lifespan closes the studio on the way out
    uvicorn.run(
        app, host=settings.host, port=settings.port, timeout_graceful_shutdown=3, access_log=False, log_level="warning"
    )


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
    cli = {
        "data_dir": args.data_dir,
        "model": args.model,
        **{
            name: getattr(args, name, None)
            for name in (
                "chat_dtype",
                "host",
                "port",
                "inference_url",
                "inference_model",
                "backup_repo",
                "backup_dir",
                "backup_every",
                "backup_public",
                "backup_checkpoints",
            )
        },
    }
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
        elif args.command == "gate":
            return gate_command(settings, args)
        elif args.command == "bench":
            return bench_command(settings, args)
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
        print(
            f"error [{exc.code}]: {exc.message}" + (f"\n  what to do: {exc.hint}" if exc.hint else ""), file=sys.stderr
        )
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
