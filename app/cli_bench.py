"""``launch.py bench``: standard benchmarks of a version and its parent through lm-evaluation-harness
(core.compare.benchmarks does the work; the studio must be stopped, DuckDB has one writer)."""

from __future__ import annotations

import argparse
import json
import sys

from app.cli import cli_database, prepare_model
from core.config import Settings


def bench_command(settings: Settings, args: argparse.Namespace) -> int:
    """Exit 0, or 1 when a task regressed against the parent (for scripts and CI)."""
    from tqdm import tqdm

    from core.compare.benchmarks import BenchSettings, benchmark_version

    tasks = tuple(t.strip() for t in args.tasks.split(",") if t.strip())
    bench = BenchSettings(
        tasks=tasks, limit=args.limit, num_fewshot=args.num_fewshot, chat_template=not args.no_chat_template
    )
    model_path = prepare_model(settings)
    db = cli_database(settings, "stop it to benchmark from the command line")
    try:
        with tqdm(total=100, desc=f"benchmarking {args.version}", unit="%", file=sys.stderr) as bar:

            def show(fraction: float, text: str) -> None:
                bar.set_postfix_str(text[:60])
                bar.update(max(0, round(fraction * 100) - bar.n))

            result = benchmark_version(
                db, model_path, args.version, bench, args.against, progress=show, margin_points=args.margin
            )
    finally:
        db.close()
    if args.json:
        print(json.dumps(result))
    else:
        guard = result["adapter"]
        print(
            f"{result['version']} against {result['against'] or '(nothing)'}; adapter applied: "
            f"{guard.get('adapter_applied')}{' (identical to base)' if guard.get('identical_to_base') else ''}; "
            f"lm-eval {result['settings']['lm_eval_version']}, chat template "
            f"{'on' if result['settings']['chat_template'] else 'off'}, limit {result['settings']['limit']}"
        )
        for row in result["tasks"]:
            against = (
                ""
                if row["against_value"] is None
                else (
                    f"  vs {row['against_value']:.3f}  {row['change_points']:+.1f} pts"
                    + ("  REGRESSED" if row["regressed"] else "")
                )
            )
            err = f" ± {row['stderr']:.3f}" if row["stderr"] is not None else ""
            print(f"  {row['task']:24} {row['metric']:10} {row['value']:.3f}{err}{against}")
    return 1 if result["regressions"] else 0
