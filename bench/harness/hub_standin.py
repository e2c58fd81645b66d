"""A small Hugging Face Hub stand-in for the tests and the benchmarks: the REAL ``huggingface_hub`` client talks
to it via HF_ENDPOINT.

It implements just the endpoints ``HfApi`` (huggingface_hub 1.x/2.x) calls to push a folder, read it back at
any commit and manage the history, as read from the installed client (hf_api.py, _commit_api.py,
file_download.py, _snapshot_download.py, utils/_http.py, utils/_pagination.py):

    GET  /api/whoami-v2                                        who the token belongs to
    POST /api/repos/create                                     {"name", "organization", "type", "visibility"}
    GET  /api/{models|datasets}/{ns}/{name}[/revision/{r}]     repo info at r (sha, private, siblings)
    GET  /api/{models|datasets}/{ns}/{name}/tree/{r}[/{path}]  files and folders at r; ?recursive=true lists
                                                               the whole subtree (snapshot_download), one page
    GET  /api/{models|datasets}/{ns}/{name}/commits/{r}        history up to r, newest first (list_repo_commits),
                                                               one page (no Link header)
    POST /api/validate-yaml                                    README.md metadata check before a commit
    POST /api/{models|datasets}/{ns}/{name}/preupload/{r}      upload mode per file: always "regular" here
    POST /api/{models|datasets}/{ns}/{name}/commit/{r}         NDJSON: header, file (base64), deletedFile/Folder
    POST /api/{models|datasets}/{ns}/{name}/super-squash/{b}   {"message"}: history becomes one commit of the head
    GET|HEAD /[datasets/]{ns}/{name}/resolve/{r}/{path}        file content at r (hf_hub_download), with
                                                               X-Repo-Commit (r's oid) and ETag (git blob oid)

A revision ``r`` is "main" (the only branch) or a commit oid, full or a unique prefix of 7+ hex digits; every
commit keeps the full file map after it (``commit["tree"]``), so old commits can be read until a super-squash
drops them. Anything else answers 404 with ``X-Error-Code: RevisionNotFound`` (the client's
RevisionNotFoundError).

Not implemented: LFS / Xet uploads (preupload answers "regular" for every file, which the real Hub also does
for small files, so the client sends content inline in the commit), other branches, tags, pull requests,
``parentCommit`` checks, ``expand`` (last commit per tree entry).

Errors look like the Hub's: JSON ``{"error": ...}`` plus ``X-Error-Code: RepoNotFound`` for missing repos,
401 "Invalid credentials in Authorization header" for unknown tokens, 403 for read-only tokens and foreign
namespaces, 409 when a repo exists. ``fail(kind, status, times)`` injects an error into the next calls of
one kind (``whoami``, ``create``, ``info``, ``tree``, ``commits``, ``preupload``, ``commit``, ``squash``,
``resolve``, ...). Committed files land on disk under
``root/{models|datasets}/{ns}/{name}/`` (the head) so tests can assert them; ``commits`` keeps every commit.
Tokens are never written anywhere.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

_REPO = r"(?P<ns>[\w.-]+)/(?P<name>[\w.-]+)"
_ROUTES = [
    ("GET", re.compile(r"^/api/whoami-v2$"), "whoami"),
    ("POST", re.compile(r"^/api/repos/create$"), "create"),
    ("POST", re.compile(r"^/api/validate-yaml$"), "validate"),
    ("GET", re.compile(rf"^/api/(?P<type>models|datasets)/{_REPO}(?:/revision/(?P<rev>[^/]+))?$"), "info"),
    ("GET", re.compile(rf"^/api/(?P<type>models|datasets)/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?$"), "tree"),
    ("POST", re.compile(rf"^/api/(?P<type>models|datasets)/{_REPO}/preupload/(?P<rev>[^/]+)$"), "preupload"),
    ("GET", re.compile(rf"^/api/(?P<type>models|datasets)/{_REPO}/commits/(?P<rev>[^/]+)$"), "commits"),
    ("POST", re.compile(rf"^/api/(?P<type>models|datasets)/{_REPO}/commit/(?P<rev>[^/]+)$"), "commit"),
    ("POST", re.compile(rf"^/api/(?P<type>models|datasets)/{_REPO}/super-squash/(?P<rev>[^/]+)$"), "squash"),
    ("GET", re.compile(rf"^/(?:(?P<type>datasets)/)?{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$"), "resolve"),
    ("HEAD", re.compile(rf"^/(?:(?P<type>datasets)/)?{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$"), "resolve"),
]


@dataclass
class Repo:
    repo_id: str
    repo_type: str  # "models" | "datasets"
    private: bool
    files: dict[str, bytes] = field(default_factory=dict)
    commits: list[dict[str, Any]] = field(default_factory=list)  # oldest first; each has "tree": files after it

    @property
    def sha(self) -> str:
        return self.commits[-1]["oid"] if self.commits else "0" * 40

    def history(self, rev: str) -> list[dict[str, Any]] | None:
        """The commits reachable from ``rev``, oldest first, or None when ``rev`` names no commit.

        History is linear (one branch), so a commit's ancestors are the commits before it. A prefix must be
        unique, as git requires, so that an ambiguous short oid never silently reads the wrong snapshot."""
        if rev == "main":
            return list(self.commits)
        if re.fullmatch(r"[0-9a-f]{7,40}", rev):
            found = [i for i, c in enumerate(self.commits) if c["oid"].startswith(rev)]
            if len(found) == 1:
                return self.commits[: found[0] + 1]
        return None

    def at(self, rev: str) -> tuple[str, dict[str, bytes]] | None:
        """(commit oid, path -> content) as of ``rev``; "main" reads ``files``, the head state that is on disk."""
        history = self.history(rev)
        if history is None:
            return None
        if rev == "main" or not history:
            return self.sha, self.files
        return history[-1]["oid"], history[-1]["tree"]


@dataclass
class Snapshot:
    """A repo as of one revision: what info, tree and resolve answer from."""

    repo: Repo
    oid: str  # the commit the revision resolves to (X-Repo-Commit, "sha")
    files: dict[str, bytes]


class HubStandin:
    """``HubStandin(root, tokens={"hf_write": ("ada", "write")}).start()``; ``url`` goes into HF_ENDPOINT."""

    def __init__(self, root: Path, tokens: dict[str, tuple[str, str]], orgs: dict[str, list[str]] | None = None):
        self.root = Path(root)
        self.tokens = dict(tokens)
        self.orgs = orgs or {}
        self.repos: dict[tuple[str, str], Repo] = {}
        self.calls: list[tuple[str, str]] = []  # (kind, path): what the client asked for
        self._failures: dict[str, list[int]] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # -- control -------------------------------------------------------------------------------------
    def start(self) -> HubStandin:
        standin = self

        class Handler(_Handler):
            hub = standin

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="hub-standin", daemon=True).start()
        return self

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def fail(self, kind: str, status: int, times: int = 1) -> None:
        """The next ``times`` calls of ``kind`` answer ``status`` instead of doing their work."""
        with self._lock:
            self._failures.setdefault(kind, []).extend([status] * times)

    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        return self.repos[(repo_type + "s", repo_id)]

    def files_on_disk(self, repo_id: str, repo_type: str = "model") -> dict[str, bytes]:
        base = self.root / (repo_type + "s") / repo_id
        return {p.relative_to(base).as_posix(): p.read_bytes() for p in sorted(base.rglob("*")) if p.is_file()}

    @property
    def commits(self) -> list[dict[str, Any]]:
        return [c for repo in self.repos.values() for c in repo.commits]

    # -- request handling (called from handler threads) ---------------------------------------------
    def handle(
        self, method: str, path: str, headers: dict[str, str], body: bytes, query: dict[str, list[str]] | None = None
    ) -> tuple[int, dict, bytes]:
        for verb, pattern, kind in _ROUTES:
            match = pattern.match(path)
            if verb == method and match:
                with self._lock:
                    self.calls.append((kind, path))
                    injected = self._failures.get(kind)
                    if injected:
                        status = injected.pop(0)
                        return _error(
                            status, f"injected {status} for {kind}", "RepoNotFound" if status == 404 else None
                        )
                    user = self._user(headers)
                    return getattr(self, "_" + kind)(match.groupdict(), user, headers, body, method, query or {})
        return _error(404, f"no route for {method} {path}")

    def _user(self, headers: dict[str, str]) -> tuple[str, str] | None | bool:
        """(name, role) for a known token, None without a token, False for an unknown one."""
        auth = headers.get("authorization", "")
        if not auth:
            return None
        token = auth.removeprefix("Bearer ").strip()
        return self.tokens.get(token, False)

    def _namespaces(self, name: str) -> set[str]:
        return {name, *self.orgs.get(name, [])}

    def _whoami(self, groups, user, headers, body, method, query):
        if not user:
            return _error(401, "Invalid credentials in Authorization header")
        name, role = user
        return _json(
            200,
            {
                "type": "user",
                "name": name,
                "fullname": name.title(),
                "orgs": [{"name": o} for o in self.orgs.get(name, [])],
                "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": role}},
            },
        )

    def _create(self, groups, user, headers, body, method, query):
        if not user:
            return _error(401, "Invalid credentials in Authorization header")
        payload = json.loads(body or b"{}")
        name, org = payload.get("name"), payload.get("organization")
        repo_type = (payload.get("type") or "model") + "s"
        namespace = org or user[0]
        if user[1] != "write" or namespace not in self._namespaces(user[0]):
            return _error(
                403, f'You don\'t have the rights to create a {repo_type[:-1]} under the namespace "{namespace}"'
            )
        repo_id = f"{namespace}/{name}"
        prefix = "" if repo_type == "models" else "datasets/"
        url = f"{self.url}/{prefix}{repo_id}"
        if (repo_type, repo_id) in self.repos:
            return _json(409, {"error": f"You already created this {repo_type[:-1]} repo", "url": url})
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        self.repos[(repo_type, repo_id)] = Repo(repo_id, repo_type, private)
        (self.root / repo_type / repo_id).mkdir(parents=True, exist_ok=True)
        return _json(200, {"url": url, "name": repo_id, "id": hashlib.sha1(repo_id.encode()).hexdigest()[:24]})

    def _readable(self, groups, user) -> Repo | tuple[int, dict, bytes]:
        repo = self.repos.get((groups.get("type") or "models", f"{groups['ns']}/{groups['name']}"))
        if repo is None or (repo.private and not (user and groups["ns"] in self._namespaces(user[0]))):
            return _error(401 if user is None else 404, "Repository not found", "RepoNotFound")
        return repo

    def _writable(self, groups, user) -> Repo | tuple[int, dict, bytes]:
        if not user:
            return _error(401, "Invalid credentials in Authorization header")
        repo = self._readable(groups, user)
        if not isinstance(repo, Repo):
            return repo
        if user[1] != "write" or groups["ns"] not in self._namespaces(user[0]):
            return _error(403, "You don't have the rights to write to this repository")
        return repo

    def _snapshot(self, groups, user) -> Snapshot | tuple[int, dict, bytes]:
        """The repo at the revision in the URL ("main" when there is none), or the Hub's 404 for either."""
        repo = self._readable(groups, user)
        if not isinstance(repo, Repo):
            return repo
        rev = unquote(groups.get("rev") or "main")
        state = repo.at(rev)
        if state is None:
            return _error(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return Snapshot(repo, *state)

    def _info(self, groups, user, headers, body, method, query):
        snap = self._snapshot(groups, user)
        if not isinstance(snap, Snapshot):
            return snap
        repo = snap.repo
        commit = next((c for c in repo.commits if c["oid"] == snap.oid), None)
        return _json(
            200,
            {
                "id": repo.repo_id,
                "modelId": repo.repo_id,
                "sha": snap.oid,
                "private": repo.private,
                "lastModified": commit["date"] if commit else None,
                "tags": [],
                "siblings": [{"rfilename": p} for p in sorted(snap.files)],
            },
        )

    def _tree(self, groups, user, headers, body, method, query):
        snap = self._snapshot(groups, user)
        if not isinstance(snap, Snapshot):
            return snap
        folder = unquote(groups.get("path") or "").strip("/")
        recursive = query.get("recursive", ["false"])[-1].lower() in ("true", "1")  # the client sends "true"
        entries = _tree_entries(snap.files, folder, recursive)
        if folder and not entries:  # no such folder (a file's path is not a folder either)
            return _error(404, f"{folder} does not exist on {snap.oid}", "EntryNotFound")
        return 200, {"Content-Type": "application/json"}, json.dumps(entries).encode()

    def _commits(self, groups, user, headers, body, method, query):
        repo = self._readable(groups, user)
        if not isinstance(repo, Repo):
            return repo
        rev = unquote(groups["rev"])
        history = repo.history(rev)
        if history is None:
            return _error(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        formatted = "formatted" in query.get("expand[]", [])
        items = []
        for commit in reversed(history):
            item = {
                "id": commit["oid"],
                "title": commit["summary"],
                "message": commit["description"],
                "date": commit["date"],
                "authors": [{"user": commit["author"], "avatar": None}],
            }
            if formatted:  # the Hub renders markdown to HTML; plain text is enough for tests
                item["formatted"] = {"title": commit["summary"], "message": commit["description"]}
            items.append(item)
        return 200, {"Content-Type": "application/json"}, json.dumps(items).encode()

    def _validate(self, groups, user, headers, body, method, query):
        content = json.loads(body or b"{}").get("content", "")
        match = re.match(r"^---\n(.*?)\n---\n", content, re.S)
        try:
            meta = yaml.safe_load(match.group(1)) if match else None
        except yaml.YAMLError as exc:
            return _json(400, {"errors": [{"message": f"invalid YAML: {exc}"}], "warnings": []})
        if match and not isinstance(meta, dict):
            return _json(400, {"errors": [{"message": "metadata must be a YAML mapping"}], "warnings": []})
        warnings = [] if meta else [{"message": "empty or missing yaml metadata in repo card"}]
        return _json(200, {"errors": [], "warnings": warnings})

    def _preupload(self, groups, user, headers, body, method, query):
        repo = self._writable(groups, user)
        if not isinstance(repo, Repo):
            return repo
        files = json.loads(body)["files"]
        return _json(
            200,
            {
                "files": [
                    {
                        "path": f["path"],
                        "uploadMode": "regular",
                        "shouldIgnore": False,
                        "oid": _git_blob_oid(repo.files[f["path"]]) if f["path"] in repo.files else None,
                    }
                    for f in files
                ]
            },
        )

    def _commit(self, groups, user, headers, body, method, query):
        repo = self._writable(groups, user)
        if not isinstance(repo, Repo):
            return repo
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            return _error(400, "the commit payload must start with a header line")
        header, changes = lines[0]["value"], {}
        for item in lines[1:]:
            key, value = item["key"], item["value"]
            if key == "file":
                changes[value["path"]] = base64.b64decode(value["content"])
            elif key in ("deletedFile", "deletedFolder"):
                changes[value["path"]] = None
            else:
                return _error(400, f"unsupported operation {key!r} (this stand-in has no LFS)")
        base = self.root / repo.repo_type / repo.repo_id
        for path, content in changes.items():
            target = base / path
            if content is None:
                repo.files = {
                    p: c for p, c in repo.files.items() if p != path and not p.startswith(path.rstrip("/") + "/")
                }
                if target.is_file():
                    target.unlink()
                continue
            repo.files[path] = content
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        commit = self._record_commit(
            repo, user[0], header.get("summary", ""), header.get("description", ""), sorted(changes)
        )
        return _json(200, {"success": True, "commitOid": commit["oid"], "commitUrl": commit["url"], "hookOutput": ""})

    def _squash(self, groups, user, headers, body, method, query):
        repo = self._writable(groups, user)
        if not isinstance(repo, Repo):
            return repo
        branch = unquote(groups["rev"])
        if branch != "main":  # the only branch here; the Hub also refuses commit oids and tags
            return _error(404, f"Invalid rev id: {branch}", "RevisionNotFound")
        message = json.loads(body or b"{}").get("message") or f"Super-squash branch '{branch}'"
        repo.commits = []  # older oids are gone: reading them answers RevisionNotFound, as on the Hub
        commit = self._record_commit(repo, user[0], message, "", sorted(repo.files))
        return _json(200, {"commitOid": commit["oid"], "commitUrl": commit["url"]})

    def _record_commit(
        self, repo: Repo, author: str, summary: str, description: str, files: list[str]
    ) -> dict[str, Any]:
        """Append a commit on top of ``repo.files`` (already updated; ``files``: the paths it touched), keeping
        a copy of the file map so that every earlier commit stays readable; the contents are shared bytes, so
        a copy costs one dict. The oid is unique per commit, not git's (nothing here recomputes it)."""
        parent = repo.sha
        oid = hashlib.sha1((parent + json.dumps(files) + summary + str(time.time_ns())).encode()).hexdigest()
        prefix = "" if repo.repo_type == "models" else "datasets/"
        commit = {
            "oid": oid,
            "parent": parent,
            "summary": summary,
            "description": description,
            "files": files,
            "author": author,
            "date": _now_iso(),
            "url": f"{self.url}/{prefix}{repo.repo_id}/commit/{oid}",
            "tree": dict(repo.files),
        }
        repo.commits.append(commit)
        return commit

    def _resolve(self, groups, user, headers, body, method, query):
        snap = self._snapshot(groups, user)
        if not isinstance(snap, Snapshot):
            return snap
        path = unquote(groups["path"])
        if path not in snap.files:  # X-Repo-Commit lets the client cache the file's absence for that commit
            status, extra, payload = _error(404, f"{path} does not exist", "EntryNotFound")
            return status, {**extra, "X-Repo-Commit": snap.oid}, payload
        content = snap.files[path]
        etag = f'"{_git_blob_oid(content)}"'  # hf_hub_download needs ETag (or X-Linked-Etag) and X-Repo-Commit
        return 200, {"X-Repo-Commit": snap.oid, "ETag": etag, "Content-Type": "application/octet-stream"}, content


class _Handler(BaseHTTPRequestHandler):
    hub: HubStandin
    protocol_version = "HTTP/1.1"

    def _serve(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            body = self._read_chunked()
        else:
            body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        url = urlsplit(self.path)
        status, extra, payload = self.hub.handle(self.command, url.path, headers, body, parse_qs(url.query))
        self.send_response(status)
        for key, value in extra.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _read_chunked(self) -> bytes:
        data = b""
        while True:
            size = int(self.rfile.readline().split(b";")[0], 16)
            if size == 0:
                self.rfile.readline()
                return data
            data += self.rfile.read(size)
            self.rfile.readline()

    do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the tests assert, they do not read logs
        pass


def _json(status: int, payload: dict) -> tuple[int, dict, bytes]:
    return status, {"Content-Type": "application/json"}, json.dumps(payload).encode()


def _error(status: int, message: str, code: str | None = None) -> tuple[int, dict, bytes]:
    headers = {"Content-Type": "application/json", "X-Error-Message": message}
    if code:
        headers["X-Error-Code"] = code
    return status, headers, json.dumps({"error": message}).encode()


def _git_blob_oid(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def _now_iso() -> str:
    """The Hub's date format, with milliseconds (parse_datetime needs the fraction and the Z)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _tree_entries(files: dict[str, bytes], folder: str, recursive: bool) -> list[dict[str, Any]]:
    """The Hub's tree listing of ``folder`` ("" for the root): its files and folders, or its whole subtree when
    ``recursive`` (folders included, as the Hub does; snapshot_download keeps only the files)."""
    base = folder + "/" if folder else ""
    entries: dict[str, dict[str, Any]] = {}
    for path, content in sorted(files.items()):
        if not path.startswith(base):
            continue
        parts = path[len(base) :].split("/")
        for depth in range(1, len(parts) if recursive else min(len(parts), 2)):
            sub = base + "/".join(parts[:depth])
            if sub not in entries:
                entries[sub] = {"type": "directory", "path": sub, "size": 0, "oid": _tree_oid(files, sub)}
        if recursive or len(parts) == 1:
            entries[path] = {"type": "file", "path": path, "size": len(content), "oid": _git_blob_oid(content)}
    return [entries[p] for p in sorted(entries)]


def _tree_oid(files: dict[str, bytes], folder: str) -> str:
    """A stable id for a folder's content (not git's tree hash: the client only passes it through)."""
    inside = [(p, _git_blob_oid(c)) for p, c in sorted(files.items()) if p.startswith(folder + "/")]
    return hashlib.sha1(json.dumps(inside).encode()).hexdigest()
