"""A small Hub emulator: the HTTP API that huggingface_hub speaks to push and load model repos, kept in memory.

It serves real HTTP on 127.0.0.1, so the client code under test is the real huggingface_hub (0.x and 1.x/2.x): repo
creation, README metadata validation, preupload, the git-LFS batch API with upload and verify links, NDJSON commits,
branches, repo info, tree listings and /resolve downloads with the headers the client checks. Writes need the token
the server was started with. Requests are recorded, so tests can count what was uploaded.
"""

import base64
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse

import yaml

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".model", ".spm")
LFS_MIN_SIZE = 10 * 1024 * 1024


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass
class Entry:
    """One file of a commit: its bytes (regular files) or its LFS object id."""

    size: int
    blob_oid: str  # git sha1 of the content, or of the LFS pointer
    content: bytes | None = None
    lfs_sha256: str | None = None


@dataclass
class Repo:
    private: bool
    branches: dict[str, str] = field(default_factory=dict)  # name -> commit id
    commits: dict[str, dict[str, Entry]] = field(default_factory=dict)  # commit id -> files
    messages: dict[str, str] = field(default_factory=dict)


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


class LocalHub(ThreadingHTTPServer):
    """The server's state: repos, LFS objects and a log of (method, path) requests."""

    daemon_threads = True

    def __init__(self, token: str, port: int = 0):
        super().__init__(("127.0.0.1", port), HubHandler)
        self.token = token
        self.repos: dict[str, Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def lfs_uploads(self) -> list[str]:
        """The LFS object ids whose bytes were uploaded, in order."""
        return [path.rsplit("/", 1)[-1] for method, path in self.requests if method == "PUT"]

    def serve_in_background(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, daemon=True)
        thread.start()
        return thread


class HubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: LocalHub

    def log_message(self, format, *args):  # quiet: tests read server.requests instead
        pass

    # --- plumbing -------------------------------------------------------------------------------------------------

    def do_GET(self):
        self.dispatch("GET")

    def do_HEAD(self):
        self.dispatch("HEAD")

    def do_POST(self):
        self.dispatch("POST")

    def do_PUT(self):
        self.dispatch("PUT")

    def read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def reply(self, status: int, body: bytes | dict | list = b"", headers: dict | None = None, method: str = "GET"):
        if not isinstance(body, bytes):
            body = json.dumps(body).encode()
            headers = {"Content-Type": "application/json", **(headers or {})}
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, str(value))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(body)

    def dispatch(self, method: str):
        url = urlparse(self.path)
        body = self.read_body() if method in ("POST", "PUT") else b""
        with self.server.lock:
            self.server.requests.append((method, url.path))
            try:
                status, payload, headers = self.route(method, url.path, parse_qs(url.query), body)
            except HubError as error:
                headers = {"X-Error-Message": error.message}
                if error.code:
                    headers["X-Error-Code"] = error.code
                status, payload = error.status, {"error": error.message}
        self.reply(status, payload, headers, method)

    def authorized(self) -> bool:
        return self.headers.get("Authorization") == f"Bearer {self.server.token}"

    def require_write(self):
        if not self.authorized():
            raise HubError(401, "Invalid credentials in Authorization header")

    def repo(self, repo_id: str) -> Repo:
        repo = self.server.repos.get(repo_id)
        if repo is None or (repo.private and not self.authorized()):
            raise HubError(404, f"Repository not found: {repo_id}", "RepoNotFound")
        return repo

    def files(self, repo_id: str, revision: str) -> tuple[str, dict[str, Entry]]:
        repo = self.repo(repo_id)
        revision = unquote(revision)
        commit = repo.branches.get(revision) or (revision if revision in repo.commits else None)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit, repo.commits[commit]

    # --- routes ---------------------------------------------------------------------------------------------------

    def route(self, method: str, path: str, query: dict, body: bytes):
        if path == "/api/repos/create" and method == "POST":
            return self.create_repo(json.loads(body))
        if path == "/api/validate-yaml" and method == "POST":
            return self.validate_yaml(json.loads(body))
        if path.startswith("/lfs-upload/") and method == "PUT":
            return self.lfs_upload(path.rsplit("/", 1)[-1], body)
        if path.startswith("/lfs-verify/") and method == "POST":
            oid = path.rsplit("/", 1)[-1]
            if oid not in self.server.lfs_objects:
                raise HubError(404, f"LFS object {oid} was not uploaded")
            return 200, {"success": True}, None
        actions = "preupload|commit|revision|tree|branch"
        match = re.fullmatch(rf"/api/models/([^/]+/[^/]+)(?:/({actions})/([^/]+)(/.*)?)?", path)
        if match:
            repo_id, action, revision, rest = match.groups()
            return self.api(method, repo_id, action, revision, (rest or "").lstrip("/"), query, body)
        match = re.fullmatch(r"/([^/]+/[^/]+)\.git/info/lfs/objects/batch", path)
        if match and method == "POST":
            return self.lfs_batch(match.group(1), json.loads(body))
        match = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if match and method in ("GET", "HEAD"):
            return self.resolve(*match.groups())
        raise HubError(404, f"no route for {method} {path}")

    def api(self, method, repo_id, action, revision, rest, query, body):
        if action is None and method == "GET":
            return self.info(repo_id, "main")
        if action == "revision" and method == "GET":
            return self.info(repo_id, revision)
        if action == "tree" and method == "GET":
            return self.tree(repo_id, revision, rest, query)
        if action == "preupload" and method == "POST":
            return self.preupload(repo_id, revision, json.loads(body))
        if action == "commit" and method == "POST":
            return self.commit(repo_id, revision, body)
        if action == "branch" and method == "POST":
            return self.create_branch(repo_id, unquote(revision), json.loads(body or b"{}"))
        raise HubError(404, f"no route for {method} /api/models/{repo_id}/{action}")

    def create_repo(self, payload: dict):
        self.require_write()
        repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
        url = f"{self.server.endpoint}/{repo_id}"
        if repo_id in self.server.repos:  # the client reads the url from this answer too
            return 409, {"error": "You already created this model repo", "url": url}, None
        private = payload.get("private") or payload.get("visibility") == "private"
        repo = self.server.repos[repo_id] = Repo(private=bool(private))
        attributes = "\n".join(f"*{suffix} filter=lfs diff=lfs merge=lfs -text" for suffix in LFS_SUFFIXES).encode()
        first = new_commit_id(repo_id, "initial commit")
        repo.commits[first] = {".gitattributes": Entry(len(attributes), git_blob_sha1(attributes), attributes)}
        repo.branches["main"] = first
        repo.messages[first] = "initial commit"
        return 200, {"url": url, "name": repo_id, "id": repo_id}, None

    def validate_yaml(self, payload: dict):
        content = payload.get("content", "")
        match = re.match(r"^---\n(.*?)\n---", content, re.DOTALL)
        if match is None:
            return 200, {"errors": [], "warnings": [{"message": "empty or missing yaml metadata in repo card"}]}, None
        try:
            metadata = yaml.safe_load(match.group(1))
        except yaml.YAMLError as error:
            raise HubError(400, f"Invalid YAML in README.md metadata: {error}")
        if not isinstance(metadata, dict):
            raise HubError(400, "README.md metadata must be a YAML mapping")
        return 200, {"errors": [], "warnings": []}, None

    def preupload(self, repo_id: str, revision: str, payload: dict):
        self.require_write()
        _, files = self.files(repo_id, revision)
        answers = []
        for item in payload["files"]:
            sample = base64.b64decode(item["sample"])
            lfs = item["path"].endswith(LFS_SUFFIXES) or item["size"] >= LFS_MIN_SIZE or b"\0" in sample
            existing = files.get(item["path"])
            oid = None if existing is None else existing.lfs_sha256 or existing.blob_oid
            answers.append({"path": item["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                            "oid": oid})
        return 200, {"files": answers, "commitOid": self.repo(repo_id).branches.get(unquote(revision))}, None

    def lfs_batch(self, repo_id: str, payload: dict):
        self.require_write()
        self.repo(repo_id)
        objects = []
        for item in payload["objects"]:
            answer = {"oid": item["oid"], "size": item["size"], "authenticated": True}
            if item["oid"] not in self.server.lfs_objects:  # already stored objects get no actions: nothing to send
                answer["actions"] = {
                    "upload": {"href": f"{self.server.endpoint}/lfs-upload/{item['oid']}", "expires_in": 3600},
                    "verify": {"href": f"{self.server.endpoint}/lfs-verify/{item['oid']}", "expires_in": 3600},
                }
            objects.append(answer)
        return 200, {"transfer": "basic", "objects": objects}, {"Content-Type": "application/vnd.git-lfs+json"}

    def lfs_upload(self, oid: str, body: bytes):
        if hashlib.sha256(body).hexdigest() != oid:
            raise HubError(400, f"uploaded bytes do not hash to {oid}")
        self.server.lfs_objects[oid] = body
        return 200, b"", None

    def commit(self, repo_id: str, revision: str, body: bytes):
        self.require_write()
        parent, files = self.files(repo_id, revision)
        files = dict(files)
        header = {}
        for line in body.decode().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                header = value
            elif key == "file":
                content = base64.b64decode(value["content"])
                files[value["path"]] = Entry(len(content), git_blob_sha1(content), content)
            elif key == "lfsFile":
                if value["oid"] not in self.server.lfs_objects:
                    raise HubError(400, f"LFS object {value['oid']} for {value['path']} was never uploaded")
                pointer = lfs_pointer(value["oid"], value["size"])
                files[value["path"]] = Entry(value["size"], git_blob_sha1(pointer), lfs_sha256=value["oid"])
            elif key in ("deletedFile", "deletedFolder"):
                prefix = value["path"].rstrip("/")
                for name in [n for n in files if n == prefix or n.startswith(prefix + "/")]:
                    del files[name]
            else:
                raise HubError(400, f"unknown commit operation {key}")
        if header.get("parentCommit") not in (None, parent):
            raise HubError(412, "A commit has happened since. Please refresh and try again.")
        repo = self.repo(repo_id)
        commit_id = new_commit_id(repo_id, header.get("summary", ""))
        repo.commits[commit_id] = files
        repo.messages[commit_id] = header.get("summary", "")
        repo.branches[unquote(revision)] = commit_id
        url = f"{self.server.endpoint}/{repo_id}/commit/{commit_id}"
        answer = {"success": True, "commitOid": commit_id, "commitUrl": url, "commitMessage": header.get("summary")}
        return 200, answer, None

    def create_branch(self, repo_id: str, branch: str, payload: dict):
        self.require_write()
        repo = self.repo(repo_id)
        if branch in repo.branches:
            raise HubError(409, f"Branch {branch} already exists")
        start, _ = self.files(repo_id, payload.get("startingPoint", "main"))
        repo.branches[branch] = start
        return 200, {}, None

    def info(self, repo_id: str, revision: str):
        commit, files = self.files(repo_id, revision)
        siblings = [{"rfilename": name} for name in sorted(files)]
        return 200, {"id": repo_id, "modelId": repo_id, "sha": commit, "private": self.repo(repo_id).private,
                     "siblings": siblings, "tags": [], "downloads": 0, "likes": 0}, None

    def tree(self, repo_id: str, revision: str, folder: str, query: dict):
        _, files = self.files(repo_id, revision)
        folder = unquote(folder).strip("/")
        recursive = query.get("recursive", ["false"])[0].lower() == "true"
        prefix = f"{folder}/" if folder else ""
        if folder and not any(name.startswith(prefix) for name in files):
            raise HubError(404, f"{folder} does not exist on {revision}", "EntryNotFound")
        entries, folders = [], set()
        for name, entry in sorted(files.items()):
            if not name.startswith(prefix):
                continue
            rest = name[len(prefix):]
            if "/" in rest and not recursive:
                folders.add(prefix + rest.split("/", 1)[0])
                continue
            item = {"type": "file", "oid": entry.blob_oid, "size": entry.size, "path": name}
            if entry.lfs_sha256:
                item["lfs"] = {"oid": entry.lfs_sha256, "size": entry.size,
                               "pointerSize": len(lfs_pointer(entry.lfs_sha256, entry.size))}
            entries.append(item)
        entries += [{"type": "directory", "oid": "0" * 40, "size": 0, "path": name} for name in sorted(folders)]
        return 200, entries, None

    def resolve(self, repo_id: str, revision: str, filename: str):
        commit, files = self.files(repo_id, revision)
        entry = files.get(unquote(filename))
        if entry is None:
            raise HubError(404, f"Entry not found: {filename}", "EntryNotFound")
        headers = {"X-Repo-Commit": commit, "ETag": f'"{entry.blob_oid}"', "Accept-Ranges": "bytes"}
        if entry.lfs_sha256:
            headers.update({"X-Linked-Etag": f'"{entry.lfs_sha256}"', "X-Linked-Size": entry.size})
            content = self.server.lfs_objects[entry.lfs_sha256]
        else:
            content = entry.content
        return 200, content, headers


def new_commit_id(repo_id: str, message: str) -> str:
    return hashlib.sha1(f"{repo_id}\0{message}\0{time.time_ns()}".encode()).hexdigest()
