"""Backups that survive an empty disk: snapshots of the data dir in a Hub dataset repo or a directory.

A Space without persistent storage starts on an empty disk after every restart, so the studio copies what it
needs to carry on somewhere else, and restores it at boot. One snapshot is:

    manifest.json   format, schema version, studio version, time, rows per table, sha256 + size of every file
    db/             every table: DuckDB EXPORT DATABASE (schema.sql, load.sql, one parquet file per table),
                    read in one transaction, so a vote is wholly in a snapshot or wholly not
    runs/<job>/     adapters, reward models, config, metrics, results and reports of every job (no checkpoints
                    unless asked: then the newest checkpoint of a job still running, so it can resume)
    chain/          the chain state (batches and proofs are tables; the build cache is left out)

Left out: the base model (provisioned again), exports (rebuilt from versions) and the database file itself.

Targets (:class:`HubTarget`, :class:`DirTarget`) store snapshots; :func:`take_snapshot` writes one, :func:`restore`
loads one into an empty data dir, and :class:`~core.share.backup_service.BackupService` takes them in the
background. A restore checks every file against the manifest before anything lands in the data dir.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, Protocol

from core import __version__
from core.errors import StudioError
from core.share import hub
from storage.db import DB_FILENAME, Database, exported_row_counts, latest_schema_version, relocate_paths, restore_backup

MANIFEST = "manifest.json"
FORMAT = "rlhf-studio-backup"
FORMAT_VERSION = 1
COMMIT_PREFIX = "Studio backup"
# data dir entries never backed up: the live database (the snapshot holds its tables), the base model (provisioned
# again), exports (rebuilt from versions), local backups and staging folders, the contract build cache
SKIPPED_TOP = {DB_FILENAME, DB_FILENAME + ".wal", "models", "exports", "backups"}
SKIPPED_PREFIXES = (".backup-", ".restore-")


class BackupError(StudioError):
    code = "backup_error"
    http_status = 500


class BackupRefused(BackupError):
    """A snapshot that must not be loaded: corrupt, partial, from a newer studio, or not a snapshot at all."""

    code = "backup_refused"
    http_status = 422


class DataDirNotEmpty(BackupError):
    code = "data_dir_not_empty"
    http_status = 409


@dataclass(frozen=True)
class Snapshot:
    """One backup in a target: ``ref`` is the Hub commit or the directory snapshot's id."""

    ref: str
    created_at: str
    title: str


@dataclass(frozen=True)
class RestoreResult:
    ref: str
    source: str
    votes: int
    versions: int
    files: int
    moved_aside: Path | None = None

    def line(self) -> str:
        ref = self.ref[:12] if len(self.ref) == 40 else self.ref  # a Hub commit is shown short, as git does
        return (
            f"restored {_count(self.votes, 'vote')}, {_count(self.versions, 'version')} from {self.source}@{ref} "
            f"({self.files} files)"
        )


class BackupTarget(Protocol):
    """Where snapshots go. ``push`` stores one (files named by their path in the snapshot) and returns its ref."""

    def describe(self) -> str: ...

    def push(self, manifest: dict[str, Any], files: dict[str, Path], title: str) -> str: ...

    def snapshots(self) -> list[Snapshot]: ...

    def fetch(self, ref: str | None, into: Path) -> tuple[str, dict[str, Any]]: ...

    def manifest(self, ref: str) -> dict[str, Any]: ...

    def squash(self) -> None: ...


# --- what a snapshot holds -----------------------------------------------------------------------------------


def data_files(data_dir: Path, running_run_dirs: list[Path] | None = None) -> dict[str, Path]:
    """The data dir's files a snapshot keeps, by their path in the snapshot (see the module docstring).

    ``running_run_dirs``: jobs still training whose newest checkpoint is kept too (``--backup-checkpoints``)."""
    keep_checkpoint = {d.resolve(): _newest_checkpoint(d) for d in running_run_dirs or []}
    found: dict[str, Path] = {}
    if not data_dir.is_dir():
        return found
    for top in sorted(data_dir.iterdir()):
        if top.name in SKIPPED_TOP or top.name.startswith(SKIPPED_PREFIXES):
            continue
        for path in sorted([top] if top.is_file() else top.rglob("*")):
            if not path.is_file() or path.is_symlink():
                continue
            rel = path.relative_to(data_dir)
            if rel.parts[:2] == ("chain", "build"):
                continue
            checkpoint = next((p for p in rel.parts if p.startswith("checkpoint-")), None)
            if checkpoint is not None:
                run = data_dir.joinpath(*rel.parts[:2]).resolve()
                if keep_checkpoint.get(run) != checkpoint:
                    continue
            found[rel.as_posix()] = path
    return found


def _newest_checkpoint(run_dir: Path) -> str | None:
    steps = [
        (int(p.name.split("-")[1]), p.name) for p in run_dir.glob("checkpoint-*") if p.name.split("-")[1].isdigit()
    ]
    return max(steps)[1] if steps else None


def take_snapshot(
    db: Database, data_dir: Path, stage: Path, reason: str, running_run_dirs: list[Path] | None = None
) -> tuple[dict[str, Any], dict[str, Path]]:
    """Write the tables into ``stage/db`` and describe everything in a manifest; returns (manifest, files)."""
    with _clear_errors("writing the snapshot", stage):
        shutil.rmtree(stage, ignore_errors=True)
        stage.mkdir(parents=True)
        db.backup(stage / "db")
        files = {f"db/{p.name}": p for p in sorted((stage / "db").iterdir())}
        files.update(data_files(data_dir, running_run_dirs))
        tables = exported_row_counts(stage / "db")
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "schema_version": db.schema_version,
            "studio_version": __version__,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "reason": reason,
            "data_dir": str(data_dir.resolve()),
            "tables": tables,
            "votes": tables.get("preferences", 0),
            "versions": _versions(db),
            "redactions": redaction_count(db),
            "files": {name: {"sha256": _sha256(path), "size": path.stat().st_size} for name, path in files.items()},
        }
    return manifest, files


def redaction_count(db: Database) -> int:
    """Redactions so far: a snapshot that recorded fewer may still hold text redacted since."""
    return int(db.scalar("SELECT count(*) FROM audit_log WHERE action = 'redact'"))


def _versions(db: Database) -> int:
    return int(db.scalar("SELECT count(*) FROM policies WHERE deleted_at IS NULL AND adapter_path IS NOT NULL"))


def snapshot_title(manifest: dict[str, Any]) -> str:
    return (
        f"{COMMIT_PREFIX}: {_count(manifest['votes'], 'vote')}, {_count(manifest['versions'], 'version')}, "
        f"{len(manifest['files'])} files ({manifest['reason']})"
    )


# --- restore -------------------------------------------------------------------------------------------------


def data_dir_in_use(data_dir: Path) -> bool:
    """A data dir holds a studio once it has a database or runs; a provisioned base model alone does not count."""
    return (data_dir / DB_FILENAME).exists() or any((data_dir / "runs").glob("*"))


def restore(target: BackupTarget, data_dir: Path, ref: str | None = None, force: bool = False) -> RestoreResult:
    """Load a snapshot (the newest, or ``ref``) into an empty data dir, all or nothing.

    Everything is downloaded and checked (format, schema version, every file's sha256) in a staging folder beside
    the data dir, the database is rebuilt and migrated there, and only then moved in, database last: a restore cut
    short leaves no database, so the next start restores again. A data dir in use is refused unless ``force``,
    which first moves it aside (``<dir>.before-restore-<time>``)."""
    data_dir = Path(data_dir)
    moved = None
    if data_dir_in_use(data_dir):
        if not force:
            raise DataDirNotEmpty(
                f"{data_dir} already holds a studio (a database or runs)",
                hint="restore into a new --data-dir, or pass --force to move this one aside first",
            )
        moved = data_dir.with_name(f"{data_dir.name}.before-restore-{time.strftime('%Y%m%d-%H%M%S')}")
        data_dir.rename(moved)
    stage = data_dir.parent / f".restore-{data_dir.name}-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    try:
        with _clear_errors("restoring", stage):
            stage.mkdir(parents=True)
            ref, manifest = target.fetch(ref, stage)
            check_snapshot(manifest, stage)
            restore_backup(stage / "db", stage / DB_FILENAME)
            db = Database(stage / DB_FILENAME)  # migrates an older schema
            try:
                relocate_paths(db, manifest["data_dir"], str(data_dir.resolve()))
                votes = int(db.scalar("SELECT count(*) FROM preferences"))
                versions = _versions(db)
            finally:
                db.close()
            data_dir.mkdir(parents=True, exist_ok=True)
            for name in manifest["files"]:
                if not name.startswith("db/"):
                    dest = data_dir / name
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(stage / name, dest)
            os.replace(stage / DB_FILENAME, data_dir / DB_FILENAME)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return RestoreResult(ref, target.describe(), votes, versions, len(manifest["files"]), moved)


def check_snapshot(manifest: dict[str, Any], folder: Path) -> None:
    """Refuse what must not be loaded: not a studio snapshot, a newer schema, a missing or altered file."""
    if manifest.get("format") != FORMAT:
        raise BackupRefused(
            "This is not a studio backup (its manifest has no studio format)",
            hint="pick a snapshot written by `launch.py backup` or the studio's backup",
        )
    if (
        int(manifest.get("format_version", 0)) > FORMAT_VERSION
        or int(manifest["schema_version"]) > latest_schema_version()
    ):
        raise BackupRefused(
            f"This snapshot comes from a newer studio (schema {manifest['schema_version']}, "
            f"this studio knows up to {latest_schema_version()})",
            hint="upgrade the studio (git pull; make setup), then restore again",
        )
    bad = []
    for name, info in manifest["files"].items():
        path = folder / name
        if not path.is_file():
            bad.append(f"{name} is missing")
        elif path.stat().st_size != info["size"] or _sha256(path) != info["sha256"]:
            bad.append(f"{name} does not match its checksum")
    if bad:
        raise BackupRefused(
            f"The snapshot is partial or corrupt: {'; '.join(bad[:3])}"
            + (f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""),
            hint="restore an earlier snapshot (`launch.py backup --list`, then --revision)",
        )


# --- targets -------------------------------------------------------------------------------------------------


class DirTarget:
    """Snapshots in a directory (another disk, a mounted bucket): ``snapshots/<id>.json`` manifests over
    content-addressed ``blobs/<sha256>``, so an unchanged file (an adapter) is stored once, and a snapshot exists
    only once its manifest is renamed into place: a backup killed half-way leaves the last one intact."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def describe(self) -> str:
        return str(self.root)

    def push(self, manifest: dict[str, Any], files: dict[str, Path], title: str) -> str:
        blobs = self.root / "blobs"
        with _clear_errors(f"writing to {self.root}", self.root):
            blobs.mkdir(parents=True, exist_ok=True)
            (self.root / "snapshots").mkdir(exist_ok=True)
            for name, path in files.items():
                blob = blobs / manifest["files"][name]["sha256"]
                if not blob.exists():
                    tmp = blob.with_suffix(".tmp")
                    shutil.copyfile(path, tmp)
                    os.replace(tmp, blob)
            ref = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
            body = json.dumps({**manifest, "title": title}, indent=1)
            tmp = self.root / "snapshots" / f".{ref}.tmp"
            tmp.write_text(body, encoding="utf-8")
            os.replace(tmp, self.root / "snapshots" / f"{ref}.json")
        return ref

    def snapshots(self) -> list[Snapshot]:
        found = []
        for path in sorted((self.root / "snapshots").glob("*.json"), reverse=True):
            manifest = json.loads(path.read_text(encoding="utf-8"))
            found.append(Snapshot(path.stem, manifest["created_at"], manifest.get("title", "")))
        return found

    def fetch(self, ref: str | None, into: Path) -> tuple[str, dict[str, Any]]:
        snaps = self.snapshots()
        if not snaps:
            raise BackupError(f"{self.root} holds no snapshot", hint="back up first (`launch.py backup`)")
        ref = ref or snaps[0].ref
        path = self.root / "snapshots" / f"{ref}.json"
        if not path.is_file():
            raise BackupError(f"No snapshot {ref} in {self.root}", hint="list them with `launch.py backup --list`")
        manifest = json.loads(path.read_text(encoding="utf-8"))
        for name, info in manifest.get("files", {}).items():
            blob = self.root / "blobs" / info["sha256"]
            if blob.is_file():  # a missing blob is reported by check_snapshot with the file's name
                (into / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(blob, into / name)
        return ref, manifest

    def manifest(self, ref: str) -> dict[str, Any]:
        return json.loads((self.root / "snapshots" / f"{ref}.json").read_text(encoding="utf-8"))

    def squash(self) -> None:
        """Keep only the newest snapshot and the blobs it uses (text redacted since is gone from the others)."""
        snaps = self.snapshots()
        for snap in snaps[1:]:
            (self.root / "snapshots" / f"{snap.ref}.json").unlink()
        keep = set()
        if snaps:
            manifest = json.loads((self.root / "snapshots" / f"{snaps[0].ref}.json").read_text(encoding="utf-8"))
            keep = {info["sha256"] for info in manifest["files"].values()}
        for blob in (self.root / "blobs").glob("*"):
            if blob.name not in keep:
                blob.unlink()


class HubTarget:
    """Snapshots in a Hub dataset repo: the repo holds the latest snapshot's files, and each backup is one commit,
    so any earlier one is restored by its commit id. huggingface_hub's ``create_commit`` skips files whose content
    the repo already has (an adapter is uploaded once) and is atomic: a backup killed half-way commits nothing."""

    def __init__(self, repo_id: str, private: bool = True, token: str | None = None) -> None:
        self.repo_id, self.private = repo_id, private
        self._token = token
        self._previous: set[str] | None = None  # files of the last snapshot pushed (to delete what went away)

    def describe(self) -> str:
        return self.repo_id

    def _api(self) -> tuple[Any, str]:
        token = self._token or hub.resolve_token()
        return hub.hub_api(token), token

    def push(self, manifest: dict[str, Any], files: dict[str, Path], title: str) -> str:
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete

        api, token = self._api()
        hub.hub_call(
            lambda: api.create_repo(self.repo_id, repo_type="dataset", private=self.private, exist_ok=True),
            token,
            f"creating the backup repo {self.repo_id}",
        )
        if self._previous is None:
            self._previous = set(self._remote_manifest(api, token, None).get("files", {}))
        operations: list[Any] = [CommitOperationAdd(name, str(path)) for name, path in files.items()]
        operations += [CommitOperationDelete(name) for name in sorted(self._previous - set(files))]
        operations.append(CommitOperationAdd(MANIFEST, json.dumps(manifest, indent=1).encode()))
        info = hub.hub_call(
            lambda: api.create_commit(self.repo_id, operations, commit_message=title, repo_type="dataset"),
            token,
            f"backing up to {self.repo_id}",
        )
        self._previous = set(files)
        return str(info.oid)

    def _remote_manifest(self, api: Any, token: str, ref: str | None) -> dict[str, Any]:
        """The manifest at ``ref`` (default: the newest); {} when the repo or its manifest does not exist yet."""
        try:
            path = hub.hub_call(
                lambda: api.hf_hub_download(self.repo_id, MANIFEST, repo_type="dataset", revision=ref),
                token,
                f"reading the backup manifest of {self.repo_id}",
            )
        except hub.HubNotFound:
            if ref is None:
                return {}
            raise BackupError(
                f"No snapshot {ref} in {self.repo_id}", hint="list them with `launch.py backup --list`"
            ) from None
        return json.loads(Path(path).read_text(encoding="utf-8"))

    def snapshots(self) -> list[Snapshot]:
        api, token = self._api()
        try:
            commits = hub.hub_call(
                lambda: api.list_repo_commits(self.repo_id, repo_type="dataset"),
                token,
                f"listing the snapshots in {self.repo_id}",
            )
        except hub.HubNotFound:  # no repo yet: no snapshot
            return []
        return [
            Snapshot(c.commit_id, c.created_at.isoformat(timespec="seconds"), c.title)
            for c in commits
            if c.title.startswith(COMMIT_PREFIX)
        ]

    def fetch(self, ref: str | None, into: Path) -> tuple[str, dict[str, Any]]:
        api, token = self._api()
        snaps = self.snapshots()
        if not snaps:
            raise BackupError(f"{self.repo_id} holds no snapshot", hint="back up first (`launch.py backup`)")
        ref = ref or snaps[0].ref
        hub.hub_call(
            lambda: api.snapshot_download(self.repo_id, repo_type="dataset", revision=ref, local_dir=str(into)),
            token,
            f"downloading snapshot {ref[:12]} of {self.repo_id}",
        )
        manifest_path = into / MANIFEST
        if not manifest_path.is_file():
            raise BackupRefused(
                f"Commit {ref[:12]} of {self.repo_id} has no {MANIFEST}",
                hint="pick a commit the studio's backup wrote (`launch.py backup --list`)",
            )
        return ref, json.loads(manifest_path.read_text(encoding="utf-8"))

    def manifest(self, ref: str) -> dict[str, Any]:
        api, token = self._api()
        return self._remote_manifest(api, token, ref)

    def squash(self) -> None:
        api, token = self._api()
        hub.hub_call(
            lambda: api.super_squash_history(
                self.repo_id, repo_type="dataset", commit_message=f"{COMMIT_PREFIX}: history rewritten"
            ),
            token,
            f"rewriting the history of {self.repo_id}",
        )


def target_from(repo: str | None, directory: Path | None, public: bool = False) -> BackupTarget | None:
    """The configured target (settings ``backup_repo`` / ``backup_dir``), or None."""
    if repo:
        return HubTarget(repo, private=not public)
    if directory:
        return DirTarget(directory)
    return None


# --- internals -----------------------------------------------------------------------------------------------


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class _clear_errors:
    """Disk full and permission errors become a BackupError that says which and where."""

    def __init__(self, doing: str, where: Path) -> None:
        self.doing, self.where = doing, where

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> Literal[False]:
        if isinstance(exc, OSError) and not isinstance(exc, StudioError):
            if exc.errno == errno.ENOSPC:
                raise BackupError(
                    f"The disk is full while {self.doing} ({self.where})",
                    hint="free space there, or back up to another disk",
                ) from None
            if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise BackupError(
                    f"No permission to write while {self.doing} ({exc.filename or self.where})",
                    hint="give the studio's user write access there, or pick another folder",
                ) from None
        return False
