"""The backup commands of ``launch.py``: ``backup`` (one snapshot, or ``--list``), ``restore`` (into an empty data
dir), and the restore a studio does at start on an empty disk (core.share.backup does the work)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from app.cli import cli_database
from core.config import Settings


def _backup_target(settings: Settings, repo: str | None = None, directory: str | None = None) -> Any:
    """--repo/--dir if given, else the configured backup, else the local ``<data dir>/backups``."""
    from core.share.backup import DirTarget, target_from

    return (
        target_from(repo, Path(directory) if directory else None, settings.backup_public)
        or target_from(settings.backup_repo, settings.backup_dir, settings.backup_public)
        or DirTarget(settings.data_dir / "backups")
    )


def backup_command(settings: Settings, args: argparse.Namespace) -> int:
    """One snapshot to the configured target (studio stopped), or the list of snapshots."""
    import json

    from core.share.backup_service import BackupService

    target = _backup_target(settings)
    if args.list:
        snaps = target.snapshots()
        if args.json:
            print(json.dumps([vars(s) for s in snaps], indent=1))
        for snap in snaps if not args.json else []:
            print(f"{snap.ref[:40]:40}  {snap.created_at}  {snap.title}")
        if not snaps and not args.json:
            print(f"no snapshots in {target.describe()}")
        return 0
    db = cli_database(settings, "use its Settings page (Back up now) or POST /api/backup")
    try:
        snap = BackupService(db, settings.data_dir, target, settings.backup_every).backup_now("launch.py backup")
    finally:
        db.close()
    print(json.dumps(vars(snap)) if args.json else f"backed up to {target.describe()}@{snap.ref[:12]}: {snap.title}")
    return 0


def restore_command(settings: Settings, args: argparse.Namespace) -> int:
    from core.share.backup import restore

    target = _backup_target(settings, args.repo, args.dir)
    result = restore(target, settings.data_dir, args.revision, force=args.force)
    if result.moved_aside:
        print(f"moved the data dir in use aside to {result.moved_aside}")
    print(f"{result.line()} into {settings.data_dir}; start the studio with --data-dir {settings.data_dir}")
    return 0


def restore_on_start(settings: Settings) -> None:
    """A studio starting on an empty data dir with a backup configured restores the newest snapshot first (a
    Space without persistent storage starts empty after every restart); one line says what came back."""
    from core.share.backup import data_dir_in_use, restore, target_from

    target = target_from(settings.backup_repo, settings.backup_dir, settings.backup_public)
    if target is None or data_dir_in_use(settings.data_dir):
        return
    if not target.snapshots():
        print(
            f"no backup in {target.describe()} yet: starting empty (the first backup follows the first change)",
            flush=True,
        )
        return
    print(restore(target, settings.data_dir).line(), flush=True)
