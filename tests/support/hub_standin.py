"""A small Hugging Face Hub stand-in for tests: the REAL ``huggingface_hub`` client talks to it via HF_ENDPOINT.

It implements just the endpoints ``HfApi`` (huggingface_hub 1.x/2.x) calls to push a folder and read it back,
as read from the installed client (hf_api.py, _commit_api.py, file_download.py, utils/_http.py):

    GET  /api/whoami-v2                                     who the token belongs to
    POST /api/repos/create                                  {"name", "organization", "type", "visibility"}
    GET  /api/{models|datasets}/{ns}/{name}[/revision/{r}]  repo info (sha, private, siblings)
    GET  /api/{models|datasets}/{ns}/{name}/tree/{r}        file list (snapshot_download), one page
    POST /api/validate-yaml                                 README.md metadata check before a commit
    POST /api/{models|datasets}/{ns}/{name}/preupload/{r}   upload mode per file: always "regular" here
    POST /api/{models|datasets}/{ns}/{name}/commit/{r}      NDJSON: header, file (base64), deletedFile/Folder
    GET|HEAD /[datasets/]{ns}/{name}/resolve/{r}/{path}     file content (hf_hub_download)

Not implemented: LFS / Xet uploads (preupload answers "regular" for every file, which the real Hub also does
for small files, so the client sends content inline in the commit), branches, pull requests.

Errors look like the Hub's: JSON ``{"error": ...}`` plus ``X-Error-Code: RepoNotFound`` for missing repos,
401 "Invalid credentials in Authorization header" for unknown tokens, 403 for read-only tokens and foreign
namespaces, 409 when a repo exists. ``fail(kind, status, times)`` injects an error into the next calls of
one kind (``whoami``, ``create``, ``preupload``, ``commit``, ...). Committed files land on disk under
``root/{models|datasets}/{ns}/{name}/`` so tests can assert them; ``commits`` keeps every commit.
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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml

_REPO = r"(?P<ns>[\w.-]+)/(?P<name>[\w.-]+)"
_ROUTES = [
    ("GET", re.compile(r"^/api/whoami-v2$"), "whoami"),
    ("POST", re.compile(r"^/api/repos/create$"), "create"),
    ("POST", re.compile(r"^/api/validate-yaml$"), "validate"),
    ("GET", re.compile(rf"^/api/(?P<type>models|datasets)/{_REPO}(?:/revision/(?P<rev>[^/]+))?$"), "info"),
    ("GET", re.compile(rf"^/api/(?P<type>models|datasets)/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?$"), "tree"),
    ("POST", re.compile(rf"^/api/(?P<type>models|datasets)/{_REPO}/preupload/(?P<rev>[^/]+)$"), "preupload"),
    ("POST", re.compile(rf"^/api/(?P<type>models|datasets)/{_REPO}/commit/(?P<rev>[^/]+)$"), "commit"),
    ("GET", re.compile(rf"^/(?:(?P<type>datasets)/)?{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$"), "resolve"),
    ("HEAD", re.compile(rf"^/(?:(?P<type>datasets)/)?{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$"), "resolve"),
]


@dataclass
class Repo:
    repo_id: str
    repo_type: str          # "models" | "datasets"
    private: bool
    files: dict[str, bytes] = field(default_factory=dict)
    commits: list[dict[str, Any]] = field(default_factory=list)

    @property
    def sha(self) -> str:
        return self.commits[-1]["oid"] if self.commits else "0" * 40


class HubStandin:
    """``HubStandin(root, tokens={"hf_write": ("ada", "write")}).start()``; ``url`` goes into HF_ENDPOINT."""

    def __init__(self, root: Path, tokens: dict[str, tuple[str, str]], orgs: dict[str, list[str]] | None = None):
        self.root = Path(root)
        self.tokens = dict(tokens)
        self.orgs = orgs or {}
        self.repos: dict[tuple[str, str], Repo] = {}
        self.calls: list[tuple[str, str]] = []         # (kind, path): what the client asked for
        self._failures: dict[str, list[int]] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # -- control -------------------------------------------------------------------------------------
    def start(self) -> "HubStandin":
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
    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict, bytes]:
        for verb, pattern, kind in _ROUTES:
            match = pattern.match(path)
            if verb == method and match:
                with self._lock:
                    self.calls.append((kind, path))
                    injected = self._failures.get(kind)
                    if injected:
                        status = injected.pop(0)
                        return _error(status, f"injected {status} for {kind}",
                                      "RepoNotFound" if status == 404 else None)
                    user = self._user(headers)
                    return getattr(self, "_" + kind)(match.groupdict(), user, headers, body, method)
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

    def _whoami(self, groups, user, headers, body, method):
        if not user:
            return _error(401, "Invalid credentials in Authorization header")
        name, role = user
        return _json(200, {"type": "user", "name": name, "fullname": name.title(),
                           "orgs": [{"name": o} for o in self.orgs.get(name, [])],
                           "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": role}}})

    def _create(self, groups, user, headers, body, method):
        if not user:
            return _error(401, "Invalid credentials in Authorization header")
        payload = json.loads(body or b"{}")
        name, org = payload.get("name"), payload.get("organization")
        repo_type = (payload.get("type") or "model") + "s"
        namespace = org or user[0]
        if user[1] != "write" or namespace not in self._namespaces(user[0]):
            return _error(403, f'You don\'t have the rights to create a {repo_type[:-1]} under the namespace "{namespace}"')
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

    def _info(self, groups, user, headers, body, method):
        repo = self._readable(groups, user)
        if not isinstance(repo, Repo):
            return repo
        last = repo.commits[-1] if repo.commits else None
        return _json(200, {"id": repo.repo_id, "modelId": repo.repo_id, "sha": repo.sha, "private": repo.private,
                           "lastModified": last["date"] if last else None, "tags": [],
                           "siblings": [{"rfilename": p} for p in sorted(repo.files)]})

    def _tree(self, groups, user, headers, body, method):
        repo = self._readable(groups, user)
        if not isinstance(repo, Repo):
            return repo
        prefix = (groups.get("path") or "").strip("/")
        entries = [{"type": "file", "path": p, "size": len(c), "oid": _git_blob_oid(c)}
                   for p, c in sorted(repo.files.items()) if not prefix or p.startswith(prefix + "/")]
        return 200, {"Content-Type": "application/json"}, json.dumps(entries).encode()

    def _validate(self, groups, user, headers, body, method):
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

    def _preupload(self, groups, user, headers, body, method):
        repo = self._writable(groups, user)
        if not isinstance(repo, Repo):
            return repo
        files = json.loads(body)["files"]
        return _json(200, {"files": [
            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
             "oid": _git_blob_oid(repo.files[f["path"]]) if f["path"] in repo.files else None}
            for f in files]})

    def _commit(self, groups, user, headers, body, method):
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
        parent = repo.sha
        oid = hashlib.sha1((parent + json.dumps(sorted((p, _git_blob_oid(c) if c is not None else None)
                                                       for p, c in changes.items()))
                            + header.get("summary", "") + str(time.time_ns())).encode()).hexdigest()
        base = self.root / repo.repo_type / repo.repo_id
        for path, content in changes.items():
            target = base / path
            if content is None:
                repo.files = {p: c for p, c in repo.files.items() if p != path and not p.startswith(path.rstrip("/") + "/")}
                if target.is_file():
                    target.unlink()
                continue
            repo.files[path] = content
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        prefix = "" if repo.repo_type == "models" else "datasets/"
        commit_url = f"{self.url}/{prefix}{repo.repo_id}/commit/{oid}"
        repo.commits.append({"oid": oid, "parent": parent, "summary": header.get("summary", ""),
                             "description": header.get("description", ""), "files": sorted(changes),
                             "date": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()), "url": commit_url})
        return _json(200, {"success": True, "commitOid": oid, "commitUrl": commit_url, "hookOutput": ""})

    def _resolve(self, groups, user, headers, body, method):
        repo = self._readable(groups, user)
        if not isinstance(repo, Repo):
            return repo
        path = unquote(groups["path"])
        if path not in repo.files:
            return _error(404, f"{path} does not exist", "EntryNotFound")
        content = repo.files[path]
        etag = f'"{_git_blob_oid(content)}"'
        return 200, {"X-Repo-Commit": repo.sha, "ETag": etag, "Content-Type": "application/octet-stream"}, content


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
        status, extra, payload = self.hub.handle(self.command, urlsplit(self.path).path, headers, body)
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
