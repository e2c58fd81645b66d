"""The Hugging Face Hub: push an export folder (core.share.exports) to a model or dataset repo.

:func:`push_export` uploads a folder with the real ``huggingface_hub`` client (``HF_ENDPOINT`` is honoured)
as a model or dataset repo. The row in ``hub_pushes`` (repo id, commit URL, date) is written only after
the Hub confirmed the commit. The adapter manifest (:func:`adapter_manifest`) lists every pushed adapter
with base model, version, repo and commit; :func:`suggest_repo_id` proposes the repo a version went to
before, so a later push updates the same repo.

Errors from the Hub become :class:`HubError` subclasses with a stable code and a hint (401, 403, 404,
409, network down, offline mode); network failures and 5xx answers are retried with a short backoff.

The token comes from the caller (a one-off form field) or ``HF_TOKEN``. It is passed to ``HfApi`` only:
never written to DuckDB, files, logs or exception messages (any text from the client is scrubbed).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.compare.gate import card_section, check_release
from core.errors import NotFound, StudioError, ValidationError
from core.share.exports import MODEL_KINDS, get_export, require_admin
from storage.db import Database

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")
REPO_NAME = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}$")  # no owner: the token's user namespace

Progress = Callable[[float, str], None]


# --- errors --------------------------------------------------------------------------------------------------


class HubError(StudioError):
    """The Hugging Face Hub refused or could not be reached. ``retryable``: trying again may help."""

    code = "hub_error"
    http_status = 502
    retryable = False


class HubAuthError(HubError):
    code = "hub_unauthorized"
    http_status = 401


class HubForbidden(HubError):
    code = "hub_forbidden"
    http_status = 403


class HubNotFound(HubError):
    code = "hub_not_found"
    http_status = 404


class HubConflict(HubError):
    code = "hub_conflict"
    http_status = 409
    retryable = True


class HubUnreachable(HubError):
    code = "hub_unreachable"
    http_status = 503
    retryable = True


# --- options (the Export page's push form is generated from PushOptions) ---------------------------------------


@dataclass
class PushOptions:
    """Where and how an export goes to the Hub."""

    repo_id: str = field(
        default="",
        metadata={
            "help": "owner/name on the Hub, or just a name for your own namespace. Suggested: the repo this export "
            "(or this version, or the last adapter of this base) went to before, so pushes update one repo."
        },
    )
    private: bool = field(default=True, metadata={"help": "Create the repo as private (ignored if it exists)."})
    commit_message: str | None = field(default=None, metadata={"help": "Commit message (default: generated)."})


@dataclass(frozen=True)
class PushResult:
    export_id: int
    repo_id: str
    repo_type: str
    commit_url: str
    commit_oid: str
    attempts: int


# --- pushes --------------------------------------------------------------------------------------------------


def resolve_token(one_off: str | None = None) -> str:
    """The one-off token if given, else ``HF_TOKEN``; never read from or written to the database."""
    token = (one_off or "").strip() or os.environ.get("HF_TOKEN", "").strip()
    if not token:
        raise HubAuthError(
            "No Hugging Face token",
            hint="set HF_TOKEN before starting the studio, or paste a "
            "write token (huggingface.co/settings/tokens) into the one-off field",
        )
    return token


def hub_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def whoami(token: str) -> str:
    """The Hub user name behind a token (checks the token before anything is uploaded)."""
    api = hub_api(token)
    return hub_call(lambda: api.whoami()["name"], token, "checking the token")


def suggest_repo_id(db: Database, export_id: int, username: str | None = None) -> str:
    """Where this export should go: the repo it (or, for adapters, its version / the latest adapter of the
    same base) was pushed to before, so later pushes update one repo; else ``<user>/<name>``."""
    export = get_export(db, export_id)
    queries = [("SELECT repo_id FROM hub_pushes WHERE export_id = ? ORDER BY id DESC LIMIT 1", [export_id])]
    if export["kind"] != "dataset":
        queries += [
            (
                "SELECT h.repo_id FROM hub_pushes h JOIN exports e ON e.id = h.export_id WHERE e.kind = ?"
                " AND e.policy_id = ? ORDER BY h.id DESC LIMIT 1",
                [export["kind"], export["policy_id"]],
            ),
            (
                "SELECT h.repo_id FROM hub_pushes h JOIN exports e ON e.id = h.export_id WHERE e.kind = ?"
                " AND e.base_model = ? ORDER BY h.id DESC LIMIT 1",
                [export["kind"], export["base_model"]],
            ),
        ]
    else:
        queries.append(
            (
                "SELECT h.repo_id FROM hub_pushes h JOIN exports e ON e.id = h.export_id"
                " WHERE e.kind = 'dataset' AND e.dataset_kind = ? ORDER BY h.id DESC LIMIT 1",
                [export["dataset_kind"]],
            )
        )
    for sql, params in queries:
        repo = db.scalar(sql, params)
        if repo:
            return repo
    base = (export["base_model"] or "studio").split("/")[-1]
    name = {
        "adapter": f"{base}-rlhf-studio-lora",
        "merged": f"{base}-rlhf-studio",
        "gguf": f"{base}-rlhf-studio-GGUF",
        "quantized": f"{base}-rlhf-studio-bnb-{export['dtype']}",
        "dataset": f"rlhf-studio-{export['dataset_kind']}",
    }[export["kind"]]
    return f"{username}/{name}" if username else name


def push_export(
    db: Database,
    export_id: int,
    user: Any,
    token: str,
    repo_id: str,
    private: bool = True,
    commit_message: str | None = None,
    progress: Progress | None = None,
    retries: int = 2,
    retry_wait: float = 1.0,
    gate_mode: str = "enforce",
    override: str | None = None,
) -> PushResult:
    """Upload an export folder as one commit to a model (adapter, merged) or dataset repo.

    Steps: check the token (whoami), create the repo if needed (``exist_ok``), upload file by file
    (``preupload_lfs_files``: large files go to LFS/Xet storage here, with progress), then one commit of
    all files. Network errors, 5xx and conflicts are retried ``retries`` times; a failed push records
    nothing. The ``hub_pushes`` row is written only after the commit succeeded.

    A model export (adapter, merged, GGUF, bitsandbytes) passes the version's release gate first
    (core.compare.gate, ``gate_mode`` from STUDIO_RELEASE_GATE): under ``enforce`` a failing version is refused
    with ``gate_failed`` unless ``override`` gives a reason (recorded in the audit log). The card on the Hub gets
    the gate's checklist, and the override with its reason.
    """
    from huggingface_hub import CommitOperationAdd

    require_admin(user)
    token = resolve_token(token)  # an empty field falls back to HF_TOKEN, never to a token file on disk
    export = get_export(db, export_id)
    folder = Path(export["path"])
    if not folder.is_dir():
        raise NotFound(f"The files of export {export_id} are gone ({folder})", hint="export it again")
    repo_id = (repo_id or "").strip()
    if not (REPO_ID.match(repo_id) or REPO_NAME.match(repo_id)):
        raise ValidationError(
            f"{repo_id!r} is not a Hub repo id",
            hint="use owner/name (e.g. ada/my-adapter), or just a name for your own namespace",
        )
    repo_type = "dataset" if export["kind"] == "dataset" else "model"
    gate = None
    if export["kind"] in MODEL_KINDS and export["version"]:
        gate = check_release(db, export["version"], user, gate_mode, to_hub=True, override=override, target=repo_id)
    gate_card = card_section(gate, override, getattr(user, "name", None))
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    total = sum(p.stat().st_size for p in files) or 1
    message = commit_message or _commit_message(export)
    report = progress or (lambda fraction, text: None)
    api = hub_api(token)

    def attempt() -> Any:
        nonlocal repo_id
        report(0.0, "Checking the token")
        username = hub_call(lambda: api.whoami()["name"], token, "checking the token")
        if "/" not in repo_id:
            repo_id = f"{username}/{repo_id}"
        report(0.05, f"Creating {repo_type} repo {repo_id} (if needed)")
        hub_call(
            lambda: api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True),
            token,
            f"creating {repo_id}",
        )
        operations, done = [], 0
        for path in files:
            name = path.relative_to(folder).as_posix()
            content: str | bytes = str(path)
            if name == "README.md":  # the card's usage snippet names the repo it lives in
                text = path.read_text(encoding="utf-8").replace('"REPO_ID"', f'"{repo_id}"')
                content = (text.rstrip("\n") + "\n\n" + gate_card if gate_card else text).encode()
            op = CommitOperationAdd(path_in_repo=name, path_or_fileobj=content)
            report(0.1 + 0.8 * done / total, f"Uploading {op.path_in_repo} ({_size(path.stat().st_size)})")
            # hub_call runs the lambda at once, inside this iteration
            hub_call(
                lambda: api.preupload_lfs_files(repo_id, additions=[op], repo_type=repo_type),  # noqa: B023
                token,
                f"uploading {op.path_in_repo}",
            )
            operations.append(op)
            done += path.stat().st_size
        report(0.9, f"Committing {len(operations)} files")
        return hub_call(
            lambda: api.create_commit(repo_id, operations, commit_message=message, repo_type=repo_type),
            token,
            f"committing to {repo_id}",
        )

    attempts = 0
    while True:
        attempts += 1
        try:
            info = attempt()
            break
        except HubError as exc:
            if not exc.retryable or attempts > retries:
                raise
            report(0.0, f"{exc.message} — retrying ({attempts}/{retries})")
            time.sleep(retry_wait * 2 ** (attempts - 1))
    with db.transaction() as cur:
        cur.execute(
            "INSERT INTO hub_pushes (export_id, repo_id, repo_type, private, endpoint, commit_url, commit_oid,"
            " pushed_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                export_id,
                repo_id,
                repo_type,
                private,
                hub_endpoint(),
                info.commit_url,
                info.oid,
                getattr(user, "id", None),
            ],
        )
    report(1.0, f"Pushed to {repo_id}")
    return PushResult(export_id, repo_id, repo_type, info.commit_url, info.oid, attempts)


def adapter_manifest(db: Database) -> list[dict[str, Any]]:
    """Every pushed model export (adapter, merged, GGUF, bitsandbytes): version, base model, repo, commit URL and
    date, newest first."""
    rows = db.query(
        "SELECT e.kind, e.version, e.base_model, e.dtype, h.repo_id, h.private, h.commit_url, h.commit_oid,"
        " h.pushed_at AS date, e.id AS export_id FROM hub_pushes h JOIN exports e ON e.id = h.export_id"
        " WHERE e.kind <> 'dataset' ORDER BY h.id DESC"
    )
    for row in rows:
        row["date"] = row["date"].isoformat()
    return rows


# --- internals: Hub calls ------------------------------------------------------------------------------------


def hub_api(token: str) -> Any:
    from huggingface_hub import HfApi

    return HfApi(endpoint=hub_endpoint(), token=token, library_name="rlhf-studio")


def hub_call(fn: Callable[[], Any], token: str, doing: str) -> Any:
    """Run one Hub call; map what can go wrong to a HubError whose text never contains the token."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled, RepositoryNotFoundError

    try:
        return fn()
    except OfflineModeIsEnabled:
        raise HubUnreachable(
            f"Offline mode is on: cannot reach the Hub while {doing}",
            hint="unset HF_HUB_OFFLINE (and TRANSFORMERS_OFFLINE) and restart the studio",
        ) from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        detail = _scrub(getattr(exc, "server_message", None) or "", token)
        where = f" ({detail})" if detail else ""
        if status == 401 and not isinstance(exc, RepositoryNotFoundError):
            raise HubAuthError(
                f"The Hub rejected the token while {doing}{where}",
                hint="the token is invalid or expired: create a new write token at "
                "huggingface.co/settings/tokens and use it (HF_TOKEN or the one-off field)",
            ) from None
        if status == 403:
            raise HubForbidden(
                f"The token may not do this: {doing}{where}",
                hint="use a token with write access, and a namespace (user or org) you belong to",
            ) from None
        if status == 404 or isinstance(exc, RepositoryNotFoundError):
            raise HubNotFound(
                f"Not found on the Hub while {doing}{where}",
                hint="check the repo id (owner/name) and that the token can see it",
            ) from None
        if status == 409:
            raise HubConflict(
                f"The Hub reported a conflict while {doing}{where}",
                hint="someone else changed the repo at the same time, or the name is taken by "
                "another repo type; try again or pick another name",
            ) from None
        if status is not None and (status >= 500 or status in (408, 429)):
            raise HubUnreachable(
                f"The Hub is having trouble (HTTP {status}) while {doing}", hint="try again in a minute"
            ) from None
        raise HubError(
            f"The Hub answered HTTP {status} while {doing}{where}", hint="check the repo id and options, then try again"
        ) from None
    except ValueError as exc:  # e.g. invalid README metadata, refused by validate-yaml
        raise HubError(
            f"The Hub refused the upload while {doing}: {_scrub(str(exc), token)}",
            hint="fix the card metadata (license, base model id) and export again",
        ) from None
    except Exception as exc:
        if _is_network_error(exc):
            raise HubUnreachable(
                f"Cannot reach the Hub at {hub_endpoint()} while {doing} ({type(exc).__name__})",
                hint="check the network connection (and HF_ENDPOINT / proxy settings), then retry",
            ) from None
        raise


def _is_network_error(exc: BaseException) -> bool:
    names = {cls.__name__ for cls in type(exc).__mro__}
    return bool(names & {"TransportError", "TimeoutException", "NetworkError"}) or isinstance(
        exc, (ConnectionError, TimeoutError)
    )


def _scrub(text: str, token: str) -> str:
    text = text.replace(token, "***") if token else text
    return re.sub(r"hf_[A-Za-z0-9]{8,}", "hf_***", text).strip()


def _commit_message(export: dict[str, Any]) -> str:
    if export["kind"] == "dataset":
        return f"RLHF Studio: {export['dataset_kind']} dataset ({export['rows']} rows)"
    what = "LoRA adapter" if export["kind"] == "adapter" else f"merged model ({export['dtype']})"
    return f"RLHF Studio: {what} of {export['version']}"


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
