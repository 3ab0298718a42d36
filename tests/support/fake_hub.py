"""A Hugging Face Hub on localhost that answers huggingface_hub's file requests as the Hub does.

Only the resolve endpoint, ``/{org}/{name}/resolve/{revision}/{filename}``, for HEAD and GET:
the response headers huggingface_hub reads (``X-Repo-Commit``, ``ETag``, ``Content-Length``;
``huggingface_hub/file_download.py``, ``get_hf_file_metadata``) and the error codes its
``hf_raise_for_status`` maps (``X-Error-Code: GatedRepo`` with 401 when no token is sent and
403 when the token has no access, ``RepoNotFound`` with 401 for a repository that does not
exist or that the token cannot see, ``utils/_http.py``). The client is the real one; the
server records each request so a test can say which were made.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["FakeHub", "Repo", "fake_hub"]


@dataclass
class Repo:
    files: dict[str, bytes]
    gated: bool = False
    tokens: frozenset[str] = frozenset()  # the tokens with access to a gated repository
    commit: str = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class FakeHub:
    url: str
    repos: dict[str, Repo]
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)  # (method, path, token)


@contextmanager
def fake_hub(repos: dict[str, Repo]) -> Iterator[FakeHub]:
    hub = FakeHub("", repos)

    class Handler(BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:  # noqa: N802 (the http.server name)
            self._answer(body=False)

        def do_GET(self) -> None:  # noqa: N802
            self._answer(body=True)

        def _answer(self, body: bool) -> None:
            auth = self.headers.get("Authorization", "")
            token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None
            hub.requests.append((self.command, self.path, token))
            parts = self.path.split("?")[0].strip("/").split("/")
            repo = hub.repos.get("/".join(parts[:2])) if len(parts) >= 5 and parts[2] == "resolve" else None
            if repo is None:
                return self._error(401, "RepoNotFound", "Repository not found")
            if repo.gated and token not in repo.tokens:
                return self._error(401 if token is None else 403, "GatedRepo",
                                   "Access to this model is restricted.")
            content = repo.files.get("/".join(parts[4:]))
            if content is None:
                return self._error(404, "EntryNotFound", "Entry not found")
            self.send_response(200)
            self.send_header("X-Repo-Commit", repo.commit)
            self.send_header("ETag", f'"{hashlib.sha1(content).hexdigest()}"')
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            if body:
                self.wfile.write(content)

        def _error(self, status: int, code: str, message: str) -> None:
            payload = json.dumps({"error": message}).encode()
            self.send_response(status)
            self.send_header("X-Error-Code", code)
            self.send_header("X-Error-Message", message)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
