"""The headless commands of ``launch.py``: train, report, judge, safety-eval, constitution, backup, restore,
leaderboard, import, export and hash-password.

Thin like the other UIs: each parses its arguments, calls core, prints the result (``--json`` for scripts) and
returns the exit code; a StudioError reaches ``launch.main``, which prints its code, message and hint.
Heavy libraries are imported inside the commands, so ``launch.py --help`` stays quick.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from core.config import Settings

if TYPE_CHECKING:
    from core.compare.report import Report, ReportSettings


def prepare_model(settings: Settings) -> Path | str:
    """Resolve the model spec to a local directory, converting the default model once if needed."""
    from core.serving.models import resolve_model

    return resolve_model(settings.model, settings.data_dir)


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
    from core.studio import Studio
    from core.training.distributed import LaunchConfig
    from core.training.request import JobRequest, job_filters

    try:
        filters = job_filters(json.loads(args.filters))
    except ValueError as exc:
        raise ValidationError(f"--filters is not JSON: {exc}", hint='e.g. --filters \'{"labelers": ["ada"]}\'') from exc
    studio = Studio(settings, prepare_model(settings))
    try:
        request = JobRequest(
            args.algorithm,
            args.parent,
            parse_assignments(args.set),
            filters,
            args.reward_model,
            LaunchConfig.from_dict(
                {
                    k: str(v) if k in ("mode", "main_process_ip") else v
                    for k, v in parse_assignments(args.launch).items()
                }
            ),
        )
        report = studio.supervisor.dry_run(request)
        print(json.dumps(report.to_dict(), indent=2, default=str))
        if args.dry_run:
            return 0 if report.ok else 3
        if not report.ok:
            print(f"error: {report.reason}", file=sys.stderr)
            return 3
        # The report is computed below, in the foreground; the studio's background evaluations after a job (report,
        # safety) would repeat it and still be running in threads when this process exits (a C++ abort at exit).
        studio.supervisor.on_new_version = None
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
            if args.algorithm != "reward" and args.no_report:
                print(f"what changed: skipped (--no-report); later: launch.py report {version}")
            elif args.algorithm != "reward":
                assert version is not None  # a succeeded job registered its version
                changes = _report_with_progress(studio, version, None, fresh=True)
                print(f"what changed: {changes['summary']}")
                for warning in changes["warnings"]:
                    print(f"warning: {warning}")
            return 0
        print(f"job {job_id} {job['status']}: {job['error'] or ''}", file=sys.stderr)
        return 1
    finally:
        studio.close()


def _report_with_progress(
    studio, version: str, against: str | None, fresh: bool, settings: ReportSettings | None = None
) -> Report:
    """The stored report, or (when none is stored, or ``fresh``) a new one computed here with a progress bar."""
    from tqdm import tqdm

    from core.compare.report import compute_report, latest_report

    report = None if fresh else latest_report(studio.db, version, against)
    if report is None:
        bar = tqdm(total=100, desc=f"report {version}", unit="%", file=sys.stderr)

        def show(value: float, text: str) -> None:
            bar.n = round(100 * value)
            bar.set_postfix_str(text[:60])
            bar.refresh()

        report = compute_report(studio, version, against, settings=settings, progress=show)
        bar.close()
    return report


def report_command(settings: Settings, args: argparse.Namespace) -> int:
    """What changed in a version: stored after its job, computed here when missing (or with --refresh, or with
    report settings chosen on the command line)."""
    import dataclasses
    import json

    from core.compare.report import QUICK_REPORT, ReportSettings, thorough
    from core.studio import Studio

    chosen = {f.name: getattr(args, f.name) for f in dataclasses.fields(ReportSettings)}  # launch.py: one flag each
    fresh = args.refresh or any(value is not None for value in chosen.values())
    report_settings = ReportSettings.chosen(**chosen)  # checked before the model loads
    cli_database(settings, f"ask the running studio: GET /api/policies/{args.version}/report").close()
    studio = Studio(settings, prepare_model(settings))
    try:
        report = _report_with_progress(studio, args.version, args.against, fresh, report_settings)
    finally:
        studio.close()
    if args.json:
        print(json.dumps(report, default=str))
        return 0
    m = report["metrics"]
    print(report["summary"])
    if not thorough(report):
        print(QUICK_REPORT)
    rows = [
        ("held-out pairs", m.get("held_out_pairs")),
        ("log-prob ranking acc.", (m.get("accuracy_against"), m.get("accuracy_version"))),
        ("prompts answered", m.get("prompts")),
        ("KL per token", m.get("kl_per_token")),
        ("answer length", (m.get("length_against"), m.get("length_version"))),
        ("cut at the length limit", (m.get("cut_against"), m.get("cut_version"))),
        ("refusal rate", (m.get("refusal_against"), m.get("refusal_version"))),
        ("distinct-2", (m.get("distinct2_against"), m.get("distinct2_version"))),
        (f"win rate ({m.get('reward_model')})", m.get("win_rate")),
    ]
    for name, value in rows:
        if isinstance(value, tuple):
            value = " -> ".join("n/a" if v is None else f"{v:.3g}" for v in value)
        elif isinstance(value, float):
            value = f"{value:.3g}"
        print(f"  {name:<24} {'n/a' if value is None else value}")
    for line in (m.get("label_signature") or {}).get("preferences") or []:
        print(line)
    for e in report.get("evidence") or []:
        print(f"evidence: {e['says'] or 'not significant'}: {e['text']} (p = {e['adjusted_p']:.2g} corrected)")
    for warning in report["warnings"]:
        print(f"warning: {warning}")
    return 0


def gate_command(settings: Settings, args: argparse.Namespace) -> int:
    """The release gate of a version: exit 0 when it passes, 1 when a check fails (for scripts and CI)."""
    import json

    from core.compare.gate import evaluate_gate, gate_overrides

    db = cli_database(settings, f"ask the running studio: GET /api/policies/{args.version}/gate")
    try:
        gate = evaluate_gate(db, args.version, args.against)
        overrides = gate_overrides(db, args.version)
    finally:
        db.close()
    if args.json:
        print(json.dumps(gate.to_dict()))
    else:
        print(f"{gate.version} against {gate.against}: {'passed' if gate.passed else 'FAILED'}")
        for line in gate.lines():
            print(f"  {line}")
        for o in overrides:
            print(f"overridden by {o['by']} at {o['at'][:16]} for {o.get('target') or 'a push'}: {o['reason']}")
    return 0 if gate.passed else 1


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
            print(
                json.dumps(runs, indent=2)
                if args.json
                else "\n".join(
                    f"#{r['id']} {r['judge']} on {r['source']}: {r['status']}, {r['done']}/{r['total']} pairs, "
                    f"{r['ties']} position ties, {r['unreadable']} unreadable"
                    for r in runs
                )
                or "no judge runs yet"
            )
            return 0
        if not args.judge:
            raise ValidationError(
                "judge needs --judge",
                hint="e.g. --judge rm1, --judge policy, --judge http://gpu-box:8000/v1#Qwen/Qwen3-8B",
            )
        if args.estimate:
            from core.judging.runs import estimate

            cost = estimate(studio, args.judge, args.source)
            print(
                json.dumps(cost)
                if args.json
                else f"{cost['describe']} on {cost['source']}: {cost['pairs']} pairs, {cost['requests']} requests, "
                f"~{cost['seconds']:.0f} s" + (f", ~{cost['tokens']} tokens" if cost["tokens"] else "")
            )
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
        print(
            json.dumps(run)
            if args.json
            else f"judge run {run['id']} {run['status']}: {run['done']}/{run['total']} pairs labeled by {run['judge']}"
            f" ({run['ties']} position ties, {run['unreadable']} unreadable)"
            + (f"; {run['error']}" if run["error"] else "")
        )
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

            run = safety.run_safety_eval(
                studio, args.version, operator, args.judge, args.max_new_tokens, show, limit=args.limit
            )
        change = safety.safety_change(studio.db, args.version, args.against)
    finally:
        studio.close()
    if args.json:
        print(json.dumps({"run": run, "change": change}, default=str))
    else:
        print(
            f"{args.version}: unsafe answers {safety.percent(run['unsafe_rate'])} of {run['harmful']} harmful "
            f"requests (judged by {run['judged_by']}), over-refusals {safety.percent(run['over_refusal_rate'])} of "
            f"{run['benign']} benign ones"
        )
        for category, figures in run["by_category"].items():
            print(
                f"  {category:<16} unsafe {safety.percent(figures['unsafe_rate']):>5}   "
                f"over-refusal {safety.percent(figures['over_refusal_rate']):>5}"
            )
        if change:
            print(
                f"against {change['against']}: "
                + ("; ".join(change["reasons"]) or "not worse")
                + "".join(f" ({note})" for note in change["notes"])
            )
    return 1 if change and change["worse"] else 0


def constitution_command(settings: Settings, args: argparse.Namespace) -> int:
    """Constitutional self-critique headless, with a progress bar."""
    import json

    from tqdm import tqdm

    from core.errors import ValidationError
    from core.judging import constitution
    from core.labeling.identity import ensure_user
    from core.serving.generate import SamplingParams
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
                studio,
                operator,
                args.version,
                [text for _, text in rows],
                prompt_ids=[i for i, _ in rows],
                sampling=SamplingParams(max_new_tokens=args.max_new_tokens),
                progress=lambda fraction, text: bar.update(round(fraction * len(rows)) - bar.n),
            )
        print(
            json.dumps(result)
            if args.json
            else f"{result['pairs']} pairs stored for review by ai:constitution "
            f"({result['skipped_identical']} identical and {result['skipped_empty']} empty revisions skipped) "
            f"in {result['seconds']:.0f} s"
        )
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
        raise StorageError(
            exc.message, hint=f"DuckDB allows one writer: stop the running studio first, or {alternative}"
        ) from exc


def leaderboard_command(settings: Settings, args: argparse.Namespace) -> int:
    """Headless leaderboard; warnings (too few battles, ...) go to stderr so --json stays parseable."""
    import json

    from core.compare.leaderboard import format_table, headless_leaderboard

    board = headless_leaderboard(args.battles, settings.data_dir, args.anchor, args.rounds)
    style = None
    if args.battles is None:  # the studio's own battles carry both answers: style control too
        from core.compare.arena import people_comparisons
        from core.compare.style import style_controlled
        from storage.db import Database

        db = Database.in_data_dir(settings.data_dir)
        try:
            style = style_controlled(people_comparisons(db), board.anchor or "base")
        finally:
            db.close()
    if args.json:
        print(json.dumps({**board.to_json(), **({"style_controlled": style.to_dict()} if style else {})}))
    else:
        print(format_table(board))
        if style:
            print(
                "style-controlled (length and Markdown accounted for): "
                + ", ".join(f"{m} {r:.1f}" for m, r in sorted(style.controlled.items(), key=lambda kv: -kv[1]))
            )
    for warning in (
        [*board.warnings, *(style.warnings if style else [])] if args.json else (style.warnings if style else [])
    ):
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
        operator = ensure_user(db, "operator", "admin", "cli")  # whoever runs this owns the data dir
        result = datasets_io.import_parsed(
            db,
            parsed,
            source=source,
            skip_bad=args.skip_bad,
            user_id=operator.id,
            queue=args.queue,
            details={"file": path.name, "sha256": datasets_io.file_hash(path)},
        )
    finally:
        db.close()
    print(
        json.dumps(result.to_dict())
        if args.json
        else f"imported {path.name} as {result.source} ({result.format}): {result.pairs} pairs, {result.labeled} "
        f"labeled answers, {result.prompts} prompts; {result.duplicates} already there, "
        f"{len(result.skipped_rows)} bad rows skipped"
    )
    return 0


def export_command(settings: Settings, args: argparse.Namespace) -> int:
    """Export (and push) headless; prints the export folder, then the commit URL. Exit 2 on any error."""
    import json

    from tqdm import tqdm

    from core.errors import ValidationError
    from core.labeling.identity import ensure_user
    from core.share import cards, exports, hub

    db = cli_database(settings, "export from its Export page")
    try:
        operator = ensure_user(db, "operator", "admin", "cli")  # whoever runs this owns the data dir
        card = cards.CardOptions(license=args.license, base_model_id=args.base_model_id)
        if args.what in ("list", "manifest"):
            rows = exports.list_exports(db) if args.what == "list" else hub.adapter_manifest(db)
            print(json.dumps(rows, indent=2, default=str))
            return 0
        if not args.target:
            raise ValidationError(f"export {args.what} needs a target", hint="see `launch.py export --help`")

        def tensor_bar() -> Callable[[int, int, str], None]:
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
            result = {
                "adapter": lambda: exports.export_adapter(db, settings.data_dir, args.target, operator, card),
                "merged": lambda: exports.export_merged(db, settings.data_dir, args.target, operator, args.dtype, card),
                "gguf": lambda: exports.export_gguf(
                    db, settings.data_dir, args.target, operator, args.quant or "q8_0", card, progress=tensor_bar()
                ),
                "quantized": lambda: exports.export_quantized(
                    db, settings.data_dir, args.target, operator, args.quant or "nf4", card
                ),
                "training-data": lambda: exports.export_training_data(
                    db, settings.data_dir, args.target, operator, card
                ),
                "dataset": lambda: exports.export_dataset(
                    db,
                    settings.data_dir,
                    args.target,
                    operator,
                    _json_arg(args.filters, "--filters"),
                    args.format or exports.DATASET_FORMATS,
                    card,
                    args.name,
                ),
            }[args.what]()
            print(f"export {result.id}: {result.path}")
            if args.what in exports.MODEL_KINDS:
                from core.compare.gate import check_release

                gate = check_release(db, args.target, operator, settings.release_gate, to_hub=False)
                if gate is not None and not gate.passed:
                    print(
                        f"warning: {args.target} fails its release gate ("
                        + "; ".join(f"{c.name}: {c.evidence}" for c in gate.failed)
                        + ")"
                        + (
                            ": a Hub push will be refused without --override"
                            if settings.release_gate == "enforce"
                            else ""
                        ),
                        file=sys.stderr,
                    )
            export_id, repo = result.id, args.push
        if repo:
            bar = tqdm(total=100, desc="push", unit="%")

            def show(fraction: float, text: str) -> None:
                bar.n = round(fraction * 100)
                bar.set_postfix_str(text[:60])  # also refreshes the bar

            pushed = hub.push_export(
                db,
                export_id,
                operator,
                hub.resolve_token(),
                repo,
                not args.public,
                progress=show,
                gate_mode=settings.release_gate,
                override=args.override,
            )
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
